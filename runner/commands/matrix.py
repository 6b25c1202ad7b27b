"""Matrix runs: a spec's `matrix:` (dotted key → values) run as every combination, one run each.

A cell is the spec with its values set (as `--set` would, but paths stay relative to the spec)
and without the `matrix` itself, so each cell validates, hashes and resumes on its own, and
adding a value to the matrix leaves the cells already run as they are. Cells are ordinary runs
in `runs/<name>/<timestamp>/`; the matrix keeps `runs/<name>/matrix-<id>/` with matrix.json
(cells, their run folders, status, exit codes) and the comparison (Markdown and HTML).

Resume is cell by cell. A finished run folder is never reused by RunFolder.open, so the matrix
itself looks for a succeeded run with the cell's identity (spec hash, --limit, stages) and reads
its metrics instead of running it again; an interrupted or killed cell is resumed by run_spec as
any run is. matrix.json is rebuilt from the run folders each time: they are the truth.

Several machines share one matrix with `--shard i/N` (`shard`): the selected cells at positions
i-1, i-1+N, i-1+2N, … of the matrix's order, so N shards are N disjoint parts whose union is the
selection, every machine computes the same split from the spec alone, and each part's cells mix
the matrix's keys (no shard gets all the slow values of the first key). Run folders collected from
the machines into one runs folder compare as one table (`specrun compare`), or, passed to a
`specrun run` of the whole matrix, are found finished and not run again.

Exit code: the worst of the selected cells', ordered 3 > 2 > 1 > 0 (a failure to run says more
than a failed gate, which says more than a pass). A cell that fails (2 or 3) is recorded and the
next cell runs; Ctrl-C records the interrupted cell and stops the matrix (130).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from runner.commands.compare import compare, render_html, render_markdown, render_terminal
from runner.config.safe_yaml import load_value, load_yaml
from runner.config.spec import Spec, load_spec
from runner.core.errors import EXIT_GATE_FAILED, EXIT_OK, InvalidInput, RuntimeFailure, SpecrunError
from runner.core.files import write_atomic
from runner.core.jsonl import read_text
from runner.pipeline import COMMAND_STAGES, check_gates, prepare, run_identity, run_spec
from runner.pipeline.gates import load_against, needs_against

MAX_CELLS = 64  # beyond this a matrix is a sweep; run it as several specs, or narrow it with --only
RESERVED = ("name", "matrix")  # the run folder's name and the matrix itself cannot vary by cell
INTERRUPTED = 130


@dataclass(frozen=True, eq=False)
class Cell:
    values: tuple[tuple[str, Any], ...]  # (dotted key, value) in the matrix's key order

    def __eq__(self, other: object) -> bool:  # values may be lists or mappings: compared and hashed by label
        return isinstance(other, Cell) and other.label == self.label

    def __hash__(self) -> int:
        return hash(self.label)

    @property
    def label(self) -> str:
        """`few_shot.k=4,evaluation.calibration=none`: values as YAML would read them back."""
        return ",".join(f"{key}={value_text(value)}" for key, value in self.values)

    @property
    def slug(self) -> str:
        """The label made safe as a file name; a short hash keeps slugs apart when characters were replaced."""
        safe = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", self.label)
        if safe != self.label or len(safe) > 80:
            safe = f"{safe[:80]}-{hashlib.sha256(self.label.encode()).hexdigest()[:8]}"
        return safe

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


def value_text(value: Any) -> str:
    """A string bare when YAML reads it back as itself (so `--only key=<it>` picks it), else JSON."""
    if isinstance(value, str) and "," not in value:
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Matrix:
    path: Path
    keys: dict[str, list[Any]]
    where: dict[str, str]  # key → "spec.yaml:12: matrix.few_shot.k"
    cells: list[Cell] = field(default_factory=list)


def read_matrix(path: Path, overrides: list[str] | None = None) -> Matrix | None:
    """The spec's matrix, checked (shape, duplicates, size, clashes with --set); None when it has none."""
    if not path.is_file():
        return None  # load_spec says so, in its own words
    for override in overrides or []:  # the matrix is read from the file: a --set of it would be silently ignored
        if _overlaps(override.partition("=")[0].strip(), "matrix"):
            raise InvalidInput(f"--set {override.partition('=')[0].strip()}: --set cannot change a matrix; edit the "
                               "spec's matrix: or pick cells with --only")  # fmt: skip
    doc, lines = load_yaml(read_text(path, "spec file"), str(path))
    if not isinstance(doc, dict) or "matrix" not in doc:
        return None
    raw = doc["matrix"]
    top = f"{path}:{lines.get(('matrix',), '?')}: matrix"
    if not isinstance(raw, dict) or not raw:
        raise InvalidInput("matrix must map dotted spec keys to lists of values, e.g. few_shot.k: [2, 4]", where=top)
    where = {str(key): f"{path}:{lines.get(('matrix', key), '?')}: matrix.{key}" for key in raw}
    keys: dict[str, list[Any]] = {}
    below: dict[str, str] = {}  # each dotted prefix of a key seen -> the first key below it (overlaps in O(n))
    for key, values in raw.items():
        key = str(key)
        if key.split(".")[0] in RESERVED:
            raise InvalidInput(f"{key} cannot vary by cell", where=where[key])
        if not isinstance(values, list) or not values:
            raise InvalidInput("give a non-empty list of values", where=where[key])
        if len(values) > MAX_CELLS:  # refused before any per-value work: the matrix could not run anyway
            raise InvalidInput(f"{len(values)} values; a matrix may have at most {MAX_CELLS} cells", where=where[key])
        try:  # YAML dates and !!binary are not JSON: labels, hashes and matrix.json could not carry them
            seen = [json.dumps(v, sort_keys=True, allow_nan=False) for v in values]  # .nan/.inf are not JSON
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"every value must be a JSON value ({error}); quote dates", where=where[key]) from None
        first_seen: set[str] = set()
        for value, text in zip(values, seen, strict=True):  # one pass: counting each value was quadratic
            if text in first_seen:
                raise InvalidInput(f"value {value_text(value)} is listed twice", where=where[key])
            first_seen.add(text)
        parts = key.split(".")
        prefixes = [".".join(parts[:end]) for end in range(1, len(parts) + 1)]
        other = next((prefix for prefix in prefixes if prefix in keys), None)  # an earlier key above or equal
        if other is None and key in below:  # an earlier key below this one
            other = below[key]
        if other is not None:
            raise InvalidInput(f"overlaps matrix key {other}: one would overwrite the other", where=where[key])
        for prefix in prefixes[:-1]:
            below.setdefault(prefix, key)
        keys[key] = values
    for override in overrides or []:
        set_key = override.partition("=")[0].strip()
        for key in keys:
            if _overlaps(set_key, key):
                raise InvalidInput(
                    f"--set {set_key} changes a key this matrix varies; pick cells with --only {key}=VALUE instead",
                    where=where[key],
                )
    size = 1
    for values in keys.values():
        size *= len(values)
    if size > MAX_CELLS:
        raise InvalidInput(f"{size} cells; a matrix may have at most {MAX_CELLS}", where=top)
    cells = [Cell(tuple(zip(keys, combo, strict=True))) for combo in itertools.product(*keys.values())]
    return Matrix(path, keys, where, cells)


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def select(matrix: Matrix, only: list[str]) -> list[Cell]:
    """Cells matching every --only key (several values for one key: any of them). Values read as YAML, like --set."""
    wanted: dict[str, list[Any]] = {}
    for item in only:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(f"--only {item!r}: write it as matrix.key=value")
        if key not in matrix.keys:
            raise InvalidInput(f"--only {item!r}: {key} is not a matrix key (matrix keys: {', '.join(matrix.keys)})")
        value = load_value(raw, f"--only {key}")
        if not any(_same(value, v) for v in matrix.keys[key]):
            values = ", ".join(value_text(v) for v in matrix.keys[key])
            raise InvalidInput(f"--only {item!r}: {value_text(value)} is not one of {key}'s values ({values})")
        wanted.setdefault(key, []).append(value)
    return [
        cell
        for cell in matrix.cells
        if all(any(_same(cell.as_dict()[key], v) for v in values) for key, values in wanted.items())
    ]


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as written on the command line
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`--shard i/N` with 1 <= i <= N; anything else says what it expected (argparse: exit 2)."""
    index, sep, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None or not 1 <= shard.index <= shard.count:
        raise ValueError(f"{text!r}: write it as i/N with 1 <= i <= N, e.g. 2/4")
    return shard


def shard_of(cells: list[Cell], shard: Shard | None) -> list[Cell]:
    """This shard's cells: every N-th from position i-1, so the N shards partition `cells`."""
    return cells if shard is None else cells[shard.index - 1 :: shard.count]


