"""Gates: a spec's pass/fail rules over its metrics, with their noise measured.

A gate comparing two rows of the run is a paired bootstrap on the same eval examples (the rows'
per-example statistics resampled with the same indices, runner/core/stats.py). A plain gate passes on
the point values and says when the difference is inside the noise; a gate ending in `(95%)`
passes only when the difference holds at that one-sided confidence.

`against.…` names an earlier run (`specrun run SPEC --against RUN_DIR`). It is read, and every
row and metric the gates name is checked, before a run folder is made; its predictions.jsonl
pairs it with this run when both cover the same eval examples with the same gold answers.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runner.config.spec import Gate, Spec
from runner.core import stats
from runner.core.errors import InvalidInput
from runner.tasks import Example, Task

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
RUN_FILES = ("manifest.json", "metrics.json")
MATRIX_FILE = "matrix.json"  # runner/commands/matrix.py: runs/<name>/matrix-<id>/ lists its cells' run folders
SEARCH_DEPTH = 3  # runs/ → <spec name>/ → <timestamp>/ (→ a matrix cell)


@dataclass
class AgainstRun:
    """An earlier run whose metrics (and predictions) gates compare with."""

    path: Path
    manifest: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    chosen: str  # how this folder was picked, for the console

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "run_id": self.manifest.get("run_id"), "name": self.manifest.get("name")}

    def value(self, row: str, metric: str) -> float:
        return float(self.metrics[row][metric])

    def example_stats(self, row: str, task: Task, examples: list[Example]) -> tuple[np.ndarray | None, str | None]:
        """This run's per-example statistics for `row` on `examples`, or None and why they cannot be paired."""
        file = self.path / "predictions.jsonl"
        try:
            records = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
            by_id = {str(record["id"]): record for record in records}
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"{file.name} is missing or unreadable"
        if set(by_id) != {e.id for e in examples}:
            return None, "it was evaluated on other examples"
        for example in examples:
            record = by_id[example.id]
            if row not in record:
                return None, f"its predictions.jsonl has no {row} answers"
            if record.get("gold") != json.loads(json.dumps(task.gold_field(example), ensure_ascii=False)):
                return None, f"example {example.id} has another gold answer there"
        try:
            return task.example_stats(examples, [by_id[e.id][row] for e in examples]), None
        except (KeyError, TypeError, ValueError, IndexError):
            return None, f"its {row} answers cannot be read as this task's predictions"


def cell_run(matrix_folder: Path, run: str) -> Path:
    """A matrix cell's run folder. matrix.json records it as given to --out (often relative to where the
    matrix ran), but cells always sit beside the matrix folder in runs/<name>/: look there first."""
    recorded, beside = Path(run), matrix_folder.parent / Path(run).name
    if recorded.is_absolute() and recorded.is_dir():
        return recorded
    return beside if (beside / "manifest.json").is_file() else recorded


def needs_against(spec: Spec) -> bool:
    return any(gate.against for gate in spec.gates)


