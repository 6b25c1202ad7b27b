"""Few-shot label scoring against zero-shot label scoring, per row, on the same lines.

Run by hand:  .venv/bin/python -m bench.fewshot_speed [--lines 48] [--rounds 3] [--k 4]
TNEWS eval-like lines (random, seed 7), each scored zero-shot and with k similar examples
(char TF-IDF over a 2,000-line pool, the spec key few_shot.embedding: tfidf), the two
alternating in one process so that machine load hits both alike. Retrieval is timed apart.
Writes bench/results/fewshot_speed.json, with the load average before and after as a note.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from bench import save_result
from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.data.dataset import spec_examples, take
from runner.data.fewshot import choose_shots
from runner.data.prompts import PromptBuilder
from runner.providers.local.provider import LocalProvider
from runner.tasks import make_task

BATCH_SIZE = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    load_before = os.getloadavg()
    spec = load_spec(PROJECT_ROOT / "specs" / "tnews.yaml")
    examples, _ = spec_examples(spec)
    lines = take(examples, {"take": "random", "n": args.lines, "seed": 7})
    chosen = {e.id for e in lines}
    pool = [e for e in examples if e.id not in chosen][:2000]
    task = make_task(spec.doc)
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, task)
    config = {"k": args.k, "strategy": "similar", "embedding": "tfidf", "balance": False, "seed": 0}
    started = time.perf_counter()
    shots = choose_shots(config, pool, lines, None, task.stratum)
    retrieval_seconds = time.perf_counter() - started
    zero = [builder.messages(example) for example in lines]
    few = [builder.messages(example, shots[example.id]) for example in lines]
    answers = list(spec.doc["labels"].values())
    provider = LocalProvider("gemma-3-270m", batch_size=BATCH_SIZE)
    provider.score(zero[:8], answers)  # warm-up
    zero_seconds, few_seconds = [], []
    for _ in range(args.rounds):
        for conversations, seconds in ((zero, zero_seconds), (few, few_seconds)):
            started = time.perf_counter()
            provider.score(conversations, answers)
            seconds.append((time.perf_counter() - started) / len(lines))
    tokens = [len(provider.tokenizer(provider.prompt_text(c))["input_ids"]) for c in few]
    ratios = [f / z for f, z in zip(few_seconds, zero_seconds, strict=True)]
    result = {
        "what": f"gemma-3-270m, {len(lines)} TNEWS lines (random, seed 7), 14 labels, batch {BATCH_SIZE}, "
        f"few-shot k={args.k} similar by char TF-IDF over {len(pool)} lines",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "load_average_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "dtype": str(provider.dtype),
        "few_shot_prompt_tokens_mean": round(statistics.mean(tokens), 1),
        "retrieval_seconds": round(retrieval_seconds, 2),
        "zero_shot_seconds_per_row": [round(s, 3) for s in zero_seconds],
        "few_shot_seconds_per_row": [round(s, 3) for s in few_seconds],
        "few_over_zero": [round(r, 2) for r in ratios],
        "few_over_zero_median": round(statistics.median(ratios), 2),
    }
    save_result("fewshot_speed", result)


if __name__ == "__main__":
    main()
