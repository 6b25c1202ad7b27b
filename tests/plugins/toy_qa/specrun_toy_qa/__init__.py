"""A toy task type from outside specrun: short answers to questions, scored by exact match and character F1.

A package of its own (pyproject.toml declares it in the `specrun.tasks` entry-point group);
tests/test_plugin_task.py installs it and runs `specrun validate` and `specrun run` on a spec naming
`task: toy_qa`. docs/writing-a-task-type.md walks through this file.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from runner.core.errors import InvalidInput
from runner.tasks import Decoded, Example, Task, Where, pct_ci
from runner.tasks.common import Mistake, MistakeSet, join_text


def normalized(answer: str) -> str:
    """Case, width and surrounding space do not make an answer wrong."""
    return unicodedata.normalize("NFKC", answer).strip().casefold()


def char_f1(gold: str, predicted: str) -> float:
    """F1 over the characters the two answers share (SQuAD's token F1, by character)."""
    gold, predicted = normalized(gold), normalized(predicted)
    if not gold or not predicted:
        return float(gold == predicted)
    common = sum((Counter(gold) & Counter(predicted)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


class ToyQATask(Task):
    """Short answers to questions: the model generates, exact match and character F1 score."""

    name = "toy_qa"  # what a spec's `task:` says; the entry point's name must be the same
    metrics = ("exact_match", "char_f1")  # what gates may name; each a share from 0 to 1
    primary_metric = "exact_match"  # the headline figure of tables and verdicts
    methods = ("generate",)  # open answers: no closed set to score label by label
    baseline_name = "most frequent answer"  # the classical rival's row, in words
    max_tokens = 24  # provider.params.max_tokens when the spec leaves it out

    def __init__(self, doc: dict[str, Any]):
        super().__init__(doc)
        self.question_field = doc["data"]["question_field"]
        self.answer_field = doc["data"]["answer_field"]

    @classmethod
    def schema(cls) -> dict[str, Any]:
        # Keys without a `default`: apply_defaults fills them, so other task types' specs stay as they were.
        field = {"type": "string", "minLength": 1}
        return {
            "description": "toy_qa: a short answer per question (a plugin).",
            "properties": {
                "data": {
                    "properties": {
                        "question_field": {**field, "description": "toy_qa: the question (default question)."},
                        "answer_field": {**field, "description": "toy_qa: the gold answer (default answer)."},
                    }
                }
            },
        }

    @classmethod
    def apply_defaults(cls, doc: dict[str, Any], provider_cls: type) -> None:
        super().apply_defaults(doc, provider_cls)
        doc["data"].setdefault("question_field", "question")
        doc["data"].setdefault("answer_field", "answer")

    @classmethod
    def check_spec(cls, doc: dict[str, Any], where: Where) -> None:
        cls.check_foreign_rows(doc, where)
        if doc["data"]["question_field"] == doc["data"]["answer_field"]:
            raise InvalidInput("the question and the answer need fields of their own", where=where("data"))

    def read_example(self, row: Any, fmt: str, where: str, example_id: str) -> Example | None:
        if not isinstance(row, dict):
            raise InvalidInput(f"expected an object with fields, got {type(row).__name__}", where=where)
        text = join_text(row, [self.question_field], where)
        answer = join_text(row, [self.answer_field], where)
        return Example(id=example_id, text=text, gold=answer, record=row)

    def prompt_variables(self) -> dict[str, Any]:
        return {}

    def target(self, example: Example) -> str:
        return example.gold

    def decode(
        self, examples: list[Example], outputs: dict[str, dict[str, Any]], mode: str, validation: Any = None
    ) -> Decoded:
        answers = [outputs[e.id]["text"].strip() for e in examples]
        return Decoded(rows={mode: answers}, fields=[{f"{mode}_answer": a} for a in answers])

    def example_stats(self, examples: list[Example], predicted: list[Any]) -> np.ndarray:
        """Per example: exact (0 or 1), char F1, 1. Sums of these give every metric, so specrun can
        resample examples for intervals and `(95%)` gates."""
        return np.array(
            [
                [normalized(e.gold) == normalized(str(p)), char_f1(e.gold, str(p)), 1.0]
                for e, p in zip(examples, predicted, strict=True)
            ],
            dtype=float,
        ).reshape(-1, 3)

    def aggregate(self, totals: np.ndarray) -> dict[str, Any]:
        exact, f1, n = np.moveaxis(np.asarray(totals, dtype=float), -1, 0)
        return {"exact_match": exact / np.maximum(n, 1), "char_f1": f1 / np.maximum(n, 1)}

    def score(self, examples: list[Example], predicted: list[Any]) -> dict[str, Any]:
        totals = self.example_stats(examples, predicted).sum(axis=0)
        metrics = {name: float(value) for name, value in self.aggregate(totals).items()}
        return {**metrics, "correct": int(totals[0]), "n": int(totals[2])}

    def baseline(self, train: list[Example], evaluation: list[Example]) -> list[Any]:
        common = Counter(e.gold for e in train).most_common(1)
        return [common[0][0] if common else ""] * len(evaluation)

    def table_columns(self) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
        return [("exact match", lambda m: pct_ci(m, "exact_match")), ("char F1", lambda m: pct_ci(m, "char_f1"))]

    def report_section(self, metrics: dict[str, Any], row: str) -> list[str]:
        return [f"## Answers ({row})", "", f"{metrics['correct']} of {metrics['n']} answered exactly.", ""]

    def mistakes(self, records: list[dict[str, Any]], row: str, manifest: dict[str, Any]) -> MistakeSet | None:
        wrong = [r for r in records if normalized(str(r.get(row))) != normalized(str(r.get("gold")))]
        shown = [Mistake(text=str(r["text"]), gold=str(r["gold"]), predicted=str(r.get(row))) for r in wrong[:8]]
        return MistakeSet(row, "the first ones in eval order", len(wrong), shown)
