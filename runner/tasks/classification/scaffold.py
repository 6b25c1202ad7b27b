"""`specrun init` for classification: find the label and text fields, write labels: and the template."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path

from runner.core.errors import InvalidInput
from runner.tasks.classification.normalize import first_twins
from runner.tasks.common import Guess, Scaffold, mostly_chinese, yaml_key, yaml_scalar

LABEL_HINTS = ("label", "class", "category", "topic", "intent", "sentiment", "target", "tag")  # field names
MAX_LABELS = 200  # more distinct values than this is not a label set a prompt can list
LABEL_FIELD = "label field"  # Guess.fields key (and how init prints it)

TEMPLATES = {
    False: (
        'Classify the text into one of these categories: {{ labels | join(", ") }}.\n\n'
        "{% for example in examples %}Text: {{ example.text }}\nCategory: {{ example.label }}\n\n"
        "{% endfor %}Text: {{ text }}\nCategory:"
    ),
    True: (
        '对给定文本进行分类，类别包括：{{ labels | join("、") }}。\n\n'
        "{% for example in examples %}给定文本：\n{{ example.text }}\n类别：{{ example.label }}\n\n"
        "{% endfor %}给定文本：\n{{ text }}\n类别："
    ),
}


def guess(
    path: Path, rows: list[dict], container: str, task: str, text_field: str | None, label_field: str | None
) -> Guess:
    """Any table of rows can be classified: the catch-all, asked last; what it cannot find is exit 2 naming the flag."""
    fields = [key for key in dict.fromkeys(key for row in rows for key in row) if key != ""]  # a blank header cell
    for given, flag in ((text_field, "--text-field"), (label_field, "--label-field")):
        if given == "":
            raise InvalidInput(f"{flag} '': a spec cannot name a field without a name; rename it in the data")
        if given is not None and given not in fields:
            raise InvalidInput(f"{flag} {given!r}: no such field (fields: {', '.join(fields)})", where=str(path))
    label_field = label_field or _guess_label_field(path, rows, fields, exclude=text_field)
    text_field = text_field or _guess_text_field(path, rows, fields, exclude=label_field)
    counts: Counter = Counter()
    for number, row in enumerate(rows, 1):
        value = row.get(label_field)
        if value is None or isinstance(value, (dict, list)) or str(value) == "":
            raise InvalidInput(
                f"row {number} has no {label_field!r} label; remove it or pass another --label-field", where=str(path)
            )
        counts[str(value)] += 1
    if len(counts) < 2:
        raise InvalidInput(f"field {label_field!r} holds one label only: classification needs two", where=str(path))
    if twins := first_twins({label: (label,) for label in counts}):  # validate would refuse the spec
        raise InvalidInput(
            f"labels {twins[0]!r} and {twins[1]!r} differ only in case, width or edges, so no answer can tell "
            "them apart; merge them in the data",
            where=str(path),
        )
    texts = [str(row.get(text_field, "")) for row in rows]
    return Guess(  # the spec's data.format for classification is the container
        path,
        container,
        task,
        len(rows),
        text_field,
        counts,
        "labels",
        mostly_chinese(texts),
        {LABEL_FIELD: label_field},
    )


def _strings(rows: list[dict], name: str) -> list[str]:
    """The field's values that can be a label or a text (strings, and numbers as the CSV reader would see them)."""
    return [str(row[name]) for row in rows if isinstance(row.get(name), (str, int)) and not isinstance(row[name], bool)]


def _guess_label_field(path: Path, rows: list[dict], fields: list[str], exclude: str | None) -> str:
    """A field every row has, with few distinct values for the rows; a label-like name, then words, decide."""
    candidates, incomplete = [], []
    for name in fields:
        values = _strings(rows, name)
        distinct = len(set(values))
        if name == exclude or not 2 <= distinct <= min(MAX_LABELS, max(2, len(rows) // 2)):
            continue
        if len(values) < len(rows):  # a label field with a gap: say which row, or the user is left guessing
            lacking = next(n for n, row in enumerate(rows, 1) if not _strings([row], name))
            incomplete.append(f"{name!r} would fit but row {lacking} has no text or number there")
            continue
        hinted = any(hint in name.lower() for hint in LABEL_HINTS)
        words = not all(re.fullmatch(r"-?\d+", value) for value in values)
        candidates.append(((hinted, words), distinct, name))
    if not candidates:
        raise InvalidInput(
            f"cannot guess the label field: no field has a few distinct values for {len(rows)} rows "
            f"(fields: {', '.join(fields)}{'; ' if incomplete else ''}{'; '.join(incomplete)}); pass --label-field",
            where=str(path),
        )
    candidates.sort(key=lambda c: c[0], reverse=True)
    tied = [c for c in candidates if c[0] == candidates[0][0]]
    if len(tied) > 1:
        names = ", ".join(f"{name!r} ({distinct} values)" for _, distinct, name in tied)
        raise InvalidInput(f"cannot tell the label field: {names} fit equally; pass --label-field", where=str(path))
    return candidates[0][2]


def _guess_text_field(path: Path, rows: list[dict], fields: list[str], exclude: str | None) -> str:
    """The string field with the longest average length: headlines, reviews and sentences outrun ids and tags."""
    lengths = {}
    for name in fields:
        values = [row[name] for row in rows if isinstance(row.get(name), str)]
        if name != exclude and values:
            lengths[name] = statistics.fmean(len(value) for value in values)
    if not lengths:
        raise InvalidInput(f"cannot guess the text field: no string field besides {exclude!r}; pass --text-field",
                           where=str(path))  # fmt: skip
    return max(lengths, key=lambda name: lengths[name])


def _answer_words(labels: list[str]) -> dict[str, str]:
    """The word the model answers with: the label, less a prefix every label shares (news_tech → tech)."""
    prefix = labels[0]
    for label in labels[1:]:
        while not label.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind("_") + 1]  # whole words only: news_ of news_tech, not the t of tech and toys
    words = {label: label[len(prefix) :] or label for label in labels}
    return words if len(set(words.values())) == len(words) else {label: label for label in labels}


def scaffold(found: Guess) -> Scaffold:
    words = _answer_words(list(found.counts))
    rare = [label for label, count in found.counts.items() if count < max(5, found.n_rows // 100)]
    data_lines = [f"  label_field: {yaml_scalar(found.fields.get(LABEL_FIELD) or '')}"]
    if rare:
        data_lines.append(
            f"  # exclude_labels: [{', '.join(map(yaml_scalar, rare))}]   # too few rows to learn or score"
        )
    section = [
        "# labels: dataset label -> the word the model sees and answers with, in the prompt's order.",
        f"# {len(found.counts)} labels found (rows each); give numeric or cryptic labels real words.",
        "labels:",
        *(
            f"  {yaml_key(label)}: {yaml_scalar(words[label])}   # {count}"
            for label, count in found.counts.most_common()
        ),
    ]
    return Scaffold(
        data_lines=data_lines,
        section=section,
        variables="labels",
        template_variables="labels",
        baseline="char TF-IDF + logistic regression",
        gates_example="['accuracy >= 0.4', 'zero_shot.macro_f1 > baseline.macro_f1']",
        template=TEMPLATES[found.chinese],
    )
