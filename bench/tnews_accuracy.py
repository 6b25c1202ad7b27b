"""TNEWS accuracy of every approach on the same 1,000 eval lines (specs/tnews_full.yaml).

Run by hand:  .venv/bin/python -m bench.tnews_accuracy      (about 15 minutes on the 2-core CPU)
Rows: zero-shot; random and similar few-shot (k=4) from the seed's 100 training lines and from
2,000; LoRA fine-tuned on the seed's 100 lines (3 epochs) and on 2,000 lines (1 epoch: the CPU
subset standing in for all 6,968, which would take ~15 min an epoch here); the char TF-IDF + LR
baseline trained on the same lines as each. Writes bench/results/tnews_accuracy.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from rich.console import Console

from bench import save_result
from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.pipeline import run_spec

SPEC = PROJECT_ROOT / "specs" / "tnews_full.yaml"
CONFIGS = {
    "seed 100 lines": [
        "splits.train.n=100",
        "fine_tune.hyperparameters.n_epochs=3",
        "evaluation.modes=[zero_shot, few_shot, fine_tuned]",
        "few_shot.strategy=random",
    ],
    "seed 100 lines, similar shots": ["splits.train.n=100", "evaluation.modes=[few_shot]", "fine_tune.enabled=false"],
    "2,000 lines": [
        "splits.train.n=2000",
        "fine_tune.hyperparameters.n_epochs=1",
        "evaluation.modes=[few_shot, fine_tuned]",
    ],
}


def main() -> None:
    results = {}
    out = Path(tempfile.mkdtemp(prefix="specrun-bench-"))
    for name, overrides in CONFIGS.items():
        spec = load_spec(SPEC, [*overrides, "evaluation.gates=[]"])
        started = time.perf_counter()
        outcome = run_spec(spec, out_dir=out, console=Console(stderr=True))
        metrics = {row: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]} for row, m in outcome.metrics.items()}
        results[name] = {"overrides": overrides, "seconds": round(time.perf_counter() - started), "rows": metrics}
        manifest = json.loads(outcome.run.file("manifest.json").read_text(encoding="utf-8"))
        results[name]["stage_seconds"] = manifest["stage_seconds"]
        print(json.dumps({name: results[name]}, ensure_ascii=False), flush=True)
    save_result("tnews_accuracy", results)


if __name__ == "__main__":
    main()
