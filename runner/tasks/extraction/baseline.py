"""The classical rival for extraction: a character CRF (python-crfsuite) with BIO tags.

Features are the character, its neighbours within two places and the bigrams around it: the
standard Chinese NER CRF, the kind the CLUENER2020 paper's BiLSTM-CRF row improves on.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pycrfsuite

from runner.tasks import Example


def _features(text: str, index: int) -> list[str]:
    def char(offset: int) -> str:
        position = index + offset
        return text[position] if 0 <= position < len(text) else ("<s>" if position < 0 else "</s>")

    feats = ["bias", f"c0={char(0)}", f"c-1={char(-1)}", f"c1={char(1)}", f"c-2={char(-2)}", f"c2={char(2)}"]
    feats += [f"b-1={char(-1)}{char(0)}", f"b1={char(0)}{char(1)}", f"t={char(-1)}{char(0)}{char(1)}"]
    if char(0).isdigit():
        feats.append("digit")
    if char(0).isascii() and char(0).isalpha():
        feats.append("latin")
    return feats


def _tags(example: Example) -> list[str]:
    tags = ["O"] * len(example.text)
    for entity in example.gold:
        tags[entity.start] = f"B-{entity.type}"
        for position in range(entity.start + 1, entity.end):
            tags[position] = f"I-{entity.type}"
    return tags


def crf_predictions(train: list[Example], evaluation: list[Example]) -> list[dict[str, Any]]:
    """The CRF's spans for each evaluation example.

    crfsuite is C: trained on no sequence it segfaults, taking the run with it. With no training
    text, or no entity at all (one tag: it could only ever answer "O"), nothing is learnt and
    every prediction is empty; the native code is never called with what it cannot take.
    """
    sequences = [example for example in train if example.text]
    if not any(example.gold for example in sequences):
        return [{"spans": [], "invalid": False, "n_strings": 0} for _ in evaluation]
    trainer = pycrfsuite.Trainer(verbose=False)
    for example in sequences:
        trainer.append([_features(example.text, i) for i in range(len(example.text))], _tags(example))
    trainer.set_params({"c1": 0.05, "c2": 0.01, "max_iterations": 100, "feature.possible_transitions": True})
    with tempfile.TemporaryDirectory() as folder:
        model_path = os.path.join(folder, "crf.model")
        trainer.train(model_path)
        tagger = pycrfsuite.Tagger()
        tagger.open(model_path)
        predictions = []
        for example in evaluation:
            tags = tagger.tag([_features(example.text, i) for i in range(len(example.text))]) if example.text else []
            spans = _spans(tags)
            predictions.append({"spans": [list(s) for s in sorted(spans)], "invalid": False, "n_strings": len(spans)})
        tagger.close()
    return predictions


def _spans(tags: list[str]) -> set[tuple[str, int, int]]:
    spans, start, current = set(), None, None
    for index, tag in enumerate([*tags, "O"]):
        if tag.startswith("I-") and current == tag[2:]:
            continue
        if current is not None:
            spans.add((current, start, index))
            current = None
        if tag.startswith(("B-", "I-")):  # an I- without its B- starts an entity, as conlleval reads it
            current, start = tag[2:], index
    return spans
