"""`specrun compare`: one table of metrics (with their 95% intervals) across run folders, and the
spec keys that differ between them, for the terminal, Markdown or HTML.

Runs are read from what they left behind (manifest.json, metrics.json), never recomputed, so
any finished run can be compared with any other. Runs of different task types get one table
each: their metrics are not the same quantities, so one table would put unlike numbers in a column.
Runs evaluated on different numbers of examples (--limit, eval split sizes) are compared but said
to be so; a spec key a run never read (few_shot.* without mode few_shot) is no difference.
"""

from __future__ import annotations

import glob
import html
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from runner.core.errors import InvalidInput, RuntimeFailure
from runner.pipeline.gates import cell_run
from runner.tasks import task_class, task_names

MISSING = "—"
UNUSED = "(unused)"  # shown for a run that never read the key; it makes no difference


def _modes(doc: dict[str, Any]) -> list[Any]:
    evaluation = doc.get("evaluation")
    modes = evaluation.get("modes") if isinstance(evaluation, dict) else None
    return modes if isinstance(modes, list) else []


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = doc.get(name)
    return found if isinstance(found, dict) else {}


# Spec sections read only by some runs: dotted key prefix -> whether this run read it (the longest
# prefix of a key decides). A run without mode few_shot never reads few_shot.*, so its defaults are
# no difference from a run that sets them.
USED_WHEN: dict[str, Callable[[dict[str, Any]], bool]] = {
    "few_shot": lambda doc: "few_shot" in _modes(doc),
    "few_shot.embedding": lambda doc: (
        "few_shot" in _modes(doc) and _section(doc, "few_shot").get("strategy") == "similar"
    ),
    "fine_tune": lambda doc: "fine_tuned" in _modes(doc) or bool(_section(doc, "fine_tune").get("enabled")),
    "fine_tune.enabled": lambda doc: True,
}


def read_by(doc: dict[str, Any], key: str) -> bool:
    """Whether the run of this spec read `key` (USED_WHEN); keys outside those sections always count."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        rule = USED_WHEN.get(".".join(parts[:end]))
        if rule is not None:
            return rule(doc)
    return True


@dataclass
class RunResult:
    path: Path
    label: str
    task: str
    metrics: dict[str, dict[str, Any]]
    spec: dict[str, Any]
    eval_size: int | None = None  # manifest data.eval: the examples its figures are over
    limit: int | None = None  # the run's --limit, if any

    @property
    def evaluated_on(self) -> str:
        """'30 eval examples (--limit 30)', or '? eval examples' for a manifest that does not say."""
        size = "?" if self.eval_size is None else str(self.eval_size)
        return f"{size} eval examples" + (f" (--limit {self.limit})" if self.limit else "")


@dataclass
class Comparison:
    runs: list[RunResult]
    differing: dict[str, list[Any]]  # dotted spec key → each run's value (MISSING where a run lacks it)

    def mixed_evaluation(self) -> str | None:
        """A warning when the runs' figures are over different numbers of examples (--limit, split sizes)."""
        if len({(run.eval_size, run.limit) for run in self.runs}) < 2:
            return None
        each = "; ".join(f"{run.label}: {run.evaluated_on}" for run in self.runs)
        return f"These runs were not evaluated on the same eval examples ({each}): their figures are not directly comparable."

    def tables(self) -> list[tuple[str, list[str], list[list[str]]]]:
        """(task type, header, rows) per task type among the runs: run, result row, primary metric first."""
        out = []
        for task in dict.fromkeys(run.task for run in self.runs):
            cls = task_class(task)
            names = [cls.primary_metric, *(m for m in cls.metrics if m != cls.primary_metric)]
            rows = []
            for run in (r for r in self.runs if r.task == task):
                for row, found in run.metrics.items():
                    rows.append([run.label, row, *(_with_interval(found, name) for name in names)])
            out.append((task, ["run", "row", *names], rows))
        return out


def find_runs(targets: list[str]) -> list[Path]:
    return list(find_labelled_runs(targets))


def find_labelled_runs(targets: list[str]) -> dict[Path, str | None]:
    """Run folders named by paths or globs, in the order given (each glob sorted), with a label when a
    matrix folder (holding matrix.json) named them: it stands for its finished cells' runs, labelled by
    cell. Anything else is exit 2, naming it."""
    found: dict[Path, str | None] = {}
    for target in targets:
        literal = not glob.has_magic(target) or Path(target).exists()  # a folder named runs[1]/ is not a pattern
        matches = [target] if literal else sorted(glob.glob(target))
        if not matches:
            raise InvalidInput("matches no file or folder", where=target)
        for match in map(Path, matches):
            if (match / "matrix.json").is_file():
                for run, label in _matrix_runs(match).items():
                    found.setdefault(run.resolve(), label)
            elif (match / "manifest.json").is_file():
                found.setdefault(match.resolve(), None)
            elif not match.exists():
                raise InvalidInput("no such run folder", where=str(match))
            else:
                raise InvalidInput(
                    "not a run folder (no manifest.json) nor a matrix folder (no matrix.json)", where=str(match)
                )
    return found


