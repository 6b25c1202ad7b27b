"""`specrun init` for classification: find the label and text fields, write labels: and the template."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from pathlib import Path

from runner.core.errors import InvalidInput
from runner.tasks.classification.normalize import first_twins, fold
from runner.tasks.common import Guess, Scaffold, mostly_chinese, readable_word, word_problem, yaml_key, yaml_scalar

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
    if text_field is not None and text_field == label_field:
        raise InvalidInput(f"--text-field and --label-field are both {text_field!r}: the prompt would show the answer")
    label_field = label_field or _guess_label_field(path, rows, fields, exclude=text_field)
    text_field = text_field or _guess_text_field(path, rows, fields, exclude=label_field)
    counts: Counter = Counter()
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows, 1):
        value = row.get(label_field)
        if value is None or isinstance(value, (dict, list)) or str(value) == "":
            raise InvalidInput(
                f"row {number} has no {label_field!r} label; remove it or pass another --label-field", where=str(path)
            )
        counts[str(value)] += 1
        first_row.setdefault(str(value), number)
    if len(counts) < 2:
        raise InvalidInput(f"field {label_field!r} holds one label only: classification needs two", where=str(path))
    if len(counts) > MAX_LABELS:  # given by the flag: no prompt can list them, and no run could learn them
        raise InvalidInput(
            f"--label-field {label_field!r} holds {len(counts)} distinct values; a prompt cannot list more than "
            f"{MAX_LABELS} labels: pass the field that holds the classes",
            where=str(path),
        )
    if twins := first_twins({label: (label,) for label in counts}):  # validate would refuse the spec
        raise InvalidInput(
            f"labels {twins[0]!r} and {twins[1]!r} differ only in case, width or edges, so no answer can tell "
            "them apart; merge them in the data",
            where=str(path),
        )
    texts = [_text_of(row.get(text_field)) for row in rows]
    empty = [number for number, text in enumerate(texts, 1) if not text.strip()]
    if len(rows) - len(empty) < 2:
        raise InvalidInput(
            f"{len(rows) - len(empty)} of {len(rows)} rows have text in {text_field!r}: a first run needs two "
            "(one to train on, one to evaluate)",
            where=str(path),
        )
    chinese = mostly_chinese(texts)
    words, notes = _label_words(path, counts, first_row, texts, [str(row.get(label_field)) for row in rows], chinese)
    return Guess(  # the spec's data.format for classification is the container
        path,
        container,
        task,
        len(rows) - len(empty),
        text_field,
        counts,
        "labels",
        chinese,
        {LABEL_FIELD: label_field},
        empty_rows=empty,
        words=words,
        notes=notes,
    )


def _text_of(value: object) -> str:
    """A row's text as a run reads it (None and containers read as no text here; validate names them)."""
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


