"""Load a spec: YAML -> --set overrides -> JSON Schema -> defaults -> semantic checks.

Every problem becomes one `InvalidInput` naming the file, the line and the key path, so a
user fixes the spec without reading a traceback, and nothing is loaded or spent before that.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from runner.config.defaults import apply_defaults
from runner.config.safe_yaml import load_value, load_yaml
from runner.config.schema import spec_schema
from runner.core.errors import InvalidInput
from runner.core.jsonl import read_text
from runner.core.tokens import encoding_name
from runner.providers.registry import capability, provider_class, provider_table
from runner.tasks import make_task, task_class, task_names, task_table

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
GATE_PATTERN = re.compile(
    r"^\s*(?P<left>[A-Za-z_][\w.]*)\s*(?P<op>>=|<=|>|<|==)\s*"
    rf"(?P<right>[A-Za-z_][\w.]*|{NUMBER})"
    rf"(?:\s*(?P<sign>[-+])\s*(?P<offset>{NUMBER}))?"
    r"(?:\s*+\(\s*+(?P<confidence>[^()%\s]*+)\s*+%\s*+\))?\s*$"  # possessive: linear time on any text
)
GATE_SYNTAX = (
    "'accuracy >= 0.4', 'fine_tuned.accuracy > zero_shot.accuracy + 0.02 (95%)', 'accuracy >= against.accuracy - 0.01'"
)
AGAINST = "against"  # the row prefix naming the run given with --against
PATH_KEYS = ("path", "template")  # --set values under these keys are paths relative to the working directory
# (and a provider's own `path_keys`)


@dataclass(frozen=True)
class Gate:
    """`[row.]metric op threshold [± offset] [(confidence%)]`.

    threshold is a number or a (row, metric) reference; with `against` true the reference names the
    run given with --against, and a None row there means the left side's row. confidence (a fraction)
    makes a gate pass only when the difference holds at that one-sided bootstrap confidence.
    """

    row: str | None  # None: the first evaluation mode's row
    metric: str
    op: str
    threshold: float | tuple[str | None, str]  # a number, or (row, metric) to compare against
    offset: float = 0.0  # added to a referenced threshold: 'against.accuracy - 0.01'
    confidence: float | None = None  # e.g. 0.95 for '(95%)'
    against: bool = False  # the threshold names the --against run

    @classmethod
    def parse(cls, text: str, where: str, metrics: tuple[str, ...]) -> Gate:
        match = GATE_PATTERN.match(text)
        if not match:
            raise InvalidInput(f"cannot read gate {text!r}; write it like {GATE_SYNTAX}", where=where)
        left, op, right = match["left"], match["op"], match["right"]
        row, metric = _split_metric(left, where, metrics)
        if row == AGAINST or (row or "").startswith(AGAINST + "."):
            raise InvalidInput(f"gate {text!r}: {AGAINST}.… goes on the right-hand side", where=where)
        offset = float(match["offset"]) * (-1 if match["sign"] == "-" else 1) if match["offset"] else 0.0
        against = False
        try:
            threshold: float | tuple[str | None, str] = float(right)
        except ValueError:
            threshold = _split_metric(right, where, metrics)
            ref_row = threshold[0] or ""
            if ref_row == AGAINST or ref_row.startswith(AGAINST + "."):
                against = True
                threshold = (ref_row.removeprefix(AGAINST).removeprefix(".") or None, threshold[1])
        else:
            if not math.isfinite(threshold):
                raise InvalidInput(f"gate {text!r} compares with {right}; use a finite number", where=where)
            if match["offset"]:
                raise InvalidInput(f"gate {text!r}: write the threshold as one number", where=where)
        if not math.isfinite(offset):
            raise InvalidInput(f"gate {text!r} adds {match['offset']}; use a finite number", where=where)
        if (isinstance(threshold, float) and not 0 <= threshold <= 1) or not -1 <= offset <= 1:
            raise InvalidInput(  # 'accuracy >= 40' never passes, 'invalid_rate < 5' always does
                f"gate {text!r}: every metric is a share from 0 to 1 (write 40% as 0.4)", where=where
            )
        confidence = None
        if match["confidence"] is not None:
            try:
                percent = float(match["confidence"])
            except ValueError:
                percent = math.nan
            if not 50 <= percent <= 99.9:
                raise InvalidInput(
                    f"gate {text!r}: confidence ({match['confidence']}%) must be a number from 50 to 99.9", where=where
                )
            if op == "==":
                raise InvalidInput(f"gate {text!r}: a confidence needs <, <=, > or >=, not ==", where=where)
            confidence = percent / 100
        return cls(row, metric, op, threshold, offset, confidence, against)

    def compares_itself(self, primary: str) -> bool:
        """'accuracy > zero_shot.accuracy' when zero_shot is the first mode: a gate that can never change.
        A gate without a row names the first mode's (`primary`)."""
        if not isinstance(self.threshold, tuple) or self.against or self.offset:
            return False
        return (self.row or primary, self.metric) == (self.threshold[0] or primary, self.threshold[1])


