"""`specrun init DATA_FILE`: a commented spec and prompt template for a dataset, ready to validate.

Teams start from their own data, not from TNEWS. init reads the file with the readers a run uses
(runner/data/dataset.py), guesses what a person would otherwise look up by hand (the format, the text
field, the label field or the entity types, with counts) and writes `<name>.yaml` and
`templates/<name>.jinja`. Every guess is printed, each can be overridden by a flag, and a guess
it cannot make is exit 2 naming the flag. Defaults in the comments are read from the schema, their
one home, so the comments cannot drift from what a run does.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape

from runner.config.defaults import FORMAT_BY_SUFFIX, SCHEMA_PATH
from runner.core.errors import EXIT_OK, InvalidInput, RuntimeFailure
from runner.data.dataset import read_rows
from runner.tasks.classification.normalize import first_twins
from runner.tasks.extraction import _cluener_entities, _listed_entities, detect_format

LABEL_HINTS = ("label", "class", "category", "topic", "intent", "sentiment", "target", "tag")  # field names
MAX_LABELS = 200  # more distinct values than this is not a label set a prompt can list
GENERIC_STEMS = {"train", "dev", "test", "data", "eval", "validation", "valid", "all"}
TRAIN_N, EVAL_N, SEED = 100, 200, 42  # small enough for a first run on a CPU; the comments say how to grow them


@dataclass
class Guess:
    """What init found in the data; each field is either guessed or given by a flag."""

    path: Path
    fmt: str  # the spec's data.format: jsonl, json, csv, tsv, cluener, entities
    task: str
    n_rows: int
    text_field: str
    label_field: str | None = None  # classification
    counts: Counter = field(default_factory=Counter)  # label (or entity type) -> rows (or mentions)
    chinese: bool = False


def init_command(args: Any, console: Any) -> int:
    """Write the spec and template `args` ask for and print what was guessed."""
    name = args.name or spec_name(args.data)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InvalidInput(f"--name {name!r}: use letters, digits, '_', '.', '-' (it names the run folder)")
    guess = guess_dataset(args.data, args.task, args.text_field, args.label_field)
    spec_path, template_path = write_scaffold(guess, name, args.out, force=args.force)
    what = "labels" if guess.task == "classification" else "entity types"
    console.print(  # data, not rich markup: a label "[/]" or a path "[x].jsonl" is printed as it is
        escape(
            f"{guess.path}: {guess.n_rows} rows, format {guess.fmt}, task {guess.task}, text field {guess.text_field!r}"
            + (f", label field {guess.label_field!r}" if guess.label_field else "")
        ),
        highlight=False,
    )
    console.print(
        escape(f"{len(guess.counts)} {what}: " + ", ".join(f"{k} ({v})" for k, v in guess.counts.most_common())),
        highlight=False,
    )
    console.print(
        f"[green]wrote[/] {escape(f'{spec_path} and {template_path}; next: specrun validate {spec_path}')}",
        highlight=False,
    )
    return EXIT_OK


def spec_name(data: Path) -> str:
    """The file's stem, with its folder's name in front when the stem says nothing (train.json)."""
    stem = data.stem if data.stem.lower() not in GENERIC_STEMS else f"{data.resolve().parent.name}_{data.stem}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("_.-") or "data"


# Reading and guessing


def detect_container(path: Path) -> str:
    """jsonl, json (an array), csv or tsv: the suffix first, then the first character for .json and the unknown."""
    by_suffix = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if by_suffix in ("csv", "tsv"):
        return by_suffix
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    except OSError as error:
        raise InvalidInput(f"cannot read the data file: {error.strerror or error}", where=str(path)) from None
    if not head:
        raise InvalidInput("the file is empty: init needs rows to guess from", where=str(path))
    if head.startswith("["):
        return "json"
    if head.startswith("{") or by_suffix:
        return "jsonl"
    return "tsv" if "\t" in head.splitlines()[0] else "csv"  # a header line: tabs say TSV


def guess_dataset(
    path: Path, task: str | None = None, text_field: str | None = None, label_field: str | None = None
) -> Guess:
    container = detect_container(path)
    rows = [row for _, row in read_rows(path, container)]  # a bad line is exit 2 naming file:line
    if not rows:
        raise InvalidInput("the file has no rows: init needs rows to guess from", where=str(path))
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise InvalidInput(f"row {number} is {type(row).__name__}, not an object with fields", where=str(path))
    entity_format = _entity_format(rows, path) if container not in ("csv", "tsv") else None
    task = task or ("extraction" if entity_format else "classification")
    if task == "extraction":
        if entity_format is None:
            raise InvalidInput(
                "extraction needs rows with entities (CLUENER's label: {type: {text: [[start, end]]}} or entities: "
                "[{type, start, end}]); none found",
                where=str(path),
            )
        return _guess_extraction(path, rows, entity_format, text_field)
    return _guess_classification(path, rows, container, text_field, label_field)


def _entity_format(rows: list[dict[str, Any]], path: Path) -> str | None:
    """cluener or entities when some row carries entities (a CLUENER row without any may omit its label)."""
    for row in rows:
        if isinstance(row.get("label"), dict) or isinstance(row.get("entities"), list):
            return detect_format(row, str(path))
    return None


def _guess_extraction(path: Path, rows: list[dict], fmt: str, text_field: str | None) -> Guess:
    text_field = text_field or "text"
    counts: Counter = Counter()
    for number, row in enumerate(rows, 1):
        where = f"{path}:{number}"
        if text_field not in row:
            raise InvalidInput(f"no field {text_field!r} here; pass --text-field", where=where)
        spans = _cluener_entities(row, where) if fmt == "cluener" else _listed_entities(row, where)
        counts.update(entity_type for entity_type, *_ in spans)
    if not counts:
        raise InvalidInput("no entities in any row: nothing to extract", where=str(path))
    texts = [str(row[text_field]) for row in rows]
    return Guess(path, fmt, "extraction", len(rows), text_field, counts=counts, chinese=_mostly_chinese(texts))


def _guess_classification(
    path: Path, rows: list[dict], container: str, text_field: str | None, label_field: str | None
) -> Guess:
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
    fmt = container  # the spec's data.format for classification is the container
    texts = [str(row.get(text_field, "")) for row in rows]
    return Guess(path, fmt, "classification", len(rows), text_field, label_field, counts, _mostly_chinese(texts))


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


def _mostly_chinese(texts: list[str]) -> bool:
    sample = "".join(texts[:200])
    han = sum("\u4e00" <= char <= "\u9fff" for char in sample)
    return bool(sample) and han / len(sample) > 0.3


# Writing


def write_scaffold(guess: Guess, name: str, out: Path, *, force: bool = False) -> tuple[Path, Path]:
    """`out/<name>.yaml` and `out/templates/<name>.jinja`; either already there is exit 2 without --force."""
    spec_path, template_path = out / f"{name}.yaml", out / "templates" / f"{name}.jinja"
    for path in (spec_path, template_path):
        if path.exists() and not force:
            raise InvalidInput("already exists; pass --force to overwrite it", where=str(path))
    data, folder = guess.path.resolve(), out.resolve()
    # Relative (as a repository keeps spec and data side by side) unless the two share nothing but the root.
    shared = Path(os.path.commonpath([data, folder]))
    data_path = Path(os.path.relpath(data, folder)) if shared != Path(shared.anchor) else data
    spec_text = render_spec(guess, name, data_path.as_posix(), f"templates/{name}.jinja")
    yaml.safe_load(spec_text)  # what is written must read back (a bug here is a traceback, not a user error)
    try:
        template_path.parent.mkdir(parents=True, exist_ok=True)
        template_path.write_text(render_template(guess), encoding="utf-8")
        spec_path.write_text(spec_text, encoding="utf-8")
    except OSError as error:  # a file where the folder should be, no permission: exit 3, as for run --out
        raise RuntimeFailure(f"--out {out}: cannot write the spec there: {error.strerror or error}") from None
    return spec_path, template_path


def _schema_defaults(*key_path: str) -> str:
    """`key=default, …` for one schema section: the defaults a spec gets when it leaves the keys out."""
    node = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    for key in key_path:
        node = node["properties"][key]
    found = [f"{key}={json.dumps(value['default'], ensure_ascii=False)}"
             for key, value in node.get("properties", {}).items() if "default" in value]  # fmt: skip
    return ", ".join(found)


def _scalar(value: str) -> str:
    """A YAML scalar that reads back as this exact string (quoted when bare YAML would read a number, a bool…).
    Quoted by YAML itself, not JSON: YAML reads U+2028, U+0085 as line breaks and refuses U+007F or U+FFFF
    unescaped, which JSON leaves raw; it escapes them. One line, so it is also safe inside a comment."""
    bare = re.fullmatch(r"[^\W\d][\w./-]*", value) is not None
    if bare and yaml.safe_load(value) == value:
        return value
    return yaml.safe_dump(value, default_style='"', allow_unicode=True, width=float("inf")).rstrip("\n")


def _key(value: str) -> str:
    """A mapping key: YAML's implicit keys stop at 1024 characters, so a longer one is written explicit (`? key`)."""
    text = _scalar(value)
    return text if len(text) < 1000 else f"? {text}\n  "