def _matrix_runs(folder: Path) -> dict[Path, str | None]:
    record = _read_json(folder / "matrix.json")
    listed = record.get("cells")
    cells = [cell for cell in listed if isinstance(cell, dict)] if isinstance(listed, list) else []
    runs = {
        cell_run(folder, c["run"]): None if c.get("label") is None else str(c["label"])
        for c in cells
        if isinstance(c.get("run"), str) and c["run"] and c.get("status") == "succeeded"
    }
    if not runs:
        raise InvalidInput("this matrix has no finished cell yet", where=str(folder / "matrix.json"))
    return runs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput("file not found", where=str(path)) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise InvalidInput(f"unreadable ({type(error).__name__})", where=str(path)) from None
    if not isinstance(value, dict):
        raise InvalidInput("not a JSON object", where=str(path))
    return value


def load_run(path: Path, label: str | None = None) -> RunResult:
    manifest = _read_json(path / "manifest.json")
    if not (path / "metrics.json").is_file():
        raise InvalidInput(f"has no metrics.json (run status: {manifest.get('status', 'unknown')})", where=str(path))
    metrics = _read_json(path / "metrics.json")
    spec = manifest.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("task"), str) or spec["task"] not in task_names():
        raise InvalidInput("manifest.json has no spec with a known task type", where=str(path / "manifest.json"))
    if not all(isinstance(row, dict) for row in metrics.values()):
        raise InvalidInput("metrics.json is not {row: {metric: value}}", where=str(path / "metrics.json"))
    name = manifest.get("name") or spec.get("name") or path.parent.name
    data = manifest.get("data") if isinstance(manifest.get("data"), dict) else {}
    return RunResult(
        path,
        label or f"{name}/{path.name}",
        spec["task"],
        metrics,
        spec,
        _count(data.get("eval")),
        _count(manifest.get("limit")),
    )


def _count(value: Any) -> int | None:
    """A whole count from a manifest, None for anything else (older or odd manifests)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def compare(paths: list[Path], labels: dict[Path, str] | None = None) -> Comparison:
    runs = [load_run(path, (labels or {}).get(path)) for path in paths]
    return Comparison(runs, differing_keys([run.spec for run in runs]))


def differing_keys(docs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Dotted key paths whose values are not the same in every doc that read them (lists compared
    whole); a doc that never read a key (`read_by`) shows UNUSED there and makes no difference."""
    flat = [_flatten(doc) for doc in docs]
    differing = {}
    for key in dict.fromkeys(key for f in flat for key in f):
        read = [read_by(doc, key) for doc in docs]
        values = [f.get(key, MISSING) if used else UNUSED for f, used in zip(flat, read, strict=True)]
        compared = [value for value, used in zip(values, read, strict=True) if used]
        if len({json.dumps(v, sort_keys=True, ensure_ascii=False) for v in compared}) > 1:
            differing[key] = values
    return differing


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict) and doc:
        out: dict[str, Any] = {}
        for key, value in doc.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: doc}


