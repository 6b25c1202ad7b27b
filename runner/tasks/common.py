"""What every task type shares, so no task folder imports another: reading a row's text, naming the
model behind a row, the page's mistakes, `specrun init`'s guess and scaffold, provider capabilities."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.core.errors import InvalidInput


def join_text(row: dict[str, Any], fields: list[str], where: str) -> str:
    """The template's `text`: the named fields joined by newlines; a missing or null text is a data error."""
    parts = []
    for name in fields:
        value = row.get(name)
        if value is None:
            raise InvalidInput(f"field {name!r} is null; it must hold text", where=where)
        if isinstance(value, (dict, list)):
            raise InvalidInput(f"field {name!r} holds a {type(value).__name__}, not text", where=where)
        parts.append(str(value))
    return "\n".join(parts)


def model_of(row: str, manifest: dict[str, Any]) -> str:
    """The model that answered a mode's row: the fine-tuned one for fine_tuned rows."""
    if row.startswith("fine_tuned"):
        return (manifest.get("fine_tune") or {}).get("fine_tuned_model") or "fine-tuned model"
    return manifest["spec"]["provider"]["model"]


# The page's mistakes (runner/outputs/html.py shows them; each task finds its own)


@dataclass
class Mistake:
    text: str
    gold: str
    predicted: str
    confidence: float | None = None  # the model's probability for its (wrong) answer, among the labels
    gold_probability: float | None = None
    answer: str | None = None  # the raw generated answer, when there was one


@dataclass
class MistakeSet:
    row: str
    how: str  # a sentence saying how these were chosen
    total: int
    shown: list[Mistake]


def label_text(label: Any, names: dict[str, str]) -> str:
    """A gold or predicted answer for the page: 'news_tech (科技)'; None is an invalid answer."""
    if label is None:
        return "(invalid answer)"
    return f"{label} ({names[label]})" if label in names and names[label] != label else str(label)


def text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


# `specrun init` (runner/commands/init.py reads and writes; each task guesses and scaffolds its part)


@dataclass
class Guess:
    """What init found in the data; each field is either guessed or given by a flag."""

    path: Path
    fmt: str  # the spec's data.format
    task: str
    n_rows: int
    text_field: str
    counts: Counter = field(default_factory=Counter)  # answer (label, entity type...) -> rows or mentions
    counted: str = "answers"  # what counts counts, in words: "labels", "entity types"
    chinese: bool = False
    fields: dict[str, str] = field(default_factory=dict)  # other fields found, e.g. {"label field": "label"}
    empty_rows: list[int] = field(default_factory=list)  # rows (1-based) with no text: a run drops them
    words: dict[str, str] = field(default_factory=dict)  # answer -> the word the model sees, when init chose one
    notes: dict[str, str] = field(default_factory=dict)  # answer -> why that word (a comment in the spec)


@dataclass
class Scaffold:
    """A task's parts of the spec and template `specrun init` writes (YAML lines, already indented)."""

    data_lines: list[str]  # after data.text_fields
    section: list[str]  # the task's own top-level keys (labels:, entities:), with their comments
    variables: str  # the template's task variables, for the spec's comment: "labels"
    template_variables: str  # the same, for the template's header comment
    baseline: str  # what the baseline row is, in words
    gates_example: str  # a YAML list of gates for this task
    template: str  # the template body


def word_problem(word: str) -> str | None:
    """Why a model cannot answer with this word as written, or None. A word must be one line of visible
    text with no invisible character in it: a zero-width space or a direction mark is never typed back,
    and an answer read on one line can never match a word that spans two."""
    if any(char in word for char in "\r\n") or len(word.splitlines()) > 1:
        return "it spans lines"
    hidden = next((char for char in word if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co")), None)
    if hidden is not None:
        return f"it holds the invisible character U+{ord(hidden):04X}"
    if not any(unicodedata.category(char)[0] in "LNPS" for char in word):
        return "it has no visible character"
    return None


def readable_word(text: str) -> str:
    """`text` as a word a model can answer with: invisible characters dropped, runs of spaces and line
    breaks made one space, edges trimmed ('' when nothing visible is left)."""
    kept = "".join(
        char for char in text if unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Co") or char.isspace()
    )
    return " ".join(kept.split())


def mostly_chinese(texts: list[str]) -> bool:
    sample = "".join(texts[:200])
    han = sum("\u4e00" <= char <= "\u9fff" for char in sample)
    return bool(sample) and han / len(sample) > 0.3


def yaml_scalar(value: str) -> str:
    """A YAML scalar that reads back as this exact string (quoted when bare YAML would read a number, a bool…).
    Quoted by YAML itself, not JSON: YAML reads U+2028, U+0085 as line breaks and refuses U+007F or U+FFFF
    unescaped, which JSON leaves raw; it escapes them. One line, so it is also safe inside a comment."""
    bare = re.fullmatch(r"[^\W\d][\w./-]*", value) is not None
    if bare and yaml.safe_load(value) == value:
        return value
    return yaml.safe_dump(value, default_style='"', allow_unicode=True, width=float("inf")).rstrip("\n")


def yaml_key(value: str) -> str:
    """A mapping key: YAML's implicit keys stop at 1024 characters, so a longer one is written explicit (`? key`)."""
    text = yaml_scalar(value)
    return text if len(text) < 1000 else f"? {text}\n  "
