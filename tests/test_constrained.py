"""Constrained decoding finishes its answer: no dead end after a repeated string, closed within the budget."""

from __future__ import annotations

import json

import pytest
import torch

from runner.providers.local.guided import GuidedDecoding, TokenPieces
from runner.tasks.extraction.answer import AnswerGuide

TEXT = "卡利亚里主场迎战乌迪内斯，对手是巴勒莫"  # 巴勒莫 ends the text: once named, it cannot be extended
NAMES = ["人名", "组织机构"]
# What the scripted model wants to write: 巴勒莫 a second time, where the guide refuses its closing quote.
WANTED = '{"人名": ["巴勒莫"], "组织机构": ["巴勒莫", "卡利亚里", "乌迪内斯"]}'


class CharTokenizer:
    """A tokenizer-shaped vocabulary: EOS, JSON punctuation pieces, and one token per character."""

    eos_token_id = 0
    all_special_ids = (0,)

    def __init__(self, text: str):
        pieces = ["<eos>", "{", "}", "[", "]", '"', ",", ":", "▁", '{"', '":', '▁["', '"]', '"],', '▁"', '"]}', "}"]
        pieces += sorted(set(text + "".join(NAMES)))
        self.vocab = list(dict.fromkeys(pieces))

    def convert_ids_to_tokens(self, token_id: int) -> str:
        return self.vocab[token_id]

    def get_vocab(self) -> dict[str, int]:
        return {piece: i for i, piece in enumerate(self.vocab)}


def scripted_decode(budget: int) -> tuple[str, int]:
    """Greedy decoding under the guide, by a model that wants WANTED: the longest token continuing it."""
    tokenizer = CharTokenizer(TEXT)
    pieces = TokenPieces(tokenizer)
    guide = AnswerGuide(TEXT, NAMES)
    processor = GuidedDecoding([guide], pieces, prompt_width=1, eos_id=0, budget=budget)
    ids, written = [0], ""
    for _ in range(budget):
        scores = -0.001 * torch.arange(len(tokenizer.vocab), dtype=torch.float)[None, :]  # a fixed fallback order
        if WANTED.startswith(written):
            rest = WANTED[len(written) :]
            for i, piece in enumerate(tokenizer.vocab):
                text = piece.replace("▁", " ")
                if i and rest.startswith(text):
                    scores[0, i] = 10.0 + len(text)
        token = int(processor(torch.tensor([ids]), scores).argmax())
        if token == 0:
            break
        ids.append(token)
        written += pieces(token)
    return written, len(ids) - 1


def test_a_repeated_string_does_not_end_the_answer():
    """The old guide let the row write 巴勒莫 twice, found no token to go on with, and stopped there."""
    answer, tokens = scripted_decode(budget=128)
    guide = AnswerGuide(TEXT, NAMES)
    assert guide.done(guide.advance(guide.START, answer)), answer
    assert tokens > 16
    # The model's own answer up to where it led nowhere (巴勒莫 named again), then closed.
    assert answer == '{"人名": ["巴勒莫"], "组织机构": ["巴勒"]}'


@pytest.mark.parametrize("budget", [3, 8, 12, 20])
def test_the_object_is_closed_within_the_budget(budget):
    answer, tokens = scripted_decode(budget)
    guide = AnswerGuide(TEXT, NAMES)
    assert tokens <= budget
    assert guide.done(guide.advance(guide.START, answer)), answer
    assert isinstance(json.loads(answer), dict)
