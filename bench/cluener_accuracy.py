"""CLUENER2020 entity F1 of every approach on lines held out from the end of train.json.

Run by hand:  .venv/bin/python -m bench.cluener_accuracy [--train 1500] [--eval 400] [--small 100]
Rows: LoRA fine-tuned on the first --train lines (constrained and free decoding, on the last
--eval lines); the char CRF on the same lines and on every non-eval line; zero-shot (constrained
and free) and similar few-shot (k=4, free) on the first --small of those eval lines, since
the base model's rambling answers make them slow. Generation speed (examples/s) comes from each
mode's stage time. Writes bench/results/cluener_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console

from bench import save_result
from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.pipeline import run_spec

SPEC = PROJECT_ROOT / "specs" / "cluener.yaml"
KEEP = ("entity_f1", "entity_precision", "entity_recall", "macro_f1", "invalid_rate", "hallucination_rate", "n")


def _run(name: str, overrides: list[str], out: Path, limit: int | None, results: dict) -> dict:
    spec = load_spec(SPEC, [*overrides, "evaluation.gates=[]"])
    started = time.perf_counter()
    outcome = run_spec(spec, out_dir=out, console=Console(stderr=True), limit=limit)
    manifest = json.loads(outcome.run.file("manifest.json").read_text(encoding="utf-8"))
    rows = {row: {k: m[k] for k in KEEP} for row, m in outcome.metrics.items()}
    n_eval = manifest["data"]["eval"]
    speed = {
        mode: round(n_eval / seconds, 3)
        for mode, seconds in manifest["stage_seconds"].items()
        if mode in spec.evaluation["modes"] and seconds
    }
    results[name] = {
        "overrides": overrides,
        "limit": limit,
        "seconds": round(time.perf_counter() - started),
        "stage_seconds": manifest["stage_seconds"],
        "examples_per_s": speed,
        "fine_tuned_model": (manifest.get("fine_tune") or {}).get("fine_tuned_model"),
        "rows": rows,
    }
    print(json.dumps({name: results[name]}, ensure_ascii=False), flush=True)
    save_result("cluener_accuracy", results)
    return results[name]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--eval", type=int, default=400)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--model", help="a model fine-tuned earlier (specrun models list): skip the LoRA run")
    parser.add_argument("--free-limit", type=int, help="evaluate free generation on the first N eval lines only")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="specrun-bench-"))
    split = [f"splits.train.n={args.train}", f"splits.eval.n={args.eval}"]
    saved = PROJECT_ROOT / "bench" / "results" / "cluener_accuracy.json"
    results: dict = json.loads(saved.read_text(encoding="utf-8")) if args.model and saved.is_file() else {}
    model = args.model
    if model is None:
        tuned = _run(
            f"LoRA on {args.train} lines, {args.epochs} epoch(s), constrained",
            [*split, f"fine_tune.hyperparameters.n_epochs={args.epochs}", "evaluation.modes=[fine_tuned]"],
            out,
            None,
            results,
        )
        model = tuned["fine_tuned_model"]
    tuned_as_base = [*split, f"provider.model={model}", "fine_tune.enabled=false", "evaluation.modes=[zero_shot]",
                     "evaluation.baseline=false"]  # fmt: skip
    for constrained in ([True] if args.model else []) + [False]:
        _run(
            f"the fine-tuned model, {'constrained' if constrained else 'free generation'}",
            [*tuned_as_base, f"evaluation.constrained={str(constrained).lower()}"],
            out, args.free_limit, results,
        )  # fmt: skip
    base = [*split, "fine_tune.enabled=false", "evaluation.baseline=false"]
    _run("zero-shot, constrained", [*base, "evaluation.modes=[zero_shot]"], out, args.small, results)
    _run("zero-shot, free", [*base, "evaluation.modes=[zero_shot]", "evaluation.constrained=false"], out, args.small,
         results)  # fmt: skip
    _run("similar few-shot k=4 (LLM embeddings), free decoding", [*base, "evaluation.modes=[few_shot]",
         "evaluation.constrained=false"], out, args.small, results)  # fmt: skip


if __name__ == "__main__":
    main()
