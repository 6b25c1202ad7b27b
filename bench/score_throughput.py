"""Local label-scoring throughput (examples/s) on 200 TNEWS lines, and zero-shot accuracy.

Run by hand:  .venv/bin/python -m bench.score_throughput
Writes bench/results/score_throughput.json and prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch

from bench import save_result
from runner import PROJECT_ROOT
from runner.data import spec_examples, take
from runner.prompts import PromptBuilder
from runner.providers.local import LocalProvider
from runner.spec import load_spec
from runner.tasks import make_task

BATCH_SIZES = (1, 4, 8, 16)


def main() -> None:
    spec = load_spec(PROJECT_ROOT / "specs" / "tnews.yaml")
    examples, _ = spec_examples(spec)
    lines = take(examples, {"take": "random", "n": 200, "seed": 7})
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    conversations = [builder.messages(example) for example in lines]
    answers = list(spec.doc["labels"].values())
    gold = np.array([list(spec.doc["labels"]).index(example.gold) for example in lines])

    started = time.perf_counter()
    provider = LocalProvider("gemma-3-270m")
    load_seconds = time.perf_counter() - started
    provider.score(conversations[:8], answers)  # warm-up
    rows = []
    for batch_size in BATCH_SIZES:
        provider.batch_size = batch_size
        started = time.perf_counter()
        scores = provider.score(conversations, answers)
        seconds = time.perf_counter() - started
        rows.append(
            {
                "batch_size": batch_size,
                "seconds": round(seconds, 2),
                "examples_per_s": round(len(conversations) / seconds, 1),
                "accuracy_raw": float((scores.argmax(1) == gold).mean()),
                "accuracy_calibrated": float(((scores - scores.mean(0)).argmax(1) == gold).mean()),
            }
        )
        print(rows[-1], flush=True)
    result = {
        "what": "gemma-3-270m bf16, score 14 TNEWS labels, 200 lines (random, seed 7)",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "load_seconds": round(load_seconds, 1),
        "rows": rows,
    }
    save_result("score_throughput", result)
    print("\n| batch size | s / 200 lines | examples/s | accuracy raw | accuracy calibrated |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['batch_size']} | {row['seconds']} | {row['examples_per_s']} | "
            f"{100 * row['accuracy_raw']:.1f}% | {100 * row['accuracy_calibrated']:.1f}% |"
        )


if __name__ == "__main__":
    main()
