"""Guided decoding for the local model: a logits processor that keeps each row's answer valid.

A guide (e.g. extraction's AnswerGuide) says which text may follow; here it is applied to
tokens. Each step, the highest-scoring candidate tokens are checked against the row's guide
state and the rest are masked, so greedy decoding picks the best *valid* token. With a free
(non-strict) guide nothing is masked: the row just stops once its answer is complete, which
saves the tokens a base model would ramble on for.

A token is valid only if the answer can still be finished from where it leads, within the
tokens left: a prefix check alone let a row write a string it had already named (`["我"], "机构":
["我`), a state with no way out, and the row stopped there at 11–16 tokens whatever the budget.
The shortest way to finish (`Finisher`) is a breadth-first search over characters through the
guide itself; when the budget is nearly spent the row writes it, so the object is closed
instead of cut off.

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
LONGEST_PIECE = 16  # characters: no token the finisher writes is longer


class TokenPieces:
    """The text each token id adds, with byte-fallback tokens decoded when they are plain ASCII."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str | None] = {}
        self._structural: list[int] | None = None
        self._by_text: dict[str, int] | None = None

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

    def spelled(self, text: str) -> list[int]:
        """Token ids that write `text`, longest piece first: how the finisher writes its characters."""
        if self._by_text is None:
            self._by_text = {}
            special = set(self.tokenizer.all_special_ids)  # a property rebuilt on each access
            for piece, i in self.tokenizer.get_vocab().items():
                if 0 < len(piece) <= LONGEST_PIECE and i not in special:
                    self._by_text.setdefault(piece.replace("▁", " "), i)
        ids, start = [], 0
        while start < len(text):
            for end in range(min(len(text), start + LONGEST_PIECE), start, -1):
                if text[start:end] in self._by_text:
                    ids.append(self._by_text[text[start:end]])
                    start = end
                    break
            else:
                return []  # a character no single token writes (byte fallback): not writable here
        return ids


class Finisher:
    """The shortest text that completes a guide's answer from a state, found through the guide itself.

    Breadth-first over the characters an answer can hold (JSON punctuation, the type names, the
    row's text), so it needs nothing from the guide but `advance` and `done`. None: no way out.
    """

    def __init__(self, guide: Any, pieces: TokenPieces):
        self.guide = guide
        self.pieces = pieces
        names = "".join(getattr(guide, "names", []))
        self.alphabet = sorted(STRUCTURAL | set(names) | set(getattr(guide, "text", "")))
        self.found: dict[Any, str | None] = {}
        self.cost: dict[Any, int | None] = {}

    def text(self, state: Any) -> str | None:
        if state not in self.found:
            self.found[state] = self._search(state)
        return self.found[state]

    def tokens(self, state: Any) -> int | None:
        """How many tokens finishing takes from `state` (None: it cannot be finished here)."""
        if state not in self.cost:
            text = self.text(state)
            ids = self.pieces.spelled(text) if text else []
            self.cost[state] = len(ids) if text == "" or ids else None
        return self.cost[state]

    def _search(self, state: Any) -> str | None:
        if state is None:
            return None
        if self.guide.done(state):
            return ""
        seen = {state}
        frontier = [(state, "")]
        while frontier:
            following = []
            for current, written in frontier:
                for char in self.alphabet:
                    after = self.guide.advance(current, char)
                    if after is None or after in seen:
                        continue
                    if self.guide.done(after):
                        return written + char
                    seen.add(after)
                    following.append((after, written + char))
            frontier = following
        return None


class GuidedDecoding:
    """A transformers LogitsProcessor for a batch of rows, one guide per row, `budget` new tokens each."""

    def __init__(self, guides: Sequence[Any], pieces: TokenPieces, prompt_width: int, eos_id: int, budget: int):
        self.guides = list(guides)
        self.pieces = pieces
        self.prompt_width = prompt_width
        self.eos_id = eos_id
        self.budget = budget
        self.states = [guide.START for guide in self.guides]
        self.finished = [False] * len(self.guides)
        self.finishers = [Finisher(guide, pieces) for guide in self.guides]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        written = input_ids.shape[1] - self.prompt_width
        if written > 0:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if self.finished[row] or token == self.eos_id:
                    self.finished[row] = True
                    continue
                self.states[row] = self.guides[row].advance(self.states[row], self.pieces(token) or "\0")
        left_after = self.budget - written - 1  # tokens still to come after this one
        masked = torch.full_like(scores, float("-inf"))
        for row, guide in enumerate(self.guides):
            state = self.states[row]
            if self.finished[row] or state is None or guide.done(state):
                masked[row, self.eos_id] = 0.0  # answer complete (or broken past repair): stop
                continue
            if not guide.strict:
                masked[row] = scores[row]
                continue
            allowed = self._allowed(row, state, scores[row], left_after)
            if allowed:
                masked[row, allowed] = scores[row, allowed]
            else:
                masked[row, self.eos_id] = 0.0
        return masked

    def _allowed(self, row: int, state: Any, row_scores: torch.Tensor, left_after: int) -> list[int]:
        """Candidates that fit and leave a way to finish in the tokens left; else the finisher's next token."""
        candidates = torch.topk(row_scores, min(TOP_CANDIDATES, row_scores.shape[-1])).indices.tolist()
        allowed = [i for i in candidates if self._fits(row, state, i, left_after)]
        if not allowed:
            allowed = [i for i in self.pieces.structural() if self._fits(row, state, i, left_after)]
        if not allowed:
            finish = self.finishers[row].text(state)
            allowed = self.pieces.spelled(finish)[:1] if finish else []
        return allowed

    def _fits(self, row: int, state: Any, token_id: int, left_after: int) -> bool:
        piece = self.pieces(token_id)
        if not piece:
            return False
        after = self.guides[row].advance(state, piece)
        if after is None:
            return False
        cost = self.finishers[row].tokens(after)
        return cost is not None and cost <= left_after
