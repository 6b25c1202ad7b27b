"""Guided decoding for the local model: a logits processor that keeps each row's answer valid.

A guide (e.g. extraction's AnswerGuide) says which text may follow; here it is applied to
tokens. Each step, the highest-scoring candidate tokens are checked against the row's guide
state and the rest are masked, so greedy decoding picks the best *valid* token. With a free
(non-strict) guide nothing is masked: the row just stops once its answer is complete, which
saves the tokens a base model would ramble on for.

outlines, lm-format-enforcer and llguidance compile a grammar or regex per request; here every
example has its own constraint (entities must be substrings of *its* text), so a prefix check
on the few candidate tokens is cheaper than compiling one automaton per example.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

TOP_CANDIDATES = 48  # candidates checked per row and step before falling back to structural tokens
STRUCTURAL = set('{}[]",: ')


class TokenPieces:
    """The text each token id adds, with byte-fallback tokens decoded when they are plain ASCII."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str | None] = {}
        self._structural: list[int] | None = None

    def __call__(self, token_id: int) -> str | None:
        if token_id not in self.cache:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            if piece is None or token_id in self.tokenizer.all_special_ids:
                text = None
            elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                value = int(piece[3:5], 16)
                text = chr(value) if value < 128 else None
            else:
                text = piece.replace("▁", " ")
            self.cache[token_id] = text
        return self.cache[token_id]

    def structural(self) -> list[int]:
        """Short tokens made only of JSON punctuation: how a guided answer closes when the model would not."""
        if self._structural is None:
            vocab = self.tokenizer.get_vocab()
            self._structural = [
                i for piece, i in vocab.items() if 0 < len(piece) <= 4 and set(piece.replace("▁", " ")) <= STRUCTURAL
            ]
        return self._structural


class GuidedDecoding:
    """A transformers LogitsProcessor for a batch of rows, one guide per row."""

    def __init__(self, guides: Sequence[Any], pieces: TokenPieces, prompt_width: int, eos_id: int):
        self.guides = list(guides)
        self.pieces = pieces
        self.prompt_width = prompt_width
        self.eos_id = eos_id
        self.states = [guide.START for guide in self.guides]
        self.finished = [False] * len(self.guides)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.prompt_width:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if self.finished[row] or token == self.eos_id:
                    self.finished[row] = True
                    continue
                self.states[row] = self.guides[row].advance(self.states[row], self.pieces(token) or "\0")
        masked = torch.full_like(scores, float("-inf"))
        for row, guide in enumerate(self.guides):
            state = self.states[row]
            if self.finished[row] or state is None or guide.done(state):
                masked[row, self.eos_id] = 0.0  # answer complete (or broken past repair): stop
                continue
            if not guide.strict:
                masked[row] = scores[row]
                continue
            allowed = self._allowed(guide, state, scores[row])
            if allowed:
                masked[row, allowed] = scores[row, allowed]
            else:
                masked[row, self.eos_id] = 0.0
        return masked

    def _allowed(self, guide, state, row_scores: torch.Tensor) -> list[int]:
        candidates = torch.topk(row_scores, TOP_CANDIDATES).indices.tolist()
        allowed = [i for i in candidates if self._fits(guide, state, i)]
        if not allowed:
            allowed = [i for i in self.pieces.structural() if self._fits(guide, state, i)]
        return allowed

    def _fits(self, guide, state, token_id: int) -> bool:
        piece = self.pieces(token_id)
        return bool(piece) and guide.advance(state, piece) is not None
