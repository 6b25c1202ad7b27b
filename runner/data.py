"""Read a dataset into examples and cut it into train and eval splits.

Every row is checked while reading, so a bad line is reported with its file and line number
before any model is loaded.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import InvalidInput
from runner.spec import Spec


@dataclass(frozen=True)
class Example:
    id: str  # stable across runs: the row's line in the file
    text: str
    label: str  # the dataset's label (a key of spec.labels)
    record: dict[str, Any]


@dataclass
class Splits:
    train: list[Example]
    eval: list[Example]
    n_rows: int  # rows read, before exclusions
    n_excluded: int
    validation: list[Example]
    labelled: list[Example]  # every usable example, before splitting

    def outside_eval(self) -> list[Example]:
        """Every labelled example not in the eval split: the most a baseline may train on."""
        held_out = {example.id for example in self.eval}
        return [example for example in self.labelled if example.id not in held_out]


def read_rows(path: Path, fmt: str) -> list[tuple[int, Any]]:
    """(line number, parsed row) for every row; the line number is 1-based."""
    if fmt == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            return [(reader.line_num, row) for row in reader]
    text = path.read_text(encoding="utf-8")
    if fmt == "json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidInput(f"not valid JSON ({error.msg})", where=f"{path}:{error.lineno}") from None
        if not isinstance(rows, list):
            raise InvalidInput(
                "a json dataset must be an array of objects (use jsonl for one per line)", where=str(path)
            )
        return [(index + 1, row) for index, row in enumerate(rows)]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise InvalidInput(
                f"not valid JSON ({error.msg}, column {error.colno})", where=f"{path}:{number}"
            ) from None
    return rows


def load_examples(spec: Spec) -> tuple[list[Example], int]:
    """All usable examples in file order, and how many rows the exclusions dropped."""
    data = spec.data
    path = Path(data["path"])
    excluded = set(data["exclude_labels"])
    examples, n_excluded = [], 0
    for line, row in read_rows(path, data["format"]):
        where = f"{path}:{line}"
        if not isinstance(row, dict):
            raise InvalidInput(f"expected an object with fields, got {type(row).__name__}", where=where)
        for field in (*data["text_fields"], data["label_field"]):
            if field not in row:
                raise InvalidInput(f"missing field {field!r} (fields here: {', '.join(row)})", where=where)
        label = str(row[data["label_field"]])
        if label in excluded:
            n_excluded += 1
            continue
        if label not in spec.labels:
            raise InvalidInput(
                f"label {label!r} is not in the spec's labels; add it there or to data.exclude_labels",
                where=where,
            )
        text = "\n".join(str(row[field]) for field in data["text_fields"])
        examples.append(Example(id=f"L{line}", text=text, label=label, record=row))
    if not examples:
        raise InvalidInput("no examples left after exclusions", where=str(path))
    return examples, n_excluded


def make_splits(spec: Spec, limit: int | None = None) -> Splits:
    examples, n_excluded = load_examples(spec)
    splits = spec.doc["splits"]
    train = take(examples, splits["train"])
    used = {example.id for example in train}
    validation = []
    if "validation" in splits:
        validation = take([e for e in examples if e.id not in used], splits["validation"])
        used |= {example.id for example in validation}
    evaluation = take([e for e in examples if e.id not in used], splits["eval"])
    if limit is not None:
        evaluation = evaluation[:limit]
    if not train or not evaluation:
        raise InvalidInput(
            f"splits leave {len(train)} train and {len(evaluation)} eval examples; both need at least one",
            where=spec.where("splits"),
        )
    return Splits(
        train=train,
        eval=evaluation,
        n_rows=len(examples) + n_excluded,
        n_excluded=n_excluded,
        validation=validation,
        labelled=examples,
    )


def take(examples: list[Example], split: dict[str, Any]) -> list[Example]:
    n = min(split.get("n", len(examples)), len(examples))
    how = split["take"]
    if how == "first":
        return examples[:n]
    if how == "last":
        return examples[len(examples) - n :]
    if how == "rest":
        return list(examples)
    rng = random.Random(split["seed"])
    if how == "random":
        return rng.sample(examples, n)
    return _stratified(examples, n, rng)


def _stratified(examples: list[Example], n: int, rng: random.Random) -> list[Example]:
    """n examples with each label's share as in the pool (largest remainders get the rounding)."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    quotas = {label: n * len(group) / len(examples) for label, group in by_label.items()}
    counts = {label: int(quota) for label, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda label: (quotas[label] - counts[label], label), reverse=True)
    for label in by_remainder[: n - sum(counts.values())]:
        counts[label] += 1
    chosen = [example for label in sorted(by_label) for example in rng.sample(by_label[label], counts[label])]
    rng.shuffle(chosen)
    return chosen
