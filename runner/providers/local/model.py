"""A loaded Hugging Face causal LM and the computations both inference and training need.

The local provider and the trainer share these, so neither reaches into the other: the provider
loads a `LoadedModel` and serves it; the trainer trains one and validates with `score_answers`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from runner.core.errors import InvalidInput

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


def shared_prefix_length(sequences: Sequence[Sequence[int]], limit: int) -> int:
    """How many leading tokens every sequence has in common, at most `limit`."""
    first = sequences[0]
    length = min(limit, *(len(s) for s in sequences))
    for sequence in sequences[1:]:
        for i in range(length):
            if sequence[i] != first[i]:
                length = i
                break
    return max(length, 0)


def right_padded(sequences: Sequence[Sequence[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the right, and their attention mask."""
    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    return ids.to(device), mask.to(device)


def after_prefix(decoder, cache, shared: int, ids: torch.Tensor, mask: torch.Tensor, use_cache: bool = False):
    """Run right-padded rows that all continue the same `shared`-token prefix.

    `cache` holds that prefix's KV for one row (or is None when nothing is shared); it is repeated
    per row in place, so gradients flow back to a prefix computed with them. Returns the decoder's
    output and the attention mask over prefix + rows.
    """
    rows = ids.shape[0]
    if cache is not None:
        cache.batch_repeat_interleave(rows)
        mask = torch.cat([torch.ones((rows, shared), dtype=mask.dtype, device=mask.device), mask], dim=1)
    positions = (shared + torch.arange(ids.shape[1], device=ids.device)).expand(rows, -1)
    out = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=use_cache)
    return out, mask


@torch.inference_mode()
def score_answers(
    model: LoadedModel,
    conversations: Sequence[Conversation],
    answers: Sequence[str],
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Sum of token log-probabilities of each answer after each prompt: (conversations, answers).

    Three things keep this cheaper than one plain forward over the prompts:
    - the prefix every prompt shares (a spec's instruction and label list: ~45 of ~64 tokens on
      TNEWS) runs once, and each batch continues from a copy of its KV cache;
    - prompts are batched by length, packed to the tokens of `batch_size` whole prompts;
    - every answer's first token is read from the prompt's last position, and the LM head (262k
      wide for gemma) is computed only there; answers longer than one token continue from the
      prompt's KV cache, in chunks no larger than `batch_size` × answers rows.
    """
    lm, tokenizer, device = model.lm, model.tokenizer, model.device
    answer_ids = [tokenizer.encode(answer, add_special_tokens=False) for answer in answers]
    if any(not ids for ids in answer_ids):
        raise InvalidInput("a label name encodes to no tokens", where="labels")
    scores = np.zeros((len(conversations), len(answers)), dtype=np.float32)
    if not conversations:
        return scores
    first = torch.tensor([ids[0] for ids in answer_ids], device=device)
    longer = [k for k, ids in enumerate(answer_ids) if len(ids) > 1]
    add_special = not tokenizer.chat_template  # a chat template writes its own BOS
    prompts = tokenizer([prompt_text(tokenizer, c) for c in conversations], add_special_tokens=add_special)["input_ids"]
    shared = shared_prefix_length(prompts, min(map(len, prompts)) - 1)  # every prompt keeps a token of its own
    # Sliding-window layers mask by cache index, not position: padding inside the window would
    # hide real tokens from an answer's later tokens, so long prompts are batched by exact length.
    # Only later tokens see the padding (it comes after the prompt): with one-token answers, long
    # prompts (few-shot with long texts) still pack.
    window = getattr(lm.config, "sliding_window", None)
    exact = bool(longer and window) and max(map(len, prompts)) + max(map(len, answer_ids)) > window
    decoder = lm.get_decoder()
    prefix_cache = None
    if shared:
        prefix_cache = decoder(input_ids=torch.tensor([prompts[0][:shared]], device=device), use_cache=True).cache
    for rows in _token_batches(prompts, shared, batch_size, exact):
        ids, mask = right_padded([prompts[i][shared:] for i in rows], tokenizer.pad_token_id, device)
        cache = copy.deepcopy(prefix_cache) if prefix_cache is not None else None
        out, mask = after_prefix(decoder, cache, shared, ids, mask, use_cache=bool(longer))
        lengths = mask.sum(-1)  # prefix + own tokens
        last_hidden = out.last_hidden_state[torch.arange(len(rows), device=device), lengths - shared - 1]
        batch_scores = torch.log_softmax(output_logits(lm, last_hidden), dim=-1)[:, first]
        if longer:
            per_chunk = max(1, batch_size * len(answers) // len(longer))  # rows × answers, as one plain batch had
            for start in range(0, len(rows), per_chunk):
                chunk = torch.arange(start, min(start + per_chunk, len(rows)), device=device)
                cache = out.cache if len(chunk) == len(rows) else copy.deepcopy(out.cache)
                if len(chunk) < len(rows):
                    cache.batch_select_indices(chunk)
                batch_scores[chunk[:, None], torch.tensor(longer, device=device)] += _continuations(
                    model, cache, mask[chunk], lengths[chunk], answer_ids, longer
                )
        scores[rows] = batch_scores.float().cpu().numpy()
        if progress:
            progress(len(rows))
    return scores


def _token_batches(prompts: list[list[int]], shared: int, batch_size: int, exact: bool = False) -> list[list[int]]:
    """Indices of prompts, shortest first, in batches that hold as many tokens as `batch_size` whole
    prompts would: with the shared prefix cached, a batch takes ~3× as many TNEWS prompts for the
    same matrix sizes. With `exact`, a batch holds prompts of one length only (no padding)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    budget = batch_size * max(map(len, prompts))
    batches: list[list[int]] = []
    for index in order:
        width = len(prompts[index]) - shared  # the longest so far: prompts come shortest first
        same_length = not exact or len(prompts[batches[-1][-1]]) == len(prompts[index]) if batches else False
        if batches and same_length and (len(batches[-1]) + 1) * width <= budget:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def _continuations(model: LoadedModel, cache, mask, lengths, answer_ids, longer) -> torch.Tensor:
    """Log-probability of tokens 2..n of each multi-token answer, batched over (example, answer).

    The prompts are right-padded: each continuation starts at its own prompt's length, and the
    padding between stays masked out.
    """
    lm, device = model.lm, model.device
    n_examples, n_longer = mask.shape[0], len(longer)
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
    prompt_mask = mask.repeat_interleave(n_longer, dim=0)
    full_mask = torch.cat([prompt_mask, torch.ones_like(feed)], dim=1)
    positions = lengths.repeat_interleave(n_longer)[:, None] + torch.arange(width, device=device)
    hidden = lm.get_decoder()(
        input_ids=feed, attention_mask=full_mask, position_ids=positions, cache=cache
    ).last_hidden_state
    logits = output_logits(lm, hidden[valid])
    picked = torch.zeros(valid.shape, dtype=logits.dtype, device=device)
    picked[valid] = logits.gather(-1, target[valid][:, None]).squeeze(-1) - logits.logsumexp(-1)
    return picked.sum(-1).view(n_examples, n_longer)