def _same(a: Any, b: Any) -> bool:
    """Equal as the schema sees values: 0 and 0.0 are one number (so `--only k=4.0` picks k=4), true is not 1."""
    return json.dumps(_numbers(a), sort_keys=True) == json.dumps(_numbers(b), sort_keys=True)


def _numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def cell_spec(matrix: Matrix, cell: Cell, overrides: list[str] | None) -> Spec:
    """The cell's own spec; any error names the cell (and, through its line, the matrix key)."""
    try:
        return load_spec(matrix.path, overrides, cell.as_dict())
    except InvalidInput as error:
        raise InvalidInput(str(error), where=f"matrix cell {cell.label}") from None


def validate_matrix(matrix: Matrix, overrides: list[str], console: Console) -> int:
    for cell in matrix.cells:
        spec = cell_spec(matrix, cell, overrides)
        try:
            splits = prepare(spec).splits
        except InvalidInput as error:
            raise InvalidInput(str(error), where=f"matrix cell {cell.label}") from None
        console.print(
            f"[green]valid[/]: {escape(cell.label)} ({len(splits.train)} train, {len(splits.validation)} validation, "
            f"{len(splits.eval)} eval examples)"
        )
    console.print(f"[green]valid[/]: {escape(str(matrix.path))}, {len(matrix.cells)} cells")
    return EXIT_OK


