"""Local fine-tuning: LoRA (peft) or full, on the answer tokens only.

How spec settings map (documented in the README and the schema):
  n_epochs                  "auto" → the cookbook's default-epochs rule for the training set size
  batch_size                "auto" → 8
  learning_rate_multiplier  × the base learning rate: 2e-4 for LoRA, 2e-5 for full fine-tuning
  seed                      data order and LoRA initialisation
  fine_tune.local           method, lora_rank, lora_alpha, lora_dropout, lora_targets, lora_layers (the last
                            N decoder layers, or all), max_seq_len, checkpoint_every (steps)
The loss covers only the assistant answer (+ end of turn), and the 262k-wide LM head is computed
only at those positions, in one pass over its weight (`answer_cross_entropy`); a batch runs as one
packed sequence whose shared prompt prefix goes through the network once (`batch_loss`). Together
on a 2-core CPU: ~1.3 s a TNEWS step of 8, against ~2.7 s before and ~6.3 s with transformers'
`labels=` loss. bf16 weights where the hardware has bf16, fp32 adapters; the GPU is used when torch
sees one.

Under `accelerate launch` / `torchrun` (distributed.py) each process trains on every N-th row of
each global batch and the gradients are summed across processes before the step; only the main
process writes the registry (record, events, checkpoints) and shows progress.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from runner.config.defaults import SCHEMA_PATH
from runner.core.errors import InvalidInput, RuntimeFailure
from runner.core.progress import progress_bar
from runner.data.chat_checks import default_epochs
from runner.providers.local import distributed
from runner.providers.local.model import (
    LoadedModel,
    output_logits,
    prompt_text,
    right_padded,
    score_answers,
    shared_prefix_length,
)
from runner.providers.local.store import LocalRegistry

# peft still asks transformers the deprecated question; the warning says nothing to a user.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

BASE_LEARNING_RATE = {"lora": 2e-4, "full": 2e-5}
AUTO_BATCH_SIZE = 8
CLOSED_ANSWER_SET = 64  # validation accuracy is reported when the answers are at most this many labels
PACK_TOKENS = 512  # a packed sequence's most tokens: its attention grows with the square
HEAD_BLOCK = 2048  # LM-head rows per block in _HeadCrossEntropy: 5 MB fp32 at width 640, cache-sized
LENGTH_GROUP = 50  # batches whose examples are sorted by length together (as HF group_by_length's megabatches)


def local_defaults() -> dict[str, Any]:
    """fine_tune.local's defaults, from the spec schema (their one home)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    local = schema["properties"]["fine_tune"]["properties"]["local"]["properties"]
    return {key: value["default"] for key, value in local.items()}


def local_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A job's fine_tune.local, its defaults filled in."""
    return {**local_defaults(), **settings.get("local", {})}


@dataclass
class Plan:
    n_epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    local: dict[str, Any]
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.n_epochs * self.steps_per_epoch


def plan(settings: dict[str, Any], n_examples: int) -> Plan:
    local = local_settings(settings)
    epochs = settings.get("n_epochs", "auto")
    batch = settings.get("batch_size", "auto")
    multiplier = settings.get("learning_rate_multiplier", "auto")
    batch = AUTO_BATCH_SIZE if batch == "auto" else int(batch)
    return Plan(
        n_epochs=default_epochs(n_examples) if epochs == "auto" else int(epochs),
        batch_size=batch,
        learning_rate=BASE_LEARNING_RATE[local["method"]] * (1.0 if multiplier == "auto" else float(multiplier)),
        seed=int(settings.get("seed", 0)),
        local=local,
        steps_per_epoch=math.ceil(n_examples / batch),
    )


def read_chat_jsonl(path: Path) -> list[list[dict[str, str]]]:
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def encode(model: LoadedModel, conversations: list[list[dict[str, str]]], max_seq_len: int) -> list[tuple]:
    """(token ids, number of prompt tokens) per example: prompt, then answer + end of turn."""
    tokenizer = model.tokenizer
    add_special = not tokenizer.chat_template
    examples = []
    for messages in conversations:
        prompt = tokenizer(prompt_text(tokenizer, messages[:-1]), add_special_tokens=add_special)["input_ids"]
        answer = [*tokenizer.encode(messages[-1]["content"], add_special_tokens=False), tokenizer.eos_token_id]
        prompt = prompt[-(max_seq_len - len(answer)) :] if len(prompt) + len(answer) > max_seq_len else prompt
        examples.append((prompt + answer, len(prompt)))
    return examples


