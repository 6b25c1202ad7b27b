"""LoRA training step time on the embedded gemma-3-270m: batches of 8 TNEWS chat examples.

Run by hand:  .venv/bin/python -m bench.lora_step [--steps 20]
Times optimizer steps of one epoch's first batches in four variants, alternating step by step in
one process so that machine load hits them alike:
  whole_prompts   the trainer before issue 10: random batches of 8, every example's whole prompt
                  through the network, the LM head's logits through autograd (`answer_loss`);
  kv_prefix       session 3: length-grouped batches (`epoch_batches`), the shared instruction
                  prefix run once at batch 1 and its KV cache repeated per row, the same LM head;
  kv_one_pass     the same, with the LM head's loss and gradient in one pass over its weight
                  (`answer_cross_entropy`);
  packed          now (`batch_loss`): the prefix and every row's own tokens in one packed
                  sequence with a block mask, and the one-pass LM head.
Then a few steps with the standard `labels=` loss (full LM head at every position) for reference.
The two older variants are kept here, as reference code, since the trainer no longer has them.
Writes bench/results/lora_step.json.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from unittest import mock

import torch
from peft import LoraConfig, get_peft_model

from bench import save_result
from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.data.dataset import make_splits
from runner.data.prompts import PromptBuilder
from runner.providers.local import trainer as training
from runner.providers.local.model import after_prefix, output_logits, shared_prefix_length
from runner.providers.local.provider import LocalProvider
from runner.providers.local.trainer import batch_loss, collate, encode, epoch_batches, local_defaults
from runner.tasks import make_task


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

    def plain_head(lm, hidden, targets):  # the LM head as before: logits, then autograd
        return torch.nn.functional.cross_entropy(output_logits(lm, hidden), targets)

    def kv_prefix_loss(batch):  # session 3's batch_loss
        prefix = shared_prefix_length([ids for ids, _ in batch], min(n for _, n in batch) - 1)
        decoder = lm.get_decoder()
        cache = decoder(input_ids=torch.tensor([batch[0][0][:prefix]]), use_cache=True).cache
        ids, mask, targets = collate([(ids[prefix:], n - prefix) for ids, n in batch], pad, provider.device)
        hidden = after_prefix(decoder, cache, prefix, ids, mask)[0].last_hidden_state
        return training._loss_at_answers(lm, hidden, targets)

    def step(index: int, how: str) -> float:
        batch = [examples[i] for i in (before if how in ("whole_prompts", "standard_labels") else grouped)[index]]
        started = time.perf_counter()
        if how == "packed":
            loss, _ = batch_loss(lm, batch, pad, provider.device)
        elif how == "kv_one_pass":
            loss, _ = kv_prefix_loss(batch)
        elif how in ("whole_prompts", "kv_prefix"):
            with mock.patch.object(training, "answer_cross_entropy", plain_head):
                if how == "kv_prefix":
                    loss, _ = kv_prefix_loss(batch)
                else:
                    loss, _ = training.answer_loss(lm, *collate(batch, pad, provider.device))
        else:
            ids, mask, targets = collate(batch, pad, provider.device)
            loss = lm(input_ids=ids, attention_mask=mask, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"whole_prompts": [], "kv_prefix": [], "kv_one_pass": [], "packed": []}
    for index in range(2):
        for how in times:
            step(index, how)
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
        "speedup_median": {
            how: round(statistics.median(times["whole_prompts"]) / statistics.median(times[how]), 2)
            for how in ("kv_prefix", "kv_one_pass", "packed")
        },
    }
    save_result("lora_step", result)


if __name__ == "__main__":
    main()