def runs_of(out_dir: Path, name: str, identity: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """Run folders with this identity and their manifests, newest first (unreadable manifests skipped)."""
    parent = out_dir / name
    found = []
    for folder in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True) if parent.is_dir() else []:
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            continue
        if isinstance(manifest, dict) and manifest.get("identity") == identity:
            found.append((folder, manifest))
    return found


def finished_run(out_dir: Path, name: str, identity: dict[str, Any]) -> Path | None:
    """The newest succeeded run folder with this identity (and its metrics, when it evaluated)."""
    for folder, manifest in runs_of(out_dir, name, identity):
        if manifest.get("status") == "succeeded" and ("eval" not in identity["stages"] or _metrics(folder) is not None):
            return folder
    return None


def _metrics(folder: Path) -> dict[str, Any] | None:
    """metrics.json as {row: {metric: value}}, or None when it is missing or damaged (the cell runs again)."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    ok = isinstance(metrics, dict) and all(isinstance(row, dict) for row in metrics.values())
    return metrics if ok else None


def run_matrix(
    matrix: Matrix,
    *,
    overrides: list[str],
    only: list[str],
    stages: tuple[str, ...] = COMMAND_STAGES["run"],
    limit: int | None = None,
    dry_run: bool = False,
    out_dir: Path = Path("runs"),
    console: Console,
    use_cache: bool = True,
    against: Path | None = None,
    shard: Shard | None = None,
) -> int:
    """against: passed to every cell (its `against.…` gates compare with that run); shard: run only
    this part of the selected cells (--shard i/N)."""
    selected = shard_of(select(matrix, only), shard)
    specs = {cell: cell_spec(matrix, cell, overrides) for cell in matrix.cells}  # every cell valid before any runs
    if "eval" in stages:  # a bad --against (or a missing one) is one exit 2 before any cell runs, not one per cell
        for cell in selected:
            try:
                load_against(against, specs[cell])
            except InvalidInput as error:
                raise InvalidInput(str(error), where=f"matrix cell {cell.label}") from None
    part = f" (shard {shard})" if shard else ""
    console.print(f"[bold]matrix[/] {escape(matrix.path.name)}: {len(selected)} of {len(matrix.cells)} cells{part}")
    for number, cell in enumerate(selected, 1):
        console.print(f"  {number}. {escape(cell.label)}")
    if dry_run:
        return _dry_run(selected, specs, stages, limit, out_dir, console, against)
    name = next(iter(specs.values())).name
    identity = {cell: run_identity(specs[cell], stages, limit) for cell in matrix.cells}
    folder = out_dir / name / f"matrix-{_matrix_id(identity.values())}"
    records: dict[Cell, dict[str, Any]] = {}
    try:
        for number, cell in enumerate(selected, 1):
            console.rule(f"cell {number}/{len(selected)}: {escape(cell.label)}")
            records[cell] = _run_cell(specs[cell], identity[cell], stages, limit, out_dir, console, use_cache, against)
    except KeyboardInterrupt:
        newest = runs_of(out_dir, name, identity[cell])
        records[cell] = {"status": "interrupted", "exit_code": INTERRUPTED}
        if newest and newest[0][1].get("status") == "interrupted":
            records[cell]["run"] = str(newest[0][0])  # the folder the rerun resumes
        _write_record(folder, matrix, selected, specs, identity, records, out_dir, only, limit, stages, console, shard)
        raise
    exit_code = _write_record(
        folder, matrix, selected, specs, identity, records, out_dir, only, limit, stages, console, shard
    )
    return exit_code


def _run_cell(
    spec: Spec,
    identity: dict[str, Any],
    stages: tuple[str, ...],
    limit: int | None,
    out_dir: Path,
    console: Console,
    use_cache: bool,
    against: Path | None,
) -> dict[str, Any]:
    done = finished_run(out_dir, spec.name, identity)
    if done is not None and needs_against(spec):  # its gates compared with the run it was given then: same one?
        earlier = json.loads((done / "manifest.json").read_text(encoding="utf-8")).get("against")
        if earlier != load_against(against, spec).describe():  # type: ignore[union-attr]
            done = None  # answered again from the response cache, with its gates against this run
    if done is not None:
        manifest = json.loads((done / "manifest.json").read_text(encoding="utf-8"))
        gates = manifest.get("gates")
        if not (isinstance(gates, list) and all(isinstance(g, dict) and "passed" in g for g in gates)):
            gates = None  # a run from before manifests kept gates, or a damaged list: point values again
        if gates is None and "eval" in stages:
            gates = check_gates(spec, _metrics(done) or {})
        gates = gates or []
        passed = all(g["passed"] for g in gates)
        console.print(
            f"finished earlier: {escape(str(done))} (not run again); gates {'pass' if passed else '[red]FAIL[/]'}"
        )
        code = EXIT_OK if passed else EXIT_GATE_FAILED
        return {"status": "succeeded", "reused": True, "run": str(done), "exit_code": code, "gates": gates}
    try:
        outcome = run_spec(
            spec, stages=stages, limit=limit, out_dir=out_dir, console=console, use_cache=use_cache, against=against
        )
    except SpecrunError as error:  # this cell failed; the others still run, and the matrix exits with its code
        console.print(f"[red]error:[/] {escape(str(error))}", highlight=False)
        return {"status": "failed", "exit_code": error.exit_code, "error": str(error)}
    return {"status": "succeeded", "run": str(outcome.run.path), "exit_code": outcome.exit_code, "gates": outcome.gates}


def _matrix_id(identities: Any) -> str:
    return hashlib.sha256(json.dumps(list(identities), sort_keys=True).encode()).hexdigest()[:12]


def _write_record(
    folder: Path,
    matrix: Matrix,
    selected: list[Cell],
    specs: dict[Cell, Spec],
    identity: dict[Cell, dict[str, Any]],
    records: dict[Cell, dict[str, Any]],
    out_dir: Path,
    only: list[str],
    limit: int | None,
    stages: tuple[str, ...],
    console: Console,
    shard: Shard | None = None,
) -> int:
    """matrix.json and the comparison over every cell with results; returns the selected cells' worst exit code."""
    cells = []
    for cell in matrix.cells:
        record = records.get(cell)
        if record is None:  # not run now: finished earlier (any --only), or not yet
            done = finished_run(out_dir, specs[cell].name, identity[cell])
            record = {"status": "succeeded", "run": str(done)} if done else {"status": "not run"}
        cells.append(
            {
                "label": cell.label,
                "slug": cell.slug,
                "values": cell.as_dict(),
                "spec_hash": identity[cell]["spec_hash"],
                "selected": cell in selected,
                **record,
            }
        )
    codes = [c["exit_code"] for c in cells if c["selected"] and "exit_code" in c]
    exit_code = max(codes, default=EXIT_OK)
    if INTERRUPTED in codes:
        exit_code = INTERRUPTED
    document = {
        "spec": str(matrix.path),
        "matrix": matrix.keys,
        "limit": limit,
        "stages": list(stages),
        "only": only,
        "shard": None if shard is None else str(shard),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "exit_code": exit_code,
        "cells": cells,
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "matrix.json", json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")
        labels = {
            Path(c["run"]).resolve(): c["label"] for c in cells if c["status"] == "succeeded" and "eval" in stages
        }
        if labels:
            comparison = compare(list(labels), labels)
            write_atomic(folder / "comparison.md", render_markdown(comparison))
            write_atomic(folder / "comparison.html", render_html(comparison))
            console.print(render_terminal(comparison))
    except OSError as error:
        raise RuntimeFailure(f"{folder}: cannot write the matrix record: {error.strerror or error}") from None
    console.print(f"matrix: {escape(str(folder / 'matrix.json'))} (exit {exit_code}, the worst of its cells')")
    return exit_code


def _dry_run(
    cells: list[Cell],
    specs: dict[Cell, Spec],
    stages: tuple[str, ...],
    limit: int | None,
    out_dir: Path,
    console: Console,
    against: Path | None = None,
) -> int:
    table = Table(title="dry run: what each cell's evaluation would send and cost")
    for header in ("cell", "eval examples", "prompt tokens", "max completion tokens", "estimated $"):
        table.add_column(header, justify="left" if header == "cell" else "right")
    total, unknown = 0.0, []
    for number, cell in enumerate(cells, 1):
        console.rule(f"cell {number}/{len(cells)}: {escape(cell.label)}")
        outcome = run_spec(
            specs[cell], stages=stages, limit=limit, dry_run=True, out_dir=out_dir, console=console, against=against
        )
        estimate = outcome.estimate or {}
        usd = estimate.get("usd")
        if usd is None:
            unknown.append(cell.label)
        else:
            total += usd
        figures = [estimate.get(k) for k in ("examples", "prompt_tokens", "max_completion_tokens")]
        table.add_row(
            Text(cell.label),
            *("—" if f is None else str(f) for f in figures),
            "unknown" if usd is None else f"{usd:.4f}",
        )
    console.print(table)
    note = f" (no price for {len(unknown)} cells: {'; '.join(unknown)})" if unknown else ""
    console.print(f"dry run: {len(cells)} cells, estimated total ≈ ${total:.4f}{escape(note)}")
    return EXIT_OK
