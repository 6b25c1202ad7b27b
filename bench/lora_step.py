"""LoRA training step time on the embedded gemma-3-270m: batch 8 of TNEWS chat examples.

Run by hand:  .venv/bin/python -m bench.lora_step
Times 20 optimizer steps after 3 warm-up steps with specrun's loss (answer tokens only, LM head
computed only there), then 5 steps with the standard `labels=` loss (full LM head over every
position), for comparison. Writes bench/results/lora_step.json.
"""

from __future__ import annotations

import platform
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
from runner.training import answer_loss, collate, encode, local_defaults


def main() -> None:
    spec = load_spec(PROJECT_ROOT / "specs" / "tnews.yaml")
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    conversations = [builder.training_messages(e) for e in make_splits(spec).train]
    provider = LocalProvider("gemma-3-270m")
    examples = encode(provider, conversations, 256)
    peft_model = get_peft_model(provider.lm, LoraConfig(r=8, lora_alpha=16, target_modules=local_defaults()["lora_targets"]))
    lm = peft_model.get_base_model()
    lm.train()
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=2e-4)
    pad = provider.tokenizer.pad_token_id

    def step(index: int, standard: bool) -> tuple[float, int]:
        batch = [examples[(index * 8 + i) % len(examples)] for i in range(8)]
        ids, mask, targets = collate(batch, pad, provider.device)
        started = time.perf_counter()
        if standard:
            loss = lm(input_ids=ids, attention_mask=mask, labels=targets).loss
        else:
            loss, _ = answer_loss(lm, ids, mask, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started, int(mask.sum())

    for index in range(3):
        step(index, standard=False)
    ours = [step(index, standard=False) for index in range(20)]
    standard = [step(index, standard=True) for index in range(5)]
    seconds = [s for s, _ in ours]
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "batch_size": 8,
        "mean_tokens_per_example": round(sum(n for _, n in ours) / (8 * len(ours)), 1),
        "step_seconds_median": round(statistics.median(seconds), 3),
        "step_seconds_mean": round(statistics.mean(seconds), 3),
        "examples_per_s": round(8 / statistics.mean(seconds), 1),
        "tokens_per_s": round(sum(n for _, n in ours) / sum(seconds), 1),
        "standard_labels_loss_step_seconds": round(statistics.mean(s for s, _ in standard), 3),
    }
    save_result("lora_step", result)


if __name__ == "__main__":
    main()