def collate(examples: list[tuple], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and targets (-100 outside the answers)."""
    ids, mask = right_padded([tokens for tokens, _ in examples], pad_id, device)
    targets = torch.full(ids.shape, -100, device=device)
    for row, (tokens, n_prompt) in enumerate(examples):
        targets[row, n_prompt : len(tokens)] = torch.tensor(tokens[n_prompt:])
    return ids, mask, targets


def answer_loss(lm, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over answer tokens, computing the LM head only where it is needed."""
    hidden = lm.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    return _loss_at_answers(lm, hidden, targets)


def _loss_at_answers(lm, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    shifted = targets[:, 1:]
    scored = shifted != -100
    return answer_cross_entropy(lm, hidden[:, :-1][scored], shifted[scored]), int(scored.sum())


def answer_cross_entropy(lm, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `targets` under the LM head at `hidden` (one row per answer token).

    With a frozen, bias-free output layer (LoRA: gemma's tied embedding) the loss and its gradient
    are computed in one pass over the head's weight (`_HeadCrossEntropy`); otherwise, as for full
    fine-tuning, through the head's logits in autograd.
    """
    head = lm.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.weight.requires_grad or head.bias is not None:  # LoRA on it, full
        return torch.nn.functional.cross_entropy(output_logits(lm, hidden), targets)
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    return _HeadCrossEntropy.apply(hidden, head.weight, targets, softcap)


class _HeadCrossEntropy(torch.autograd.Function):
    """Cross-entropy through a frozen LM head in one pass over its weight, in fp32.

    The plain path reads the 262k × 640 head twice a step (logits, then the hidden states'
    gradient), at CPU memory speed: ~20% of a TNEWS LoRA step. Here each block of HEAD_BLOCK rows
    is read once and used for both, with a running log-sum-exp (as flash attention's online
    softmax): d loss / d h = Σ_v softmax_v · W_v − W_target, each term scaled by the softcapping's
    derivative when the model has one. The same loss and gradient as the plain path, in a
    different summation order.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap):
        h = hidden.float()
        rows = h.shape[0]
        running_max = torch.full((rows, 1), -math.inf, device=h.device)
        total = torch.zeros((rows, 1), device=h.device)
        weighted = torch.zeros_like(h)  # Σ exp(z_v − running_max) · dz_v/dh, so far
        want_grad = ctx.needs_input_grad[0]
        for start in range(0, weight.shape[0], HEAD_BLOCK):
            block = weight[start : start + HEAD_BLOCK].float()
            logits = h @ block.T
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            new_max = torch.maximum(running_max, logits.amax(1, keepdim=True))
            rescale = torch.exp(running_max - new_max)
            exps = torch.exp(logits - new_max)
            total = total * rescale + exps.sum(1, keepdim=True)
            if want_grad:
                if softcap:
                    exps = exps * (1 - (logits / softcap) ** 2)
                weighted = weighted * rescale + exps @ block
            running_max = new_max
        target_rows = weight[targets].float()
        target_logits = (h * target_rows).sum(1)
        if softcap:
            target_logits = torch.tanh(target_logits / softcap) * softcap
        loss = (running_max.squeeze(1) + torch.log(total.squeeze(1)) - target_logits).mean()
        if want_grad:
            if softcap:
                target_rows = target_rows * (1 - (target_logits / softcap) ** 2)[:, None]
            ctx.save_for_backward(((weighted / total - target_rows) / rows).to(hidden.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad_hidden,) = ctx.saved_tensors
        return grad_loss * grad_hidden, None, None, None


def batch_loss(lm, batch: list[tuple], pad_id: int, device: str) -> tuple[torch.Tensor, int]:
    """`answer_loss` of a batch, computed on packed rows that share their common prompt prefix.

    A spec's prompts all start with the same instruction (on TNEWS ~45 of ~66 tokens). The batch
    becomes one sequence: that prefix once, then each example's own tokens, with an attention mask
    that lets each example see the prefix and itself only, and positions that restart after the
    prefix for each. Same loss and gradients as the padded batch, with ~2.5× fewer tokens through
    the network on TNEWS, no padding, and full-width matmuls (running the prefix alone, at batch 1,
    then repeating its KV cache was 1.12× slower a step: bench/RESULTS.md). Packs stop at
    PACK_TOKENS (and the model's sliding window, which the mask then never needs), and an example
    longer than that alone takes the padded path.
    """
    if lm.config._attn_implementation not in ("sdpa", "eager"):  # the two that take a custom 4D mask
        return answer_loss(lm, *collate(batch, pad_id, device))
    prefix = shared_prefix_length([ids for ids, _ in batch], min(n_prompt for _, n_prompt in batch) - 1)
    limit = min(PACK_TOKENS, getattr(lm.config, "sliding_window", None) or PACK_TOKENS)
    total, count = 0.0, 0
    for rows in _packs([len(ids) - prefix for ids, _ in batch], prefix, limit):
        if len(rows) == 1 and len(batch[rows[0]][0]) > limit:
            loss, n = answer_loss(lm, *collate([batch[rows[0]]], pad_id, device))
        else:
            loss, n = _packed_loss(lm, [batch[row] for row in rows], prefix, device)
        total, count = total + loss * n, count + n
    return total / count, count


def _packs(own_lengths: list[int], prefix: int, limit: int) -> list[list[int]]:
    """Consecutive rows grouped so that prefix + their own tokens fit in `limit` (a row at least)."""
    packs: list[list[int]] = []
    size = 0
    for row, length in enumerate(own_lengths):
        if not packs or size + length > limit:
            packs.append([])
            size = prefix
        packs[-1].append(row)
        size += length
    return packs


def _packed_loss(lm, batch: list[tuple], prefix: int, device: str) -> tuple[torch.Tensor, int]:
    tokens, positions, owner, targets = list(batch[0][0][:prefix]), list(range(prefix)), [-1] * prefix, [-100] * prefix
    for row, (ids, n_prompt) in enumerate(batch):
        own = ids[prefix:]
        tokens += own
        positions += range(prefix, prefix + len(own))
        owner += [row] * len(own)
        # position i predicts token i + 1: the answer's tokens (and end of turn), never the next row's first
        targets += [own[i + 1] if n_prompt - prefix <= i + 1 < len(own) else -100 for i in range(len(own))]
    owner_t = torch.tensor(owner, device=device)
    visible = (owner_t[None, :] == -1) | (owner_t[None, :] == owner_t[:, None])
    visible &= torch.ones_like(visible).tril()
    if lm.config._attn_implementation == "eager":  # an additive mask
        visible = torch.zeros(visible.shape, dtype=lm.dtype, device=device).masked_fill(
            ~visible, torch.finfo(lm.dtype).min
        )
    hidden = lm.get_decoder()(
        input_ids=torch.tensor([tokens], device=device),
        position_ids=torch.tensor([positions], device=device),
        attention_mask=visible[None, None],
    ).last_hidden_state[0]
    targets_t = torch.tensor(targets, device=device)
    scored = targets_t != -100
    return answer_cross_entropy(lm, hidden[scored], targets_t[scored]), int(scored.sum())


def epoch_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """One epoch's batches: a seeded shuffle, then within each run of LENGTH_GROUP batches the
    examples sorted by length, then the batches shuffled again.

    Random batches of TNEWS carry ~39% padding after the shared prefix; grouped ones ~1%. Every
    example still appears once an epoch, batch contents stay random beyond their length, and the
    batch count is the same as plain slicing (only the last group can be short).
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = batch_size * LENGTH_GROUP
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def last_layers(lm, count: int | str) -> list[int] | None:
    """The indices of the last `count` decoder layers (None: all), for peft's layers_to_transform."""
    n_layers = lm.config.num_hidden_layers
    if count == "all":
        return None
    if count > n_layers:
        raise InvalidInput(f"{count} layers asked, but the model has {n_layers}", where="fine_tune.local.lora_layers")
    return list(range(n_layers - count, n_layers))


class Trainer:
    """Runs one registry job to its end (or to Ctrl-C, leaving a checkpoint to resume from)."""

    def __init__(self, model: LoadedModel, registry: LocalRegistry, job_id: str, console: Console):
        self.model, self.registry, self.console = model, registry, console
        self.record = registry.record(job_id)
        self.folder = registry.folder(job_id)
        self.train_set = encode(model, read_chat_jsonl(self.folder / "train.jsonl"), self._max_len())
        self.plan = plan(self.record["settings"], len(self.train_set))
        validation = self.folder / "validation.jsonl"
        self.validation = read_chat_jsonl(validation) if validation.is_file() else []
        self._epochs: dict[int, list[list[int]]] = {}  # epoch -> its batches (indices into train_set)
        self.world = distributed.world()

    def _save(self) -> None:
        if self.world.main:  # one writer: the other processes hold the same record in memory
            self.registry.save(self.record)

    def _event(self, message: str, **data: Any) -> None:
        if self.world.main:
            self.registry.add_event(self.record, message, **data)

    def _max_len(self) -> int:
        return local_settings(self.record["settings"])["max_seq_len"]

    def run(self) -> None:
        record, plan = self.record, self.plan
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return
        torch.manual_seed(plan.seed)
        checkpoint = self.registry.latest_checkpoint(record["id"])
        lm, self.saver = self._prepare(checkpoint)
        parameters = [p for p in lm.parameters() if p.requires_grad]
        if self.world.size > 1:
            distributed.broadcast_from_main(parameters)
        optimizer = torch.optim.AdamW(parameters, lr=plan.learning_rate, weight_decay=0.0)
        if checkpoint is not None and (checkpoint / "optimizer.pt").is_file():
            optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        record.update(status="running", total_steps=plan.total_steps, plan=plan.__dict__)
        record["processes"] = self.world.size
        self._save()
        resumed = f", resuming at step {record['step']}" if record["step"] else ""
        processes = f", {self.world.size} processes" if self.world.size > 1 else ""
        self._event(
            f"Training {plan.local['method']} on {len(self.train_set)} examples: {plan.n_epochs} epochs × "
            f"{plan.steps_per_epoch} steps, batch {plan.batch_size}, lr {plan.learning_rate:g}{processes}{resumed}",
        )
        losses: list[float] = []
        since_event: list[float] = []  # every step's loss since the last step event: the report's loss curve
        step = record["step"]
        try:
            with progress_bar(self.console) as progress:
                task = progress.add_task(f"fine-tune {record['id']}", total=plan.total_steps, completed=step)
                while step < plan.total_steps:
                    lm.train()
                    batch = self._batch(step)
                    started = time.perf_counter()
                    for group in optimizer.param_groups:
                        group["lr"] = self._learning_rate(step)
                    loss = self._backward(lm, batch, parameters)
                    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    seconds = time.perf_counter() - started
                    losses.append(float(loss.detach()))
                    since_event.append(round(losses[-1], 4))
                    record["step"] = step
                    n_batch_tokens = sum(len(ids) for ids, _ in batch)
                    record["trained_tokens"] = record.get("trained_tokens", 0) + n_batch_tokens
                    progress.update(task, completed=step, description=f"fine-tune {record['id']} loss {losses[-1]:.3f}")
                    if step % 10 == 0 or step == plan.total_steps:
                        self._event(
                            f"Step {step}/{plan.total_steps}: training loss={losses[-1]:.4f}",
                            step=step,
                            train_loss=losses[-1],
                            step_losses=since_event,  # steps step - len + 1 … step
                            learning_rate=self._learning_rate(step - 1),
                            tokens_per_s=round(n_batch_tokens / seconds, 1),
                            step_seconds=round(seconds, 3),
                        )
                        since_event = []
                    epoch_end = step % plan.steps_per_epoch == 0
                    if epoch_end or step % plan.local["checkpoint_every"] == 0 or step == plan.total_steps:
                        self._checkpoint(lm, optimizer, step, losses)
                        losses = []
        except KeyboardInterrupt:
            if losses:
                self._checkpoint(lm, optimizer, step, losses, validate=False)  # stop now, not after scoring
            record["status"] = "interrupted"
            self._save()
            self._event(f"Interrupted at step {step}; run again to resume from the checkpoint")
            raise
        except Exception as error:
            record.update(status="failed", error=f"{type(error).__name__}: {error}", finished_at=time.time())
            self._save()
            self._event(f"Failed: {record['error']}")
            raise RuntimeFailure(f"local fine-tuning job {record['id']} failed: {record['error']}") from error
        record.update(status="succeeded", finished_at=time.time())
        self._save()
        self._event(f"The job has successfully completed: model {record['model_id']}")

    def _backward(self, lm, batch: list[tuple], parameters: list[torch.nn.Parameter]) -> torch.Tensor:
        """The global batch's loss, its gradients in `parameters`; with N processes each computes its rows'
        share of the loss (weighted by answer tokens over the whole batch) and the shares are summed."""
        pad_id, device = self.model.tokenizer.pad_token_id, self.model.device
        if self.world.size == 1:
            loss, _n_tokens = batch_loss(lm, batch, pad_id, device)
            loss.backward()
            return loss
        rows = batch[self.world.rank :: self.world.size]
        batch_tokens = sum(len(ids) - n_prompt for ids, n_prompt in batch)  # answer tokens, every rank's rows
        share = torch.zeros((), device=device)
        if rows:  # a short last batch may leave a process none: it adds zeros
            loss, n_tokens = batch_loss(lm, rows, pad_id, device)
            share = loss * (n_tokens / batch_tokens)
            share.backward()
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        flat = torch.cat([p.grad.reshape(-1).float() for p in parameters] + [share.detach().float().reshape(1)])
        distributed.all_reduce_sum(flat)  # one message a step: every gradient and the loss
        offset = 0
        for parameter in parameters:
            size = parameter.numel()
            parameter.grad.copy_(flat[offset : offset + size].view_as(parameter.grad))
            offset += size
        return flat[-1]

    def _prepare(self, checkpoint: Path | None):
        lm = self.model.lm
        local = self.plan.local
        if local["method"] == "full":
            if checkpoint is not None:
                from safetensors.torch import load_model

                load_model(lm, str(checkpoint / "model.safetensors"), strict=False)
            lm.float()
            lm.requires_grad_(True)
            return lm, lm
        from peft import LoraConfig, PeftModel, get_peft_model

        if checkpoint is not None:
            peft_model = PeftModel.from_pretrained(lm, checkpoint, is_trainable=True)
            return peft_model.get_base_model(), peft_model
        config = LoraConfig(
            r=local["lora_rank"],
            lora_alpha=local["lora_alpha"],
            lora_dropout=local["lora_dropout"],
            target_modules=local["lora_targets"],
            layers_to_transform=last_layers(lm, local["lora_layers"]),
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(lm, config)
        # The LoRA layers are injected into the provider's own model, so its score() sees them too.
        return peft_model.get_base_model(), peft_model

    def _learning_rate(self, step: int) -> float:
        """Linear warm-up over the first 5% of steps, then linear decay to 10%."""
        total = self.plan.total_steps
        warmup = max(1, int(0.05 * total))
        if step < warmup:
            return self.plan.learning_rate * (step + 1) / warmup
        return self.plan.learning_rate * (1.0 - 0.9 * (step - warmup) / max(1, total - warmup))

    def _batch(self, step: int) -> list[tuple]:
        """The examples of a global step: a fresh seeded order each epoch, so a resumed job sees the same data."""
        epoch, index = divmod(step, self.plan.steps_per_epoch)
        if epoch not in self._epochs:
            lengths = [len(ids) for ids, _ in self.train_set]
            self._epochs = {epoch: epoch_batches(lengths, self.plan.batch_size, self.plan.seed * 1000 + epoch)}
        return [self.train_set[i] for i in self._epochs[epoch][index]]

    def _checkpoint(self, lm, optimizer, step: int, losses: list[float], validate: bool = True) -> None:
        if not self.world.main:  # the weights are the same everywhere: the main process keeps them
            return
        name = f"step-{step:06d}"
        target = self.folder / "checkpoints" / name
        target.mkdir(parents=True, exist_ok=True)
        if self.plan.local["method"] == "full":
            from safetensors.torch import save_model

            save_model(lm, str(target / "model.safetensors"))  # handles the tied embedding / LM head
        else:
            self.saver.save_pretrained(target)  # the PeftModel saves the adapter only
        torch.save(optimizer.state_dict(), target / "optimizer.pt")
        metrics: dict[str, Any] = {"step": step, "train_loss": round(float(np.mean(losses)), 4)}
        if self.validation and validate:
            metrics.update(self._validate(lm))
        self.record["checkpoints"].append({"id": name, "step": step, "metrics": metrics})
        self._save()
        summary = ", ".join(f"{k} {v}" for k, v in metrics.items() if k != "step")
        self._event(f"Checkpoint {name}: {summary}", **metrics)

    @torch.inference_mode()
    def _validate(self, lm) -> dict[str, float]:
        """Validation loss on the answers; accuracy too when the answers form a small label set
        (classification), since ranking every distinct answer of an open task would mean nothing."""
        lm.eval()
        examples = encode(self.model, self.validation, self._max_len())
        total, count = 0.0, 0
        for start in range(0, len(examples), 16):
            loss, n = batch_loss(lm, examples[start : start + 16], self.model.tokenizer.pad_token_id, self.model.device)
            total, count = total + float(loss) * n, count + n
        metrics = {"valid_loss": round(total / count, 4)}
        answers = sorted({messages[-1]["content"] for messages in self.validation})
        if len(answers) <= CLOSED_ANSWER_SET and max(map(len, answers)) <= 32:
            scores = score_answers(self.model, [messages[:-1] for messages in self.validation], answers, 8)
            gold = [answers.index(messages[-1]["content"]) for messages in self.validation]
            metrics["valid_accuracy"] = round(float(np.mean(scores.argmax(1) == gold)), 4)
        lm.train()
        return metrics