def _split_metric(ref: str, where: str, metrics: tuple[str, ...]) -> tuple[str | None, str]:
    row, _, metric = ref.rpartition(".")
    if metric not in metrics:
        raise InvalidInput(f"unknown metric {metric!r} in gate; this task's metrics: {', '.join(metrics)}", where=where)
    return (row or None), metric


@dataclass
class Spec:
    """A validated spec with defaults filled in and paths made absolute."""

    path: Path
    doc: dict[str, Any]
    lines: dict[tuple, int]
    overridden: list[tuple[str, ...]] = field(default_factory=list)  # key paths set with --set

    @property
    def name(self) -> str:
        return self.doc["name"]

    @property
    def task(self) -> str:
        return self.doc["task"]

    @property
    def data(self) -> dict[str, Any]:
        return self.doc["data"]

    @property
    def provider(self) -> dict[str, Any]:
        return self.doc["provider"]

    @property
    def evaluation(self) -> dict[str, Any]:
        return self.doc["evaluation"]

    @property
    def gates(self) -> list[Gate]:
        metrics = task_class(self.task).metrics
        return [
            Gate.parse(g, self.where("evaluation", "gates", i), metrics) for i, g in enumerate(self.evaluation["gates"])
        ]

    def where(self, *key_path: str | int) -> str:
        """'spec.yaml:12: evaluation.gates[0]' — the place a user should look (or the --set that set it)."""
        for given in self.overridden:
            if tuple(key_path[: len(given)]) == given:
                return f"--set {'.'.join(given)}: {format_key_path(key_path)}"
        line = None
        for depth in range(len(key_path), -1, -1):
            line = self.lines.get(tuple(key_path[:depth]))
            if line is not None:
                break
        location = f"{self.path}:{line}" if line else str(self.path)
        return f"{location}: {format_key_path(key_path)}" if key_path else location

    def hash(self) -> str:
        """Identifies what a run computes: the resolved spec plus the bytes of the files it names."""
        digest = hashlib.sha256(json.dumps(self.doc, sort_keys=True, ensure_ascii=False).encode())
        for file in self.files():
            digest.update(Path(file).read_bytes())
        return digest.hexdigest()

    def files(self) -> list[str]:
        """The dataset files, the files the provider section names (`Provider.path_keys`), then the
        template, in a fixed order."""
        paths = [self.data["path"]] if "path" in self.data else []
        paths += [split["path"] for split in self.doc["splits"].values() if "path" in split]
        provider = self.doc.get("provider") or {}
        paths += [provider[key] for key in _provider_path_keys(self.doc) if isinstance(provider.get(key), str)]
        return [*dict.fromkeys(paths), self.doc["prompt"]["template"]]


