"""Read a dataset into examples and cut it into train and eval splits.

Every row is checked while reading, so a bad line is reported with its file and line number
before any model is loaded.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.config.defaults import FORMAT_BY_SUFFIX
from runner.core.conll import conll_sentences
from runner.core.errors import InvalidInput
from runner.core.jsonl import parse_json, read_jsonl, read_text
from runner.tasks import Example, Task, make_task

if TYPE_CHECKING:
    from runner.config.spec import Spec


@dataclass
class Splits:
    train: list[Example]
    eval: list[Example]
    n_rows: int  # rows read, before exclusions
    n_excluded: int
    validation: list[Example]
    labelled: list[Example]  # every usable example of every file read, before splitting

    def outside_eval(self) -> list[Example]:
        """Every labelled example not in the eval split: the most a baseline may train on."""
        held_out = {example.id for example in self.eval}
        return [example for example in self.labelled if example.id not in held_out]


def read_rows(path: Path, fmt: str) -> list[tuple[int, Any]]:
    """(line number, parsed row) for every row; the line number is 1-based and real.

    Text must be UTF-8 (a leading BOM is dropped, also from a CSV's first field name); JSONL
    lines end at "\\n" only (runner.core.jsonl), so U+2028 inside a string does not split a row. A
    JSON array's rows carry the line each item starts on; only when items share lines (a
    compact one-line array) are they numbered by item instead, to keep row ids unique. Every
    failure, including nesting too deep and integers too long for the parser, is an
    InvalidInput naming file:line.
    """
    if fmt == "jsonl":
        return list(read_jsonl(path))
    text = read_text(path, "data file")
    if fmt == "conll":
        return conll_sentences(text, path)
    if fmt in ("csv", "tsv"):
        # TSV as exported by spreadsheets and datasets: tab-separated, no quoting (a leading " is text)
        dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
        reader = csv.DictReader(io.StringIO(text, newline=""), **dialect)
        rows: list[tuple[int, Any]] = []
        try:
            names = reader.fieldnames or []
            if twice := next((name for i, name in enumerate(names) if name in names[:i]), None):
                raise InvalidInput(f"the column {twice!r} appears twice in the header", where=f"{path}:1")
            for row in reader:
                rows.append((reader.line_num, row))
        except csv.Error as error:
            raise InvalidInput(f"cannot read {fmt.upper()}: {error}", where=f"{path}:{reader.line_num}") from None
        return rows
    items = parse_json(text, path)
    if not isinstance(items, list):
        raise InvalidInput("a json dataset must be an array of objects (use jsonl for one per line)", where=str(path))
    lines = _array_item_lines(text)
    if len(set(lines)) != len(items):
        lines = list(range(1, len(items) + 1))
    return list(zip(lines, items, strict=True))


def _array_item_lines(text: str) -> list[int]:
    """The 1-based line each item of the (already validated) top-level JSON array starts on."""
    decoder, skip = json.JSONDecoder(), re.compile(r"[ \t\n\r]*")
    position = skip.match(text, skip.match(text).end() + 1).end()  # past "["
    starts: list[int] = []
    while position < len(text) and text[position] != "]":
        starts.append(position)
        _, position = decoder.raw_decode(text, position)
        position = skip.match(text, position).end()
        if text.startswith(",", position):
            position = skip.match(text, position + 1).end()
    lines, line, previous = [], 1, 0
    for start in starts:
        line += text.count("\n", previous, start)
        lines.append(line)
        previous = start
    return lines


def load_examples(task: Task, path: str | Path, fmt: str, id_prefix: str = "") -> tuple[list[Example], int]:
    """All usable examples of one file in file order, and how many rows the spec excludes."""
    path = Path(path)
    container = fmt if fmt in ("json", "csv", "tsv", "conll") else "jsonl"
    examples, n_excluded = [], 0
    for line, row in read_rows(path, container):
        example = task.read_example(row, fmt, f"{path}:{line}", f"{id_prefix}L{line}")
        if example is None:
            n_excluded += 1
        else:
            examples.append(example)
    if not examples:
        why = f"all {n_excluded} rows are excluded by the spec" if n_excluded else "the file has no rows"
        raise InvalidInput(f"no examples: {why}", where=str(path))
    return examples, n_excluded


def spec_examples(spec: Spec) -> tuple[list[Example], int]:
    """The examples of the spec's data.path (benchmarks and tests read one file without splitting)."""
    return load_examples(make_task(spec.doc), spec.data["path"], spec.data["format"])


