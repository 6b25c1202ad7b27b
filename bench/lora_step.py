"""LoRA training step time on the embedded gemma-3-270m: batches of 8 TNEWS chat examples.

Run by hand:  .venv/bin/python -m bench.lora_step [--steps 20]
Times optimizer steps of one epoch's first batches, as the trainer was before issue 10 (random
batches of 8, `answer_loss`: every example's whole prompt through the network) and as it is now
(`epoch_batches`: length-grouped batches, and `batch_loss`: the shared instruction prefix run once
per batch, its KV cache repeated). The two alternate step by step in one process so that machine
load hits both alike; then a few steps with the standard `labels=` loss (full LM head at every
position) for reference. Writes bench/results/lora_step.json.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model

from bench import save_result
from runner import PROJECT_ROOT
from runner.data import make_splits
from runner.prompts import PromptBuilder
from runner.providers.local import LocalProvider
from runner.spec import load_spec
from runner.tasks import make_task
from runner.training import answer_loss, batch_loss, collate, encode, epoch_batches, local_defaults


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    spec = load_spec(PROJECT_ROOT / "specs" / "tnews_full.yaml")
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    conversations = [builder.training_messages(e) for e in make_splits(spec).train]
    provider = LocalProvider("gemma-3-270m")
    examples = encode(provider.loaded, conversations, 256)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=local_defaults()["lora_targets"])
    lm = get_peft_model(provider.lm, config).get_base_model()
    lm.train()
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=2e-4)
    pad = provider.tokenizer.pad_token_id

    order = list(range(len(examples)))
    random.Random(42).shuffle(order)
    before = [order[i : i + 8] for i in range(0, len(order), 8)]
    grouped = epoch_batches([len(ids) for ids, _ in examples], 8, 42)

    def step(index: int, how: str) -> float:
        batch = [examples[i] for i in (grouped if how == "shared_prefix" else before)[index]]
        started = time.perf_counter()
        if how == "shared_prefix":
            loss, _ = batch_loss(lm, batch, pad, provider.device)
        elif how == "whole_prompts":
            loss, _ = answer_loss(lm, *collate(batch, pad, provider.device))
        else:
            ids, mask, targets = collate(batch, pad, provider.device)
            loss = lm(input_ids=ids, attention_mask=mask, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    for index in range(2):
        step(index, "whole_prompts")
        step(index, "shared_prefix")
    times: dict[str, list[float]] = {"whole_prompts": [], "shared_prefix": []}
    for index in range(args.steps):
        for how in times:
            times[how].append(step(index, how))
    times["standard_labels"] = [step(index, "standard_labels") for index in range(3)]
    tokens = sum(len(ids) for ids, _ in examples) / len(before)  # real tokens in an average step
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "dtype": str(provider.dtype),
        "batch_size": 8,
        "steps": args.steps,
        "mean_tokens_per_step": round(tokens, 1),
        **{
            how: {
                "step_seconds_median": round(statistics.median(seconds), 3),
                "step_seconds_mean": round(statistics.mean(seconds), 3),
                "tokens_per_s": round(tokens / statistics.mean(seconds), 1),
            }
            for how, seconds in times.items()
        },
        "speedup_median": round(statistics.median(times["whole_prompts"]) / statistics.median(times["shared_prefix"]), 2),
    }
    save_result("lora_step", result)


if __name__ == "__main__":
    main()