def format_key_path(key_path: tuple | list) -> str:
    text = ""
    for key in key_path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def load_spec(path: str | Path, overrides: list[str] | None = None, cell: dict[str, Any] | None = None) -> Spec:
    """cell: one combination of a `matrix:` spec (runner/commands/matrix.py), {dotted key: value}; the spec is
    loaded with those values set and without its `matrix`, so each cell validates and hashes on its own."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput("spec file not found", where=str(path))
    doc, lines = load_yaml(read_text(path, "spec file"), str(path))
    if not isinstance(doc, dict):
        raise InvalidInput("a spec must be a YAML mapping of keys to values", where=str(path))
    overridden = [_apply_override(doc, override, lines) for override in overrides or []]
    for key, value in (cell or {}).items():
        _apply_cell_value(doc, key, value, lines, f"{path}:{lines.get(('matrix', key), '?')}: matrix.{key}")
    spec = Spec(path=path.resolve(), doc=doc, lines=lines, overridden=overridden)
    _text_keys(spec)
    _validate_schema(spec)
    if cell is not None:
        doc.pop("matrix", None)  # a cell's hash is its own: adding a value to the matrix leaves finished cells finished
    _fill_defaults(spec)
    _check_semantics(spec)
    return spec


def _apply_override(doc: dict, override: str, lines: dict[tuple, int]) -> tuple[str, ...]:
    """Set one dotted key and return its key path. Paths given here are relative to the working
    directory, like any CLI path; errors about the key name the --set, not a spec line."""
    key, sep, raw_value = override.partition("=")
    if not sep or not key.strip():
        raise InvalidInput(f"--set {override!r}: write it as dotted.key=value")
    value = load_value(raw_value, f"--set {key.strip()}")
    parts = tuple(key.strip().split("."))
    is_path = parts[-1] in PATH_KEYS or (parts[:-1] == ("provider",) and parts[-1] in _provider_path_keys(doc))
    if is_path and isinstance(value, str) and value:
        value = resolved(Path(value), f"--set {key.strip()}")
    _set_dotted(doc, parts, value, lines, lambda message: InvalidInput(f"--set {override!r}: {message}"))
    return parts


def _apply_cell_value(doc: dict, key: str, value: Any, lines: dict[tuple, int], where: str) -> None:
    """Set a matrix key as if the spec said it (paths stay relative to the spec); errors point at the matrix line."""
    parts = tuple(key.split("."))
    line = lines.get(("matrix", key))
    _set_dotted(doc, parts, value, lines, lambda message: InvalidInput(message, where=where))
    if line is not None:
        lines[parts] = line


def _set_dotted(
    doc: dict, parts: tuple[str, ...], value: Any, lines: dict[tuple, int], error: Callable[[str], InvalidInput]
) -> None:
    """The one way a key is set from outside the spec file (--set, a matrix cell): parents are made as
    needed, and the spec's line numbers for the replaced key no longer apply."""
    target = doc
    for part in parts[:-1]:
        if not isinstance(target.get(part, {}), dict):
            raise error(f"{part!r} is not a mapping in the spec")
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    for stale in [p for p in lines if p[: len(parts)] == parts]:
        del lines[stale]