def make_splits(spec: Spec, task: Task | None = None, limit: int | None = None) -> Splits:
    """train, then validation, then eval, each from its own file or from what data.path has left."""
    task = task or make_task(spec.doc)
    pools: dict[str, list[Example]] = {}  # file -> examples not yet taken
    n_rows = n_excluded = 0
    labelled: list[Example] = []

    def pool(section: dict[str, Any]) -> list[Example]:
        nonlocal n_rows, n_excluded
        path = section.get("path", spec.data.get("path"))
        if path not in pools:
            main = path == spec.data.get("path")
            fmt = (
                section.get("format")
                or (spec.data.get("format") if main else None)
                or FORMAT_BY_SUFFIX.get(Path(path).suffix.lower(), "jsonl")
            )
            examples, excluded = load_examples(task, path, fmt, "" if main else f"{Path(path).name}:")
            pools[path] = examples
            labelled.extend(examples)
            n_rows, n_excluded = n_rows + len(examples) + excluded, n_excluded + excluded
        return pools[path]

    chosen: dict[str, list[Example]] = {}
    for name in ("train", "validation", "eval"):
        if name not in spec.doc["splits"]:
            continue
        section = spec.doc["splits"][name]
        available = pool(section)
        picked = take(available, section, spec.where("splits", name, "n"), task.stratum)
        taken = {example.id for example in picked}
        pools[section.get("path", spec.data.get("path"))] = [e for e in available if e.id not in taken]
        chosen[name] = picked
    task.check_read(spec.where)
    evaluation = chosen["eval"][:limit] if limit is not None else chosen["eval"]
    validation = chosen.get("validation", [])
    if "validation" in chosen and not validation:
        raise InvalidInput(
            "splits.validation holds no examples; give it some or leave it out",
            where=spec.where("splits", "validation"),
        )
    validation = validation[:limit] if limit is not None else validation  # --limit is a smoke run: no 300-line fits
    if not chosen["train"] or not evaluation:
        raise InvalidInput(
            f"splits leave {len(chosen['train'])} train and {len(evaluation)} eval examples; both need at least one",
            where=spec.where("splits"),
        )
    return Splits(
        train=chosen["train"],
        eval=evaluation,
        n_rows=n_rows,
        n_excluded=n_excluded,
        validation=validation,
        labelled=labelled,
    )


def take(
    examples: list[Example],
    split: dict[str, Any],
    where: str = "splits",
    stratum: Callable[[Example], str] = lambda example: "",
) -> list[Example]:
    """The split's rows; asking for more than there are is an error, not a silent shrink."""
    how = split["take"]
    if how == "rest":
        return list(examples)
    n = split.get("n", len(examples))
    if n > len(examples):
        raise InvalidInput(f"n is {n} but only {len(examples)} rows are left for this split", where=where)
    if how == "first":
        return examples[:n]
    if how == "last":
        return examples[len(examples) - n :]
    rng = random.Random(split["seed"])
    if how == "random":
        return rng.sample(examples, n)
    return _stratified(examples, n, rng, stratum)


def _stratified(
    examples: list[Example], n: int, rng: random.Random, stratum: Callable[[Example], str]
) -> list[Example]:
    """n examples with each stratum's share as in the pool (largest remainders get the rounding)."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[stratum(example)].append(example)
    quotas = {label: n * len(group) / len(examples) for label, group in by_label.items()}
    counts = {label: int(quota) for label, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda label: (quotas[label] - counts[label], label), reverse=True)
    for label in by_remainder[: n - sum(counts.values())]:
        counts[label] += 1
    chosen = [example for label in sorted(by_label) for example in rng.sample(by_label[label], counts[label])]
    rng.shuffle(chosen)
    return chosen
