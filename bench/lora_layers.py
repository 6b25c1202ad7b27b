"""LoRA on the last N decoder layers vs all of them: step time and validation accuracy on TNEWS.

Run by hand:  .venv/bin/python -m bench.lora_layers [--train 1000] [--epochs 1] [--layers all 9 6]
Trains one local LoRA job per variant (specs/tnews_full.yaml's settings: rank 8, lr 2e-4,
batch 8, seed 42) on the last --train lines of its train split, one after another in one process,
and reads from each job's events the median step time and, from its last checkpoint, the raw
(uncalibrated) label-scoring accuracy and answer loss on the spec's 500 validation lines. The eval
split is never touched: this is how the layer count is chosen. Writes bench/results/lora_layers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from bench import save_result
from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.data.dataset import make_splits
from runner.data.prompts import PromptBuilder
from runner.tasks import make_task


def write_chat(path: Path, conversations: list) -> Path:
    path.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in conversations), "utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--layers", nargs="+", default=["all", "9", "6"])
    args = parser.parse_args()
    spec = load_spec(PROJECT_ROOT / "specs" / "tnews_full.yaml")
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    splits = make_splits(spec)
    folder = Path(tempfile.mkdtemp(prefix="lora-layers-"))
    os.environ["SPECRUN_REGISTRY"] = str(folder / "registry")
    from runner.providers.local.provider import LocalProvider  # reads SPECRUN_REGISTRY

    train = write_chat(folder / "train.jsonl", [builder.training_messages(e) for e in splits.train[-args.train :]])
    valid = write_chat(folder / "valid.jsonl", [builder.training_messages(e) for e in splits.validation])
    rows = {}
    for layers in args.layers:
        provider = LocalProvider("gemma-3-270m")
        settings = {
            "n_epochs": args.epochs,
            "batch_size": 8,
            "seed": 42,
            "validation_file": provider.upload(valid),
            "local": {
                "lora_rank": 8,
                "lora_layers": layers if layers == "all" else int(layers),
                "checkpoint_every": 10**6,
            },
        }
        job = provider.create_job(provider.upload(train), settings)
        started = time.perf_counter()
        provider.drive(job.id, Console(stderr=True))
        seconds = [e.data["step_seconds"] for e in provider.events(job.id) if "step_seconds" in (e.data or {})]
        metrics = provider.checkpoints(job.id)[-1].metrics
        rows[layers] = {
            "wall_s": round(time.perf_counter() - started, 1),
            "step_seconds_median": round(statistics.median(seconds), 3),
            "valid_accuracy_raw": metrics["valid_accuracy"],
            "valid_loss": metrics["valid_loss"],
            "train_loss_last_epoch": metrics["train_loss"],
        }
        print(layers, rows[layers], flush=True)
    save_result(
        "lora_layers",
        {
            "machine": f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
            "train_lines": args.train,
            "validation_lines": len(splits.validation),
            "epochs": args.epochs,
            "variants": rows,
        },
    )


if __name__ == "__main__":
    main()