def _percent(value: Any) -> float | None:
    """100 × a metric value, or None for anything that is not a finite number (bools, NaN, 1e308, 10**400)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        percent = 100 * float(value)
    except OverflowError:
        return None
    return percent if math.isfinite(percent) else None


def _with_interval(found: dict[str, Any], metric: str) -> str:
    value = _percent(found.get(metric))
    if value is None:
        return MISSING
    text = f"{value:.1f}%"
    intervals = found.get("ci95")
    interval = intervals.get(metric) if isinstance(intervals, dict) else None
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        low, high = map(_percent, interval)
        if low is not None and high is not None:
            text += f" [{low:.1f}, {high:.1f}]"
    return text


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _diff_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """One row per run, one column per differing key: a matrix reads as its grid."""
    header = ["run", *comparison.differing]
    columns = list(comparison.differing.values())
    return header, [[run.label, *(_value(values[i]) for values in columns)] for i, run in enumerate(comparison.runs)]


def render_terminal(comparison: Comparison) -> Group:
    """Runs listed once, whole, as #1, #2...; the tables name them by number, so a narrow terminal
    never cuts the part of a label that tells two runs of one spec apart."""
    keys = {run.label: f"#{i}" for i, run in enumerate(comparison.runs, 1)}
    runs = Table(title="runs")
    runs.add_column("#")
    runs.add_column("run", overflow="fold")
    runs.add_column("evaluated on", overflow="fold")
    for run in comparison.runs:
        runs.add_row(keys[run.label], Text(run.label), run.evaluated_on)  # plain text: "[/]" is data, not markup
    parts: list[Any] = [runs]
    if warning := comparison.mixed_evaluation():
        parts.append(Text(f"Warning: {warning}", style="bold yellow"))
    for task, header, rows in comparison.tables():
        table = Table(title=f"{task}: {len({r[0] for r in rows})} runs (95% intervals where the run has them)")
        for i, name in enumerate(header):  # fold, never cut: a cut figure or row name reads as another
            table.add_column(name, justify="right" if i > 1 else "left", overflow="fold")
        for row in rows:
            table.add_row(keys[row[0]], *map(Text, row[1:]))
        parts.append(table)
    parts.append(_terminal_diff(comparison, keys))
    return Group(*parts)


def _terminal_diff(comparison: Comparison, keys: dict[str, str]) -> Table | str:
    if not comparison.differing:
        return "spec keys that differ between these runs: none"
    header, rows = _diff_rows(comparison)
    table = Table(title="spec keys that differ between these runs")
    for name in header:
        table.add_column(Text(name), overflow="fold")
    for row in rows:
        table.add_row(keys[row[0]], *map(Text, row[1:]))
    return table


def render_markdown(comparison: Comparison) -> str:
    lines = ["# Comparison", ""]
    for task, header, rows in comparison.tables():
        lines += [f"## {task}", "", "95% intervals in brackets where the run has them.", ""]
        lines += [*_markdown_table(header, rows), ""]
    if warning := comparison.mixed_evaluation():
        lines += [f"**Warning:** {warning}", ""]
    lines += ["## Spec keys that differ between these runs", ""]
    lines += [*(_markdown_table(*_diff_rows(comparison)) if comparison.differing else ["None."]), ""]
    lines += ["Runs:", ""] + [f"- {run.label}: `{run.path}`, {run.evaluated_on}" for run in comparison.runs] + [""]
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(text: str) -> str:
        return re.sub(r"[\r\n\x85\u2028\u2029]", " ", text.replace("|", "\\|"))  # any line break ends a row

    out = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(map(cell, row)) + " |" for row in rows]


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.3em .6em}td.n{text-align:right;font-variant-numeric:tabular-nums}"
)


def render_html(comparison: Comparison) -> str:
    """One self-contained page: inline style, no script, nothing fetched; every value escaped."""
    e = html.escape
    body = ["<h1>Comparison</h1>"]
    if warning := comparison.mixed_evaluation():
        body.append(f"<p><strong>Warning:</strong> {e(warning)}</p>")
    for task, header, rows in comparison.tables():
        body.append(f"<h2>{e(task)}</h2><p>95% intervals in brackets where the run has them.</p>")
        body.append(_html_table(header, rows, numeric_from=2))
    body.append("<h2>Spec keys that differ between these runs</h2>")
    body.append(_html_table(*_diff_rows(comparison), numeric_from=99) if comparison.differing else "<p>None.</p>")
    body.append(
        "<ul>"
        + "".join(
            f"<li>{e(run.label)}: <code>{e(str(run.path))}</code>, {e(run.evaluated_on)}</li>"
            for run in comparison.runs
        )
        + "</ul>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>specrun comparison</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_table(header: list[str], rows: list[list[str]], numeric_from: int) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    numeric = ' class="n"'
    body = "".join(
        "<tr>" + "".join(f"<td{numeric if i >= numeric_from else ''}>{e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def compare_command(args: Any, console: Any) -> int:
    """The CLI's compare: exit 0; 2 (InvalidInput) for a target that is not a run; 3 if --out cannot be written."""
    targets, fmt, out = args.runs, args.format, args.out
    labelled = find_labelled_runs(targets)
    comparison = compare(list(labelled), {path: label for path, label in labelled.items() if label})
    if fmt == "table" and out is None:
        console.print(render_terminal(comparison))
        return 0
    text = render_html(comparison) if fmt == "html" else render_markdown(comparison)
    if fmt == "table":  # a table written to a file: Markdown is the readable plain-text form
        text = render_markdown(comparison)
    if out is None:
        print(text, end="")
    else:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as error:
            raise RuntimeFailure(f"{out}: cannot write: {error.strerror or error}") from None
        console.print(f"comparison: {out}", markup=False, highlight=False)
    return 0