def _answer_words(labels: list[str]) -> dict[str, str]:
    """The word the model answers with: the label, less a prefix every label shares (news_tech → tech)."""
    prefix = labels[0]
    for label in labels[1:]:
        while not label.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind("_") + 1]  # whole words only: news_ of news_tech, not the t of tech and toys
    words = {label: label[len(prefix) :] or label for label in labels}
    return words if len(set(words.values())) == len(words) else {label: label for label in labels}


def render_spec(guess: Guess, name: str, data_path: str, template: str) -> str:
    n = guess.n_rows
    train_n = max(1, min(TRAIN_N, n // 2))
    eval_n = max(1, min(EVAL_N, n - train_n))
    classification = guess.task == "classification"
    lines = [
        f"# {name}: written by `specrun init {_scalar(guess.path.name)}`. Check every guess below, then:",
        f"#   specrun validate {name}.yaml        (reads the data, renders every prompt; loads no model)",
        f"#   specrun run {name}.yaml --limit 20  (a first look; drop --limit for the whole eval split)",
        "# Every key and default is documented in specrun's schemas/spec.schema.json.",
        f"name: {name}                       # names the run folder: runs/{name}/<timestamp>/",
        f"task: {guess.task}",
        "",
        "# data: the file every split is cut from; relative paths resolve against this spec.",
        f"# {n} rows read; defaults: {_schema_defaults('data')}",
        "data:",
        f"  path: {_scalar(data_path)}",
        f"  format: {guess.fmt}",
        f"  text_fields: [{_scalar(guess.text_field)}]   # joined with a newline into the template's `text`",
    ]
    if classification:
        words = _answer_words(list(guess.counts))
        rare = [label for label, count in guess.counts.items() if count < max(5, n // 100)]
        lines.append(f"  label_field: {_scalar(guess.label_field or '')}")
        if rare:
            lines.append(f"  # exclude_labels: [{', '.join(map(_scalar, rare))}]   # too few rows to learn or score")
        lines += [
            "",
            "# labels: dataset label -> the word the model sees and answers with, in the prompt's order.",
            f"# {len(guess.counts)} labels found (rows each); give numeric or cryptic labels real words.",
            "labels:",
        ]
        lines += [
            f"  {_key(label)}: {_scalar(words[label])}   # {count}" for label, count in guess.counts.most_common()
        ]
    else:
        lines += [
            "",
            "# entities: dataset entity type -> the name the model sees and answers with,",
            "# or {name, description} with a one-line description for the prompt.",
            f"# {len(guess.counts)} entity types found (mentions each).",
            "entities:",
        ]
        lines += [f"  {_key(t)}: {_scalar(t)}   # {count}" for t, count in guess.counts.most_common()]
    lines += [
        "",
        "# splits: train is taken first, then eval from what is left (never overlapping).",
        "# take: first|last|random|stratified|rest; n: rows; a split may read its own file with path.",
        "splits:",
        f"  train: {{take: random, n: {train_n}, seed: {SEED}}}   # fine-tuning, few-shot examples and the baseline",
        f"  eval: {{take: random, n: {eval_n}, seed: {SEED}}}",
        "",
        "# prompt: the Jinja template rendered for each example (variables: text, record, examples, "
        + ("labels)." if classification else "entity_types, answer_format)."),
        "prompt:",
        f"  template: {_scalar(template)}",
        "",
        "# provider: who answers. local is the embedded gemma-3-270m: no key, no network.",
        "# openai, zhipuai, openai_compatible take model (and base_url, api_key_env).",
        f"# defaults: {_schema_defaults('provider')}",
        "provider:",
        "  name: local",
        "",
        "# checks: the model whose tokenizer, training-token limit and prices the data checks use.",
        f"# defaults: {_schema_defaults('checks')}",
        "checks:",
        "  model: gpt-4o-mini-2024-07-18",
        "",
        "# fine_tune: off for a first run; enabled: true fine-tunes (LoRA on the local model) and",
        "# evaluation.modes can then add fine_tuned.",
        f"# defaults: {_schema_defaults('fine_tune')}",
        "fine_tune:",
        "  enabled: false",
        "",
        "# evaluation: which rows the report compares, and the gates that decide the exit code (1 = a gate failed).",
        f"# defaults: {_schema_defaults('evaluation')}",
        "evaluation:",
        "  modes: [zero_shot]               # also few_shot, fine_tuned",
        f"  baseline: true                   # {'char TF-IDF + logistic regression' if classification else 'a character CRF'} on the same train split",
        "  gates: []                        # e.g. "
        + (
            "['accuracy >= 0.4', 'zero_shot.macro_f1 > baseline.macro_f1']"
            if classification
            else "['entity_f1 >= 0.3']"
        ),
        "",
    ]
    return "\n".join(lines)


CLASSIFICATION_TEMPLATES = {
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
EXTRACTION_TEMPLATES = {
    False: (
        "Extract the entities in the text. Entity types: {% for t in entity_types %}{{ t.name }}"
        "{% if t.description %} ({{ t.description }}){% endif %}{% if not loop.last %}, {% endif %}{% endfor %}.\n"
        "Answer in JSON, e.g. {{ answer_format }}; leave out types the text lacks, and answer {} when there are none.\n\n"
        "{% for example in examples %}Text: {{ example.text }}\nEntities: {{ example.answer }}\n\n"
        "{% endfor %}Text: {{ text }}\nEntities:"
    ),
    True: (
        "请抽取给定文本中的实体，实体类型包括：{% for t in entity_types %}{{ t.name }}"
        "{% if t.description %}（{{ t.description }}）{% endif %}{% if not loop.last %}、{% endif %}{% endfor %}。\n"
        "用JSON回答，例如 {{ answer_format }}；文本中没有的类型不写，没有实体时回答 {}。\n\n"
        "{% for example in examples %}文本：{{ example.text }}\n实体：{{ example.answer }}\n\n"
        "{% endfor %}文本：{{ text }}\n实体："
    ),
}


def render_template(guess: Guess) -> str:
    """The user message; the comment on top renders as nothing (`-#}` eats the newline after it)."""
    variables = "labels" if guess.task == "classification" else "entity_types ({name, description}), answer_format"
    header = (
        f"{{#- Written by specrun init. Variables: text, record (the raw row), examples (few-shot), {variables}.\n"
        "    Rendered sandboxed with StrictUndefined: a misspelt variable is an error naming this line. -#}\n"
    )
    body = (CLASSIFICATION_TEMPLATES if guess.task == "classification" else EXTRACTION_TEMPLATES)[guess.chinese]
    return header + body + "\n"
