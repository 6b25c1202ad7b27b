"""`specrun init DATA_FILE`: a commented spec and prompt template for a dataset, ready to validate.

Teams start from their own data, not from TNEWS. init reads the file with the readers a run uses
(runner/data/dataset.py), guesses what a person would otherwise look up by hand (the format, the text
field, the label field or the entity types, with counts) and writes `<name>.yaml` and
`templates/<name>.jinja`. Every guess is printed, each can be overridden by a flag, and a guess
it cannot make is exit 2 naming the flag. Defaults in the comments are read from the schema, their
one home, so the comments cannot drift from what a run does.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape

from runner.config.defaults import FORMAT_BY_SUFFIX
from runner.config.schema import spec_schema
from runner.config.spec import load_spec
from runner.core.errors import EXIT_OK, InvalidInput, RuntimeFailure
from runner.data.dataset import read_rows
from runner.pipeline import prepare
from runner.tasks import task_class, task_names
from runner.tasks.common import Guess, yaml_scalar

GENERIC_STEMS = {"train", "dev", "test", "data", "eval", "validation", "valid", "all"}
TRAIN_N, EVAL_N, SEED = 100, 200, 42  # small enough for a first run on a CPU; the comments say how to grow them


def init_command(args: Any, console: Any) -> int:
    """Write the spec and template `args` ask for and print what was guessed."""
    resolved(args.data, "DATA_FILE")
    resolved(args.out, "--out")
    name = args.name or spec_name(args.data)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InvalidInput(f"--name {name!r}: use letters, digits, '_', '.', '-' (it names the run folder)")
    guess = guess_dataset(args.data, args.task, args.text_field, args.label_field)
    spec_path, template_path = write_scaffold(guess, name, args.out, force=args.force)
    what = guess.counted
    console.print(  # data, not rich markup: a label "[/]" or a path "[x].jsonl" is printed as it is
        escape(
            f"{guess.path}: {guess.n_rows + len(guess.empty_rows)} rows, format {guess.fmt}, task {guess.task}, text field {guess.text_field!r}"
            + "".join(f", {what_field} {value!r}" for what_field, value in guess.fields.items())
        ),
        highlight=False,
    )
    console.print(
        escape(f"{len(guess.counts)} {what}: " + ", ".join(f"{k} ({v})" for k, v in guess.counts.most_common())),
        highlight=False,
    )
    if guess.empty_rows:
        rows = ", ".join(map(str, guess.empty_rows[:10])) + (" …" if len(guess.empty_rows) > 10 else "")
        console.print(
            f"[yellow]{len(guess.empty_rows)} row(s) without text[/] (row {escape(rows)}): validate and run drop "
            "them, as there is nothing to classify",
            highlight=False,
        )
    for answer, note in guess.notes.items():
        console.print(escape(f"label {answer!r} -> {guess.words.get(answer, answer)!r}: {note}"), highlight=False)
    console.print(
        f"[green]wrote[/] {escape(f'{spec_path} and {template_path}; next: specrun validate {shell_path(spec_path)}')}",
        highlight=False,
    )
    return EXIT_OK


def resolved(path: Path, flag: str) -> Path:
    """The absolute path, or exit 2 naming the flag: a symlink loop (or a path too long to resolve) is bad
    input, and would otherwise surface as a traceback from Path.resolve or mkdir."""
    try:
        found = path.resolve()
        if os.path.lexists(found):
            os.stat(found)  # a loop the resolver left as it was is ELOOP here
    except (OSError, RuntimeError) as error:
        loop = isinstance(error, RuntimeError) or getattr(error, "errno", None) == errno.ELOOP
        why = "a symlink loop" if loop else getattr(error, "strerror", None) or str(error)
        raise InvalidInput(f"{flag} {path}: cannot be resolved ({why})") from None
    return found


def shell_path(path: Path) -> str:
    """The path as typed at the prompt where init ran: relative to it when inside it, quoted for a shell when
    needed; a name no shell line can hold (a line break) is shown escaped, as YAML would."""
    here, target = Path.cwd().resolve(), path.resolve()
    shown = str(target.relative_to(here)) if target.is_relative_to(here) else str(target)
    quoted = shlex.quote(shown)
    return quoted if quoted.isprintable() else yaml_scalar(shown)


def spec_name(data: Path) -> str:
    """The file's stem, with its folder's name in front when the stem says nothing (train.json)."""
    stem = (
        data.stem
        if data.stem.lower() not in GENERIC_STEMS
        else f"{resolved(data, 'DATA_FILE').parent.name}_{data.stem}"
    )
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("_.-") or "data"


# Reading and guessing


def detect_container(path: Path) -> str:
    """jsonl, json (an array), csv or tsv: the suffix first, then the first character for .json and the unknown."""
    by_suffix = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if by_suffix in ("csv", "tsv", "conll"):
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
    numbered = read_rows(path, container)  # a bad line is exit 2 naming file:line
    rows = [row for _, row in numbered]
    if not rows:
        raise InvalidInput("the file has no rows: init needs rows to guess from", where=str(path))
    for number, (line, row) in enumerate(numbered, 1):
        if not isinstance(row, dict):
            raise InvalidInput(f"row {number} is {type(row).__name__}, not an object with fields", where=str(path))
        if container in ("csv", "tsv") and (None in row or None in row.values()):
            # The CSV reader files extra cells under None and fills missing ones with None: the row's cells no
            # longer line up with the header, and a run would read the wrong text or label without a word.
            more = len(row[None]) if None in row else 0
            shape = f"{more} more field(s) than" if more else "fewer fields than"
            quote = "; quote a field that holds a comma" if container == "csv" and more else ""
            raise InvalidInput(f"row {number} has {shape} the header{quote}", where=f"{path}:{line}")
    flags = {"text_field": text_field, "label_field": label_field}
    if task:
        found = task_class(task).guess(path, rows, container, {**flags, "claimed": True})
        if found is None:
            raise InvalidInput(f"these rows are not {task} data", where=str(path))
        return found
    for name in sorted(task_names(), key=lambda name: task_class(name).guess_order):
        if found := task_class(name).guess(path, rows, container, flags):
            return found
    raise InvalidInput(f"cannot tell the task from the rows; pass --task ({', '.join(task_names())})", where=str(path))


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
    spec_text = render_spec(guess, name, data_path.as_posix(), f"templates/{name}.jinja", shell_path(spec_path))
    yaml.safe_load(spec_text)  # what is written must read back (a bug here is a traceback, not a user error)
    before = {path: path.read_bytes() if path.is_file() else None for path in (spec_path, template_path)}
    try:
        template_path.parent.mkdir(parents=True, exist_ok=True)
        template_path.write_text(render_template(guess), encoding="utf-8")
        spec_path.write_text(spec_text, encoding="utf-8")
    except OSError as error:  # a file where the folder should be, no permission: exit 3, as for run --out
        raise RuntimeFailure(f"--out {out}: cannot write the spec there: {error.strerror or error}") from None
    try:  # the contract: what init writes, validate accepts as written; else nothing is left behind
        prepare(load_spec(spec_path))
    except InvalidInput as error:
        for path, content in before.items():
            path.unlink(missing_ok=True) if content is None else path.write_bytes(content)
        raise InvalidInput(f"init wrote no spec, as validate would refuse it: {error}", where=str(guess.path)) from None
    return spec_path, template_path


def _schema_defaults(*key_path: str) -> str:
    """`key=default, …` for one schema section: the defaults a spec gets when it leaves the keys out."""
    node = spec_schema()
    for key in key_path:
        node = node["properties"][key]
    found = [f"{key}={json.dumps(value['default'], ensure_ascii=False)}"
             for key, value in node.get("properties", {}).items() if "default" in value]  # fmt: skip
    return ", ".join(found)


def render_spec(guess: Guess, name: str, data_path: str, template: str, spec_shown: str) -> str:
    """The spec's text; `spec_shown` is the spec's path as typed where init ran, for the commands on top."""
    n = guess.n_rows
    train_n = max(1, min(TRAIN_N, n // 2))
    eval_n = max(1, min(EVAL_N, n - train_n))
    parts = task_class(guess.task).scaffold(guess)
    lines = [
        f"# {name}: written by `specrun init {yaml_scalar(guess.path.name)}`. Check every guess below, then, from",
        "# the folder init ran in:",
        f"#   specrun validate {spec_shown}     (reads the data, renders every prompt; loads no model)",
        f"#   specrun run {spec_shown} --limit 20     (a first look; drop --limit for the whole eval split)",
        "# Every key and default is documented in specrun's schemas/spec.schema.json.",
        f"name: {name}                       # names the run folder: runs/{name}/<timestamp>/",
        f"task: {guess.task}",
        "",
        "# data: the file every split is cut from; relative paths resolve against this spec.",
        f"# {n} rows read; defaults: {_schema_defaults('data')}",
        "data:",
        f"  path: {yaml_scalar(data_path)}",
        f"  format: {guess.fmt}",
        f"  text_fields: [{yaml_scalar(guess.text_field)}]   # joined with a newline into the template's `text`",
        *parts.data_lines,
        "",
        *parts.section,
        "",
        "# splits: train is taken first, then eval from what is left (never overlapping).",
        "# take: first|last|random|stratified|rest; n: rows; a split may read its own file with path.",
        "splits:",
        f"  train: {{take: random, n: {train_n}, seed: {SEED}}}   # fine-tuning, few-shot examples and the baseline",
        f"  eval: {{take: random, n: {eval_n}, seed: {SEED}}}",
        "",
        f"# prompt: the Jinja template rendered for each example (variables: text, record, examples, {parts.variables}).",
        "prompt:",
        f"  template: {yaml_scalar(template)}",
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
        f"  baseline: true                   # {parts.baseline} on the same train split",
        f"  gates: []                        # e.g. {parts.gates_example}",
        "",
    ]
    return "\n".join(lines)


def render_template(guess: Guess) -> str:
    """The user message; the comment on top renders as nothing (`-#}` eats the newline after it)."""
    parts = task_class(guess.task).scaffold(guess)
    header = (
        f"{{#- Written by specrun init. Variables: text, record (the raw row), examples (few-shot), {parts.template_variables}.\n"
        "    Rendered sandboxed with StrictUndefined: a misspelt variable is an error naming this line. -#}\n"
    )
    return header + parts.template + "\n"