def _non_finite(value: Any, path: tuple = ()) -> tuple | None:
    """The key path of the first NaN or infinity in the spec: YAML's .nan/.inf pass every schema bound."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found = _non_finite(child, (*path, key))
        if found is not None:
            return found
    return None


def _text_keys(spec: Spec) -> None:
    """Keys naming dataset values (labels, entity types: each task's `text_keyed`) are text, as dataset
    values are read: YAML reads `102: 科技` (TNEWS's codes) as the number 102, which is taken as "102";
    a key YAML reads as true, null or a float would be guessed at, so it must be quoted."""
    for section in dict.fromkeys(key for name in task_names() for key in task_class(name).text_keyed):
        mapping = spec.doc.get(section)
        if not isinstance(mapping, dict) or all(isinstance(key, str) for key in mapping):
            continue
        text: dict[str, Any] = {}
        for key, value in mapping.items():
            if not isinstance(key, str) and (isinstance(key, bool) or not isinstance(key, int)):
                raise InvalidInput(
                    f"key {key!r} is not text (YAML reads unquoted true, null and decimals as values); quote the key",
                    where=spec.where(section, key),
                )
            if str(key) in text:
                raise InvalidInput(f"key {str(key)!r} is written twice", where=spec.where(section, key))
            text[str(key)] = value
        spec.doc[section] = text
        for path in [p for p in spec.lines if len(p) > 1 and p[0] == section and isinstance(p[1], int)]:
            spec.lines[(section, str(path[1]), *path[2:])] = spec.lines.pop(path)


def _validate_schema(spec: Spec) -> None:
    if (path := _non_finite(spec.doc)) is not None:
        raise InvalidInput("must be a finite number, not NaN or infinity", where=spec.where(*path))
    section = spec.doc.get("provider")
    task, provider = spec.doc.get("task"), section.get("name") if isinstance(section, dict) else None
    if isinstance(task, str) and task in task_table():
        task_class(task)  # a registered plugin that cannot be loaded says why, naming `task`
    if isinstance(provider, str) and provider in provider_table():
        provider_class(provider)
    validator = jsonschema.Draft202012Validator(spec_schema())
    errors = sorted(validator.iter_errors(spec.doc), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors)
    key_path = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})), key=str)
        allowed = ", ".join(error.schema.get("properties", {}))
        message = f"unknown key {unknown[0]!r} (allowed here: {allowed})"
        key_path = (*key_path, unknown[0])
    elif error.validator == "required":
        message = error.message.replace("is a required property", "is required")
    elif error.validator == "enum":
        message = f"{error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    elif error.validator == "oneOf":
        choices = " or ".join(_describe(choice) for choice in error.validator_value)
        message = f"{error.instance!r} is not valid here: expected {choices}"
    else:
        message = error.message
    raise InvalidInput(message, where=spec.where(*key_path))


def _describe(schema: dict[str, Any]) -> str:
    """One alternative of a oneOf, in words: 'auto', an integer from 1 to 50, a number > 0 and ≤ 10, …"""
    if "const" in schema:
        return repr(schema["const"])
    kinds = {"integer": "an integer", "number": "a number", "string": "a string", "object": "a mapping"}
    if schema.get("type") not in kinds:
        return "see schemas/spec.schema.json"
    bounds = [
        f"{sign} {schema[key]}"
        for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
        if key in schema
    ]
    return " ".join([kinds[schema["type"]], " and ".join(bounds)]).strip()


def _fill_defaults(spec: Spec) -> None:
    doc = spec.doc
    apply_defaults(doc, spec_schema())
    base = spec.path.parent
    for keys, section in ((("data",), doc["data"]), *((("splits", n), v) for n, v in doc["splits"].items())):
        if "path" in section:
            section["path"] = resolved(base / section["path"], spec.where(*keys, "path"))
    doc["prompt"]["template"] = resolved(base / doc["prompt"]["template"], spec.where("prompt", "template"))
    provider = doc["provider"]
    for key in _provider_path_keys(doc):
        if isinstance(provider.get(key), str) and provider[key]:
            provider[key] = resolved(base / provider[key], spec.where("provider", key))


def _provider_path_keys(doc: dict[str, Any]) -> tuple[str, ...]:
    """Keys of the provider section that name files (a plugin's lookup file): read relative to the spec
    like data.path, and hashed with it. None for a provider that is not registered (validation says so)."""
    section = doc.get("provider")
    name = section.get("name", "local") if isinstance(section, dict) else None
    return capability(name, "path_keys", ()) if isinstance(name, str) else ()


def resolved(path: Path, where: str) -> str:
    """The absolute path; a symlink loop or an unknown ~user is a user's error here, not a traceback later."""
    try:
        return str(path.expanduser().resolve())
    except (RuntimeError, OSError) as error:
        raise InvalidInput(f"cannot resolve the path {str(path)!r}: {error}", where=where) from None


def _check_semantics(spec: Spec) -> None:
    """Checks across keys: files exist, the task's own rules, provider and method fit, gates name real rows."""
    doc = spec.doc
    for key_path, section in [(("data",), doc["data"])] + [(("splits", k), v) for k, v in doc["splits"].items()]:
        if "path" in section and not Path(section["path"]).is_file():
            raise InvalidInput(f"dataset file not found: {section['path']}", where=spec.where(*key_path, "path"))
    for name in ("train", "eval"):
        if name not in doc["splits"]:
            raise InvalidInput(f"splits needs a {name} split", where=spec.where("splits"))
    for name, split in doc["splits"].items():
        if "path" not in split and "path" not in doc["data"]:
            raise InvalidInput(
                f"split {name} has no path of its own and data.path is not set", where=spec.where("splits", name)
            )
        if "take" not in split:
            raise InvalidInput(
                "take is required when the split has no path of its own", where=spec.where("splits", name)
            )
    if not Path(doc["prompt"]["template"]).is_file():
        raise InvalidInput(
            f"template file not found: {doc['prompt']['template']}", where=spec.where("prompt", "template")
        )
    evaluation = spec.evaluation
    task = task_class(spec.task)
    if evaluation["method"] not in task.methods:
        raise InvalidInput(
            f"{spec.task} answers with method {' or '.join(task.methods)}", where=spec.where("evaluation", "method")
        )
    task.check_spec(doc, spec.where)
    # The provider's own checks: model, base_url, label scoring through an API, fine-tune settings.
    provider_class(spec.provider["name"]).check_config(doc, spec.where, make_task(doc).answers())
    if evaluation["calibration"] != "none" and evaluation["method"] != "score":
        raise InvalidInput(
            "calibration needs method: score (generated answers have no per-label scores)",
            where=spec.where("evaluation", "calibration"),
        )
    _check_fine_tune(spec)
    if "few_shot" in evaluation["modes"]:
        source = read_text(doc["prompt"]["template"], "template")
        if "examples" not in source:
            raise InvalidInput(
                "mode few_shot needs a template that shows `examples` (e.g. {% for example in examples %}…)",
                where=spec.where("prompt", "template"),
            )
    checks_model = doc["checks"]["model"]
    if encoding_name(checks_model) is None:
        raise InvalidInput(
            f"no shipped tiktoken encoding for {checks_model!r}; name an OpenAI model such as gpt-4o-mini or gpt-3.5-turbo",
            where=spec.where("checks", "model"),
        )
    rows = set(result_rows(spec)) | {None}
    gates = spec.gates
    primary = spec.evaluation["modes"][0]
    for index, gate in enumerate(gates):
        if gate.compares_itself(primary):
            raise InvalidInput(
                f"gate {spec.evaluation['gates'][index]!r} compares a metric with itself "
                f"(a gate without a row names the first mode's, {primary})",
                where=spec.where("evaluation", "gates", index),
            )
        refs = [(gate.row, gate.metric)]
        if isinstance(gate.threshold, tuple) and not gate.against:  # --against rows are checked when it is read
            refs.append(gate.threshold)
        for row, _ in refs:
            if row not in rows:
                raise InvalidInput(
                    f"gate names row {row!r}; rows in this spec: {', '.join(r for r in rows if r)}",
                    where=spec.where("evaluation", "gates"),
                )


def _check_fine_tune(spec: Spec) -> None:
    """What fine_tune may set is the provider's check (check_config); the modes' need of it is here."""
    if "fine_tuned" in spec.evaluation["modes"] and not spec.doc["fine_tune"]["enabled"]:
        raise InvalidInput("mode fine_tuned needs fine_tune.enabled: true", where=spec.where("evaluation", "modes"))


def fine_tune_settings(spec: Spec) -> dict[str, Any]:
    """What the provider's create-job call receives: hyperparameters plus suffix and seed."""
    fine_tune = spec.doc["fine_tune"]
    settings = {k: v for k, v in fine_tune["hyperparameters"].items() if v != "auto"}
    settings.update({k: fine_tune[k] for k in ("suffix", "seed", "local") if k in fine_tune})
    return settings


def result_rows(spec: Spec) -> list[str]:
    """Names of the rows the evaluation will report, first mode first: the task's, the baselines, the task's extras."""
    task = task_class(spec.task)
    rows = task.result_rows(spec.doc)
    if spec.evaluation["baseline"]:
        rows += ["baseline", "baseline_all_data"]
    rows += task.extra_rows(spec.doc)
    return rows