def _label_words(
    path: Path, counts: Counter, first_row: dict[str, int], texts: list[str], golds: list[str], chinese: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """label -> the word the model answers with, and label -> a note for the spec's comment.

    The word is the label less a shared prefix, else the label, made one visible line (invisible characters
    dropped, line breaks and runs of spaces one space); a label with nothing visible left is exit 2 naming its
    row. Numeric labels (1/0) get the most distinctive word of their rows when one stands out clearly."""
    labels = list(counts)
    stripped = _answer_words(labels)
    words: dict[str, str] = {}
    for label in labels:
        word = next((w for w in map(readable_word, (stripped[label], label)) if w and not word_problem(w)), None)
        if word is None:
            raise InvalidInput(
                f"row {first_row[label]}: label {label!r} has no visible text a model could answer with "
                "(only spaces, line breaks or invisible characters); rename it in the data",
                where=str(path),
            )
        words[label] = word
    notes: dict[str, str] = {}
    if all(re.fullmatch(r"-?\d+", label) for label in labels):
        suggested = distinctive_words(texts, golds, chinese)
        taken = {fold(word) for word in words.values()}
        for label in labels:
            found = suggested.get(label, [])
            if found and fold(found[0]) not in taken:
                words[label] = found[0]
                taken.add(fold(found[0]))
                notes[label] = f"suggested: most distinctive in its rows ({', '.join(found)}); check it"
            else:
                notes[label] = f"no word stands out in its rows: write what {label} means, e.g. {label}: positive"
    if twins := first_twins({label: (label, words[label]) for label in labels}):
        raise InvalidInput(
            f"labels {twins[0]!r} (row {first_row[twins[0]]}) and {twins[1]!r} (row {first_row[twins[1]]}) would be "
            f"answered the same once case, width and edges are folded ({twins[2]!r}); "
            "merge or rename them in the data",
            where=str(path),
        )
    return words, notes


MIN_SHARE = 0.05  # a suggested word must appear in at least this share of its class's rows (and 3 rows)
MIN_LOG_ODDS = 1.0  # and be e (2.7) times likelier, in odds, in its class than in the others


def distinctive_words(texts: list[str], golds: list[str], chinese: bool, top: int = 3) -> dict[str, list[str]]:
    """label -> up to `top` words (Han characters and pairs, or Latin words) most distinctive of its rows, by
    the log-odds ratio of a row having the word in this class against the others (add-½ smoothing); only
    words in enough rows and clearly more likely here count, so a small or balanced file suggests nothing."""
    rows_with: dict[str, Counter] = {}
    class_rows: Counter = Counter()
    for text, gold in zip(texts[:20_000], golds[:20_000], strict=False):
        if not text.strip():
            continue
        class_rows[gold] += 1
        rows_with.setdefault(gold, Counter()).update(set(_words(text, chinese)))
    everywhere: Counter = Counter()
    for counter in rows_with.values():
        everywhere.update(counter)
    total = sum(class_rows.values())
    found: dict[str, list[str]] = {}
    for label, counter in rows_with.items():
        inside, outside = class_rows[label], total - class_rows[label]
        if not outside:
            continue
        scored = []
        for word, k in counter.items():
            if k < max(3, MIN_SHARE * inside):
                continue
            p_in, p_out = (k + 0.5) / (inside + 1), (everywhere[word] - k + 0.5) / (outside + 1)
            log_odds = math.log(p_in / (1 - p_in)) - math.log(p_out / (1 - p_out))
            if log_odds >= MIN_LOG_ODDS:
                scored.append((log_odds, len(word), word))
        found[label] = [word for *_, word in sorted(scored, reverse=True)[:top]]
    return found


#: Words that can be distinctive of a class by chance of phrasing yet never name it: function words.
FUNCTION_WORDS = frozenset(
    "的了是在有我你他她它们这那也都就和很还又太个一上下到说要会能对把被让给与及等啊吧呢吗着过得地之其为以于而且但没无不再"
) | frozenset(
    [
        "the",
        "and",
        "was",
        "were",
        "are",
        "for",
        "with",
        "this",
        "that",
        "have",
        "has",
        "had",
        "not",
        "but",
        "you",
        "they",
        "she",
        "his",
        "her",
        "its",
        "our",
        "very",
        "too",
        "all",
        "there",
        "their",
        "them",
        "then",
        "than",
        "from",
        "what",
        "when",
        "which",
        "would",
        "could",
        "will",
        "just",
        "also",
        "been",
        "into",
        "about",
    ]
)


def _words(text: str, chinese: bool) -> list[str]:
    """Han characters and adjacent pairs for Chinese; lower-case Latin words of 3+ letters otherwise;
    function words left out."""
    if chinese:
        han = re.findall(r"[\u4e00-\u9fff]+", text)
        pairs = [run[i : i + 2] for run in han for i in range(len(run) - 1)]
        return [c for run in han for c in run if c not in FUNCTION_WORDS] + pairs
    return [word for word in re.findall(r"[^\W\d_]{3,}", text.casefold()) if word not in FUNCTION_WORDS]


def _rows_said(rows: list[int]) -> str:
    """'row 7 has' or 'rows 3, 9 and 2 more have' (a comment line stays short)."""
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return f"row {shown} has" if len(rows) == 1 else f"rows {shown} have"


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
    words = found.words or _answer_words(list(found.counts))
    rare = [label for label, count in found.counts.items() if count < max(5, found.n_rows // 100)]
    data_lines = [f"  label_field: {yaml_scalar(found.fields.get(LABEL_FIELD) or '')}"]
    if rare:
        data_lines.append(
            f"  # exclude_labels: [{', '.join(map(yaml_scalar, rare))}]   # too few rows to learn or score"
        )
    if found.empty_rows:
        them = "it" if len(found.empty_rows) == 1 else "them"
        data_lines.append(f"  # {_rows_said(found.empty_rows)} no text: runs drop {them} (nothing to classify)")
    section = [
        "# labels: dataset label -> the word the model sees and answers with, in the prompt's order.",
        f"# {len(found.counts)} labels found (rows each); give numeric or cryptic labels real words.",
        "labels:",
        *(
            f"  {yaml_key(label)}: {yaml_scalar(words[label])}   # {count}"
            + (f"; {found.notes[label]}" if label in found.notes else "")
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
