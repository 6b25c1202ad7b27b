"""`specrun compare` on synthetic run folders: the table, the keys that differ, globs and bad paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.cli import main
from runner.commands.compare import compare, differing_keys, find_runs, render_html, render_markdown
from runner.core.errors import InvalidInput


def make_run(
    root: Path,
    name: str,
    run_id: str,
    spec: dict | None = None,
    metrics: dict | None = None,
    status: str = "succeeded",
) -> Path:
    folder = root / name / run_id
    folder.mkdir(parents=True)
    modes = ["zero_shot", "few_shot"]  # both read few_shot.*, so its keys count as differences
    doc = {"name": name, "task": "classification", "evaluation": {"calibration": "mean", "modes": modes}}
    doc.update(spec or {})
    (folder / "manifest.json").write_text(json.dumps({"name": name, "status": status, "spec": doc}), encoding="utf-8")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def row(accuracy: float, ci: list[float] | None = None) -> dict:
    found = {"accuracy": accuracy, "macro_f1": accuracy / 2, "invalid_rate": 0.0, "n": 10}
    if ci:
        found["ci95"] = {"accuracy": ci}
    return found


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    make_run(tmp_path, "tnews", "20260101T000000Z", metrics={"zero_shot": row(0.365, [0.335, 0.396])})
    make_run(
        tmp_path,
        "tnews",
        "20260102T000000Z",
        spec={"evaluation": {"calibration": "none", "modes": ["zero_shot", "few_shot"]}, "few_shot": {"k": 4}},
        metrics={"zero_shot": row(0.11), "baseline": row(0.3)},
    )
    return tmp_path


def test_differing_keys_are_dotted_paths_with_each_runs_value():
    docs = [
        {"a": {"b": 1, "c": [1, 2]}, "same": "x"},
        {"a": {"b": 2, "c": [1, 2]}, "same": "x", "extra": {"k": True}},
    ]
    assert differing_keys(docs) == {"a.b": [1, 2], "extra.k": ["—", True]}
    assert differing_keys([docs[0], docs[0]]) == {}


def test_table_has_every_row_the_primary_metric_first_and_intervals_when_present(runs):
    comparison = compare(find_runs([str(runs / "tnews" / "*")]))
    ((task, header, rows),) = comparison.tables()
    assert task == "classification" and header[:3] == ["run", "row", "accuracy"]
    assert [r[:2] for r in rows] == [
        ["tnews/20260101T000000Z", "zero_shot"],
        ["tnews/20260102T000000Z", "zero_shot"],
        ["tnews/20260102T000000Z", "baseline"],
    ]
    assert rows[0][2] == "36.5% [33.5, 39.6]"
    assert rows[1][2] == "11.0%"  # no ci95 in that run: the value alone
    assert comparison.differing == {"evaluation.calibration": ["mean", "none"], "few_shot.k": ["—", 4]}


def test_markdown_and_html_carry_the_table_and_the_differences(runs, tmp_path):
    out = tmp_path / "cmp.md"
    assert main(["compare", str(runs / "tnews" / "*"), "--format", "markdown", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| tnews/20260101T000000Z | zero_shot | 36.5% [33.5, 39.6] |" in text
    assert "| run | evaluation.calibration | few_shot.k |" in text
    assert "| tnews/20260102T000000Z | none | 4 |" in text
    assert main(["compare", str(runs / "tnews" / "*"), "--format", "html", "--out", str(tmp_path / "c.html")]) == 0
    page = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "36.5% [33.5, 39.6]" in page and "few_shot.k" in page


def test_html_escapes_what_runs_hold_and_fetches_nothing(tmp_path):
    hostile = "<script>alert(1)</script>"
    make_run(tmp_path, "x", "r1", spec={"description": hostile}, metrics={"zero_shot": row(0.5)})
    make_run(tmp_path, "x", "r2", spec={"description": "plain"}, metrics={hostile: row(0.5)})
    page = render_html(compare(find_runs([str(tmp_path / "x" / "*")])))
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "src=" not in page and "href=" not in page and "@import" not in page


def test_terminal_table_by_default(runs, capsys):
    assert main(["compare", str(runs / "tnews" / "20260101T000000Z"), str(runs / "tnews" / "20260102T000000Z")]) == 0
    err = capsys.readouterr().err
    assert "36.5% [33.5, 39.6]" in err and "evaluation.calibration" in err


def test_runs_of_different_task_types_get_a_table_each(runs):
    make_run(
        runs,
        "cluener",
        "r1",
        spec={"task": "extraction"},
        metrics={"zero_shot": {"entity_f1": 0.3, "ci95": {"entity_f1": [0.2, 0.4]}}},
    )
    comparison = compare(find_runs([str(runs / "tnews" / "*"), str(runs / "cluener" / "r1")]))
    tables = comparison.tables()
    assert [t[0] for t in tables] == ["classification", "extraction"]
    assert tables[1][1][2] == "entity_f1" and tables[1][2][0][2] == "30.0% [20.0, 40.0]"
    assert "## extraction" in render_markdown(comparison)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nothing-*", "matches no file or folder"),
        ("missing", "no such run folder"),
        ("tnews", "not a run folder"),  # the spec's folder, not one of its runs
    ],
)
def test_bad_targets_are_exit_2_with_one_line(runs, capsys, target, message):
    assert main(["compare", str(runs / target)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_run_without_metrics_or_with_a_broken_manifest_is_exit_2(runs, capsys):
    unfinished = make_run(runs, "tnews", "20260103T000000Z", status="interrupted")
    assert main(["compare", str(unfinished)]) == 2
    assert "has no metrics.json (run status: interrupted)" in capsys.readouterr().err
    (unfinished / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInput, match="unreadable"):
        compare(find_runs([str(unfinished)]))


def test_a_run_named_twice_is_compared_once(runs):
    one = str(runs / "tnews" / "20260101T000000Z")
    assert len(find_runs([one, one, str(runs / "tnews" / "2026010*")])) == 2


def test_a_matrix_folder_stands_for_its_finished_cells_labelled_by_cell(runs, capsys):
    first, second = sorted((runs / "tnews").iterdir())
    unfinished = make_run(runs, "tnews", "20260103T000000Z", status="interrupted")
    folder = runs / "tnews" / "matrix-abc"
    folder.mkdir()
    cells = [
        {"label": "evaluation.calibration=mean", "status": "succeeded", "run": str(first)},
        {"label": "evaluation.calibration=none", "status": "succeeded", "run": str(second)},
        {"label": "few_shot.k=9", "status": "interrupted", "run": str(unfinished)},
        {"label": "few_shot.k=10", "status": "not run"},
    ]
    (folder / "matrix.json").write_text(json.dumps({"cells": cells}), encoding="utf-8")
    assert main(["compare", str(folder), "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert "| evaluation.calibration=mean | zero_shot | 36.5% [33.5, 39.6] |" in text
    assert "evaluation.calibration=none | baseline" in text and "few_shot.k=9" not in text
    (folder / "matrix.json").write_text(json.dumps({"cells": cells[2:]}), encoding="utf-8")
    assert main(["compare", str(folder)]) == 2
    assert "this matrix has no finished cell yet" in capsys.readouterr().err


def test_a_matrix_folder_compared_from_another_directory_finds_its_cells(runs, capsys, monkeypatch, tmp_path):
    """matrix.json records cells as `runs/<name>/<id>` relative to where the matrix ran; compare and
    --against read them beside the matrix folder, from any working directory."""
    first, second = sorted((runs / "tnews").iterdir())
    folder = runs / "tnews" / "matrix-abc"
    folder.mkdir()
    cells = [
        {"label": "a", "status": "succeeded", "run": f"runs/tnews/{first.name}"},
        {"label": 7, "status": "succeeded", "run": f"runs/tnews/{second.name}"},  # a label that is not a string
        {"label": "c", "status": "succeeded", "run": 12},  # not a path: skipped
    ]
    (folder / "matrix.json").write_text(json.dumps({"cells": cells}), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["compare", str(folder), "--format", "html"]) == 0
    text = capsys.readouterr().out
    assert "<td>a</td><td>zero_shot</td>" in text and "<td>7</td><td>baseline</td>" in text
    (folder / "matrix.json").write_text(json.dumps({"cells": {"not": "a list"}}), encoding="utf-8")
    assert main(["compare", str(folder)]) == 2
    assert "no finished cell" in capsys.readouterr().err


@pytest.mark.parametrize(
    "manifest_spec, metrics, message",
    [
        ({"task": ["classification"]}, {"zero_shot": row(0.5)}, "no spec with a known task type"),
        ({}, {"zero_shot": {**row(0.5), "ci95": [0.1, 0.2]}}, None),  # ci95 not a mapping: no interval
        ({}, {"zero_shot": {**row(0.5), "ci95": {"accuracy": [float("nan"), True]}}}, None),
        ({}, {"<script>x</script></td>": {"accuracy": 1e308, "macro_f1": True, "invalid_rate": 10**400}}, None),
    ],
)
def test_odd_manifest_and_metrics_values_are_exit_2_or_shown_blank_never_a_traceback(
    tmp_path, capsys, manifest_spec, metrics, message
):
    run = make_run(tmp_path, "tnews", "20260101T000000Z", spec=manifest_spec, metrics=metrics)
    code = main(["compare", str(run), "--format", "html"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if message:
        assert code == 2 and message in err
    else:
        assert code == 0 and "nan" not in out and "inf" not in out and "<script>" not in out


def test_the_terminal_table_prints_labels_and_values_as_text_not_rich_markup(tmp_path, capsys):
    """A row, cell label or spec value like "[/]" was parsed as rich markup: MarkupError traceback."""
    run = make_run(tmp_path, "tnews", "20260101T000000Z", spec={"prompt": {"system": "[/x]"}},
                   metrics={"[/]": row(0.5), "[bold red]x": row(0.4)})  # fmt: skip
    other = make_run(tmp_path, "tnews", "20260102T000000Z", metrics={"zero_shot": row(0.3)})
    assert main(["compare", str(run), str(other)]) == 0
    err = capsys.readouterr().err
    assert "[/]" in err and "[bold red]x" in err and "[/x]" in err and "Traceback" not in err
    out = tmp_path / "o[" / "]" / "c.html"
    out.parent.mkdir(parents=True)
    assert main(["compare", str(run), "--format", "html", "--out", str(out)]) == 0  # "comparison: …o[/]…" too
    assert f"comparison: {out}" in capsys.readouterr().err


def test_a_folder_whose_name_has_glob_characters_is_read_as_named(tmp_path, capsys):
    run = make_run(tmp_path / "runs[1]", "tnews", "20260101T000000Z", metrics={"zero_shot": row(0.5)})
    assert main(["compare", str(run)]) == 0  # was "matches no file or folder": [1] read as a character class
    assert main(["compare", str(tmp_path / "runs[1]" / "tnews" / "2026*")]) == 2  # a pattern still, matching nothing


def test_markdown_rows_survive_every_kind_of_line_break(tmp_path):
    run = make_run(tmp_path, "tnews", "20260101T000000Z", metrics={"a\rb\u2028c\x85d\ne|f": row(0.5)})
    text = render_markdown(compare([run]))
    (line,) = [line for line in text.splitlines() if "a b c d e" in line]
    assert line.startswith("| tnews/20260101T000000Z | a b c d e\\|f |")