def load_against(path: Path | None, spec: Spec) -> AgainstRun | None:
    """Read --against RUN_DIR and check it holds every row and metric the gates name; InvalidInput (exit 2) if not."""
    if path is None:
        if needs_against(spec):
            text = next(t for t, g in zip(spec.evaluation["gates"], spec.gates, strict=True) if g.against)
            raise InvalidInput(f"gate {text!r} names against but no --against RUN_DIR was given",
                               where=spec.where("evaluation", "gates"))  # fmt: skip
        return None
    run = _find_run(Path(path), spec)
    task = run.manifest.get("spec", {}).get("task") if isinstance(run.manifest.get("spec"), dict) else None
    if task != spec.task:
        raise InvalidInput(f"--against {run.path}: a {task or 'unknown-task'} run; this spec is {spec.task}")
    primary = spec.evaluation["modes"][0]
    for text, gate in zip(spec.evaluation["gates"], spec.gates, strict=True):
        if not gate.against:
            continue
        row, metric = gate.threshold  # type: ignore[misc]
        row = row or gate.row or primary
        if row not in run.metrics:
            raise InvalidInput(
                f"--against {run.path}: gate {text!r} needs row {row!r}; that run has {', '.join(run.metrics) or 'none'}"
            )
        value = run.metrics[row].get(metric) if isinstance(run.metrics[row], dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InvalidInput(f"--against {run.path}: gate {text!r} needs {row}.{metric}, which that run lacks")
        if not _finite(value):  # NaN would fail the gate with a NaN difference; 10**400 overflows float()
            raise InvalidInput(f"--against {run.path}: gate {text!r} needs {row}.{metric}; that run has {value!r:.40}")
    return run


def _finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _find_run(path: Path, spec: Spec) -> AgainstRun:
    """A run folder; a matrix folder's cell with this spec's values; or below a folder of runs, the newest
    succeeded run of this spec's name."""
    name = spec.name
    if not path.is_dir():
        raise InvalidInput(f"--against {path}: no such run folder")
    if all((path / f).is_file() for f in RUN_FILES):
        return _read_run(path, "")
    if (path / MATRIX_FILE).is_file():
        return _matrix_cell(path, spec)
    found = []
    for depth in range(1, SEARCH_DEPTH + 1):
        for metrics in sorted(path.glob("/".join(["*"] * depth) + "/metrics.json")):
            if (metrics.parent / "manifest.json").is_file():
                found.append(_read_run(metrics.parent, ""))
    if not found:
        raise InvalidInput(f"--against {path}: no run folder (manifest.json and metrics.json) here or below")
    done = [run for run in found if run.manifest.get("status") == "succeeded"] or found
    named = [run for run in done if run.manifest.get("name") == name]
    if not named:
        if len(done) > 1:
            shown = ", ".join(str(run.path.relative_to(path)) for run in done[:5])
            raise InvalidInput(
                f"--against {path}: {len(done)} runs below it and none of spec {name!r} ({shown}…); name one run folder"
            )
        named = done
    newest = max(named, key=lambda run: (str(run.manifest.get("started", "")), str(run.path)))
    newest.chosen = (
        f"the newest succeeded run of {name!r} among {len(named)} below {path}"
        if len(named) > 1
        else f"the only run below {path}"
    )
    return newest


def _matrix_cell(path: Path, spec: Spec) -> AgainstRun:
    """The cell of an earlier matrix whose values this spec has (a cell compared with the same cell)."""
    try:
        cells = json.loads((path / MATRIX_FILE).read_text(encoding="utf-8"))["cells"]
        done = [c for c in cells if c.get("status") == "succeeded" and isinstance(c.get("run"), str) and c["run"]]
        same = [c for c in done if all(_dotted(spec.doc, k) == v for k, v in (c.get("values") or {}).items())]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise InvalidInput(f"--against {path / MATRIX_FILE}: cannot read its cells") from None
    if len(same) != 1 and len(done) != 1:
        raise InvalidInput(
            f"--against {path}: a matrix of {len(done)} finished cells and {len(same)} with this spec's values; "
            "name one cell's run folder (matrix.json lists them)"
        )
    cell = (same or done)[0]
    run = _read_run(cell_run(path, cell["run"]), "")  # recorded relative to where the matrix ran
    run.chosen = f"matrix cell {cell.get('label', '?')}"
    return run


def _dotted(doc: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _read_run(path: Path, chosen: str) -> AgainstRun:
    documents = []
    for name in RUN_FILES:
        try:
            document = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as error:
            raise InvalidInput(f"--against {path / name}: cannot read it ({type(error).__name__})") from None
        if not isinstance(document, dict):
            raise InvalidInput(f"--against {path / name}: expected a JSON object")
        documents.append(document)
    manifest, metrics = documents
    return AgainstRun(path=path, manifest=manifest, metrics=metrics, chosen=chosen)


def check_gates(
    spec: Spec,
    metrics: dict[str, dict[str, Any]],
    example_stats: dict[str, np.ndarray | None] | None = None,
    task: Task | None = None,
    examples: list[Example] | None = None,
    against: AgainstRun | None = None,
) -> list[dict[str, Any]]:
    """Every gate's result: gate, left, right, passed; and for row comparisons the difference, its 95%
    interval, the confidence asked for, and within_noise when a plain gate passed on noise."""
    primary = spec.evaluation["modes"][0]
    example_stats = example_stats or {}
    results = []
    for text, gate in zip(spec.evaluation["gates"], spec.gates, strict=True):
        left_row = gate.row or primary
        left = float(metrics[left_row][gate.metric])
        if not isinstance(gate.threshold, tuple):
            results.append(_against_number(text, gate, left, metrics[left_row], example_stats.get(left_row), task))
            continue
        right_row, right_metric = gate.threshold
        right_stats, unpaired = None, None
        if gate.against:
            if against is None:
                raise InvalidInput(f"gate {text!r} names against but no --against RUN_DIR was given")
            right_row = right_row or left_row
            right = against.value(right_row, right_metric) + gate.offset
            if task is not None and examples is not None:
                right_stats, unpaired = against.example_stats(right_row, task, examples)
        else:
            right_row = right_row or primary
            right = float(metrics[right_row][right_metric]) + gate.offset
            right_stats = example_stats.get(right_row)
        left_stats = example_stats.get(left_row)
        result = {"gate": text, "left": left, "right": right, "difference": left - right}
        differences = None
        if left_stats is not None and right_stats is not None and task is not None:
            differences = stats.paired_difference(
                left_stats, right_stats, task.aggregate, gate.metric, right_metric, gate.offset
            )
        else:
            result["note"] = "compared point values: " + (
                unpaired or "no per-example statistics for a paired bootstrap"
            )
        results.append(_decide(result, gate, differences, len(left_stats) if differences is not None else 0))
    return results


def _against_number(
    text: str, gate: Gate, left: float, row: dict[str, Any], row_stats: np.ndarray | None, task: Task | None
) -> dict[str, Any]:
    right = float(gate.threshold)  # type: ignore[arg-type]
    result = {"gate": text, "left": left, "right": right, "difference": left - right}
    differences = None
    if gate.confidence is not None and row_stats is not None and task is not None:
        differences = stats.paired_difference(row_stats, None, task.aggregate, gate.metric, offset=right)
    elif (row.get("ci95") or {}).get(gate.metric):
        low, high = row["ci95"][gate.metric]
        result["difference_ci95"] = [round(low - right, 6), round(high - right, 6)]
    return _decide(result, gate, differences, len(row_stats) if differences is not None else 0)


def _decide(result: dict[str, Any], gate: Gate, differences: np.ndarray | None, examples: int) -> dict[str, Any]:
    """passed, and how sure: the point comparison, then (95%) or the within-noise flag.

    `examples` is the number of eval examples the bootstrap resampled."""
    passed = bool(OPS[gate.op](result["left"], result["right"]))
    if differences is not None:
        result["difference_ci95"] = stats.interval(differences)
    if gate.confidence is not None:
        result["confidence"] = gate.confidence
        needed = stats.fewest_examples(gate.confidence)
        if differences is not None and examples < needed:
            passed = False
            result["note"] = (
                f"{examples} eval examples cannot show a difference at {100 * gate.confidence:g}% confidence "
                f"(at least {needed}: even all of them going one way happens by chance 1 time in {2**examples})"
            )
        elif differences is not None:
            passed = passed and stats.holds(differences, gate.op, gate.confidence)
        else:
            result.setdefault("note", "compared point values: no per-example statistics for a paired bootstrap")
    elif passed and gate.op != "==" and result.get("difference_ci95"):
        low, high = result["difference_ci95"]
        result["within_noise"] = bool(low <= 0 <= high)
    result["passed"] = passed
    return result
