"""A loaded Hugging Face causal LM and the computations both inference and training need.

The local provider and the trainer share these, so neither reaches into the other: the provider
loads a `LoadedModel` and serves it; the trainer trains one and validates with `score_answers`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from runner.errors import InvalidInput

Conversation = list[dict[str, str]]


@dataclass
class LoadedModel:
    lm: Any  # a transformers causal LM (possibly with LoRA layers injected)
    tokenizer: Any
    device: str


def output_logits(lm, hidden: torch.Tensor) -> torch.Tensor:
    """fp32 logits for the given hidden states only, with the model's final softcapping if it has one."""
    logits = lm.get_output_embeddings()(hidden).float()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def prompt_text(tokenizer, conversation: Conversation) -> str:
    """The text the model continues: its chat template if it has one, else the contents joined.

    gemma-3-270m is a base model without a chat template, so the seed prompt (ending in
    "类别：") is continued directly by the answer.
    """
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(message["content"] for message in conversation)


def encode_batch(tokenizer, conversations: Sequence[Conversation]) -> dict[str, torch.Tensor]:
    """Left-padded prompts with position ids that ignore the padding."""
    texts = [prompt_text(tokenizer, conversation) for conversation in conversations]
    has_bos_in_template = bool(tokenizer.chat_template)
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not has_bos_in_template)
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": positions}


@torch.inference_mode()
def score_answers(
    model: LoadedModel,
    conversations: Sequence[Conversation],
    answers: Sequence[str],
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Sum of token log-probabilities of each answer after each prompt: (conversations, answers).

    The prompt is run once per example; every answer's first token is read from that single
    pass. Answers longer than one token continue from the prompt's KV cache, repeated once per
    such answer, and the LM head (262k wide for gemma) is computed only at scored positions.
    """
    lm, tokenizer, device = model.lm, model.tokenizer, model.device
    answer_ids = [tokenizer.encode(answer, add_special_tokens=False) for answer in answers]
    if any(not ids for ids in answer_ids):
        raise InvalidInput("a label name encodes to no tokens", where="labels")
    first = torch.tensor([ids[0] for ids in answer_ids])
    longer = [k for k, ids in enumerate(answer_ids) if len(ids) > 1]
    scores = np.zeros((len(conversations), len(answers)), dtype=np.float32)
    for start in range(0, len(conversations), batch_size):
        chunk = conversations[start : start + batch_size]
        inputs = {k: v.to(device) for k, v in encode_batch(tokenizer, chunk).items()}
        out = lm.get_decoder()(**inputs, use_cache=bool(longer))
        last_hidden = out.last_hidden_state[:, -1]
        logprobs = torch.log_softmax(output_logits(lm, last_hidden), dim=-1)
        batch_scores = logprobs[:, first.to(device)]
        if longer:
            batch_scores[:, longer] += _continuations(model, out.cache, inputs, answer_ids, longer)
        scores[start : start + len(chunk)] = batch_scores.float().cpu().numpy()
        if progress:
            progress(len(chunk))
    return scores


def _continuations(model: LoadedModel, cache, inputs, answer_ids, longer) -> torch.Tensor:
    """Log-probability of tokens 2..n of each multi-token answer, batched over (example, answer)."""
    lm, device = model.lm, model.device
    n_examples, n_longer = inputs["input_ids"].shape[0], len(longer)
    width = max(len(answer_ids[k]) for k in longer) - 1
    feed = torch.zeros((n_longer, width), dtype=torch.long)
    target = torch.zeros((n_longer, width), dtype=torch.long)
    valid = torch.zeros((n_longer, width), dtype=torch.bool)
    for row, k in enumerate(longer):
        ids = answer_ids[k]
        feed[row, : len(ids) - 1] = torch.tensor(ids[:-1])
        target[row, : len(ids) - 1] = torch.tensor(ids[1:])
        valid[row, : len(ids) - 1] = True
    cache.batch_repeat_interleave(n_longer)
    feed, target, valid = (t.repeat(n_examples, 1).to(device) for t in (feed, target, valid))
    prompt_mask = inputs["attention_mask"].repeat_interleave(n_longer, dim=0)
    mask = torch.cat([prompt_mask, torch.ones_like(feed)], dim=1)
    start = inputs["attention_mask"].sum(-1).repeat_interleave(n_longer)
    positions = start[:, None] + torch.arange(width, device=device)
    hidden = lm.get_decoder()(input_ids=feed, attention_mask=mask, position_ids=positions, cache=cache).last_hidden_state
    logprobs = torch.log_softmax(output_logits(lm, hidden[valid]), dim=-1)
    picked = torch.zeros(valid.shape, dtype=logprobs.dtype, device=device)
    picked[valid] = logprobs.gather(-1, target[valid][:, None]).squeeze(-1)
    return picked.sum(-1).view(n_examples, n_longer)
