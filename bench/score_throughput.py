"""Local label scoring against one plain batched forward pass over the same prompts.

Run by hand:  .venv/bin/python -m bench.score_throughput [--lines 200] [--rounds 3]
On 200 TNEWS eval prompts (random, seed 7), batch 8, alternating in one process so that machine
load hits both alike:
- plain forward: `lm(**batch, logits_to_keep=1)` over the left-padded prompts, the cheapest
  forward a user would write (the default computes the 262k-wide LM head at every position, which
  costs far more; it is timed once for reference);
- label scoring: `provider.score`, all 14 labels, with accuracy raw and mean-calibrated.
Only the ratio counts: machines here differ by ~2× from run to run. Writes
bench/results/score_throughput.json.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from bench import save_result
from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.data.dataset import spec_examples, take
from runner.data.prompts import PromptBuilder
from runner.providers.local.model import encode_batch
from runner.providers.local.provider import LocalProvider
from runner.tasks import make_task

BATCH_SIZE = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = load_spec(PROJECT_ROOT / "specs" / "tnews.yaml")
    examples, _ = spec_examples(spec)
    lines = take(examples, {"take": "random", "n": args.lines, "seed": 7})
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    conversations = [builder.messages(example) for example in lines]
    answers = list(spec.doc["labels"].values())
    gold = np.array([list(spec.doc["labels"]).index(example.gold) for example in lines])
    provider = LocalProvider("gemma-3-270m", batch_size=BATCH_SIZE)

    @torch.inference_mode()
    def plain_forward(every_position: bool = False) -> None:
        for start in range(0, len(conversations), BATCH_SIZE):
            batch = encode_batch(provider.tokenizer, conversations[start : start + BATCH_SIZE])
            provider.lm(**batch, logits_to_keep=0 if every_position else 1)

    def timed(run) -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    provider.score(conversations[:8], answers)  # warm-up
    plain_forward()
    forward_seconds, score_seconds, scores = [], [], None
    for _ in range(args.rounds):
        forward_seconds.append(timed(plain_forward))
        started = time.perf_counter()
        scores = provider.score(conversations, answers)
        score_seconds.append(time.perf_counter() - started)
    every_position = timed(lambda: plain_forward(every_position=True))
    ratios = [s / f for s, f in zip(score_seconds, forward_seconds, strict=True)]
    result = {
        "what": f"gemma-3-270m, {len(lines)} TNEWS lines (random, seed 7), 14 labels, batch {BATCH_SIZE}",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "dtype": str(provider.dtype),
        "plain_forward_seconds": [round(s, 2) for s in forward_seconds],
        "plain_forward_every_position_seconds": round(every_position, 2),
        "label_scoring_seconds": [round(s, 2) for s in score_seconds],
        "scoring_over_forward": [round(r, 3) for r in ratios],
        "scoring_over_forward_median": round(statistics.median(ratios), 3),
        "examples_per_s": round(len(lines) / statistics.median(score_seconds), 1),
        "accuracy_raw": float((scores.argmax(1) == gold).mean()),
        "accuracy_calibrated": float(((scores - scores.mean(0)).argmax(1) == gold).mean()),
    }
    save_result("score_throughput", result)


if __name__ == "__main__":
    main()
