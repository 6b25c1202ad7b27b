"""Matrix specs: cells, --only, validation naming the matrix key, a full run, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.cli import main
from runner.commands.matrix import MAX_CELLS, read_matrix, select, value_text
from runner.core.errors import InvalidInput
from tests.conftest import ROOT, write_project
from tests.test_remote import remote_project


def matrix_project(root: Path, matrix: dict, **extra) -> Path:
    return write_project(root, {"matrix": matrix, **extra})


def run_folders(out: Path, name: str = "tiny") -> list[Path]:
    return sorted(p for p in (out / name).iterdir() if p.is_dir() and not p.name.startswith("matrix-"))


def matrix_record(out: Path, name: str = "tiny") -> dict:
    (folder,) = (out / name).glob("matrix-*")
    return json.loads((folder / "matrix.json").read_text(encoding="utf-8"))


# --- cells ---------------------------------------------------------------------------------------------


def test_cells_are_every_combination_in_a_fixed_order(tmp_path):
    spec = matrix_project(tmp_path, {"few_shot.k": [2, 4], "evaluation.calibration": ["none", "mean"]})
    matrix = read_matrix(spec)
    assert [cell.label for cell in matrix.cells] == [
        "few_shot.k=2,evaluation.calibration=none",
        "few_shot.k=2,evaluation.calibration=mean",
        "few_shot.k=4,evaluation.calibration=none",
        "few_shot.k=4,evaluation.calibration=mean",
    ]
    assert matrix.cells[0].slug == "few_shot.k=2,evaluation.calibration=none"
    (tmp_path / "plain").mkdir()
    assert read_matrix(write_project(tmp_path / "plain")) is None


def test_labels_read_back_as_their_values_and_slugs_are_file_names(tmp_path):
    spec = matrix_project(tmp_path, {"evaluation.gates": [["accuracy >= 0.5"], []], "prompt.system": ["a/b c", "yes"]})
    labels = [cell.label for cell in read_matrix(spec).cells]
    assert labels[0] == 'evaluation.gates=["accuracy >= 0.5"],prompt.system=a/b c'
    assert labels[1] == 'evaluation.gates=["accuracy >= 0.5"],prompt.system="yes"'  # bare yes would read as true
    assert value_text("a: b: c") == '"a: b: c"' and value_text(None) == "null" and value_text("4") == '"4"'
    slugs = [cell.slug for cell in read_matrix(spec).cells]
    assert len(set(slugs)) == 4 and not any(ch in slug for slug in slugs for ch in '/ "[]')


def test_only_picks_cells_and_a_value_outside_the_matrix_is_an_error(tmp_path):
    matrix = read_matrix(
        matrix_project(tmp_path, {"few_shot.k": [2, 4, 8], "evaluation.calibration": ["none", "mean"]})
    )
    assert [c.label for c in select(matrix, ["few_shot.k=4"])] == [
        "few_shot.k=4,evaluation.calibration=none",
        "few_shot.k=4,evaluation.calibration=mean",
    ]
    picked = select(matrix, ["few_shot.k=2", "few_shot.k=8", "evaluation.calibration=mean"])
    assert [c.label for c in picked] == [
        "few_shot.k=2,evaluation.calibration=mean",
        "few_shot.k=8,evaluation.calibration=mean",
    ]
    with pytest.raises(InvalidInput, match=r"3 is not one of few_shot.k's values \(2, 4, 8\)"):
        select(matrix, ["few_shot.k=3"])
    assert select(matrix, ["few_shot.k=4.0"]) == select(matrix, ["few_shot.k=4"])  # one number, as the schema sees it
    with pytest.raises(InvalidInput, match="true is not one of"):
        select(read_matrix(matrix_project(tmp_path, {"few_shot.k": [1, 2]})), ["few_shot.k=true"])
    with pytest.raises(InvalidInput, match=r"few_shot\.seed is not a matrix key"):
        select(matrix, ["few_shot.seed=1"])
    with pytest.raises(InvalidInput, match="write it as"):
        select(matrix, ["few_shot.k"])
    for hostile, problem in (("2024-13-45", "month must be in 1..12"), ("&a [*a]", "recursive YAML alias")):
        with pytest.raises(InvalidInput, match=problem):  # were a ValueError and a RecursionError traceback
            select(matrix, [f"few_shot.k={hostile}"])


def test_only_outside_the_matrix_is_exit_2_before_anything_runs(tmp_path, capsys):
    spec = matrix_project(tmp_path, {"evaluation.calibration": ["none", "mean"]})
    assert main(["run", str(spec), "--only", "evaluation.calibration=median", "--out", str(tmp_path / "runs")]) == 2
    assert "median is not one of" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main(["run", str(write_project(tmp_path)), "--only", "few_shot.k=2", "--out", str(tmp_path / "runs")]) == 2
    assert "has no matrix" in capsys.readouterr().err


# --- validation: every error names the matrix key (and the cell) ----------------------------------------


def spec_line(spec: Path, text: str) -> int:
    return next(i for i, line in enumerate(spec.read_text(encoding="utf-8").splitlines(), 1) if text in line)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ({"few_shot.kk": [1, 2]}, "matrix cell few_shot.kk=1: {spec}:{line}: few_shot.kk: unknown key 'kk'"),
        (
            {"few_shot.k": [2, 0]},
            "matrix cell few_shot.k=0: {spec}:{line}: few_shot.k: 0 is less than the minimum of 1",
        ),
        (
            {"evaluation.calibration": ["none", "mean"]},  # the project generates: mean needs scores
            "matrix cell evaluation.calibration=mean: {spec}:{line}: evaluation.calibration: calibration needs method: score",
        ),
        ({"checks.model.name": ["x"]}, "{spec}:{line}: matrix.checks.model.name: 'model' is not a mapping in the spec"),
        ({"few_shot.k": [2, 2]}, "{spec}:{line}: matrix.few_shot.k: value 2 is listed twice"),
        ({"few_shot.k": []}, "{spec}:{line}: matrix.few_shot.k: give a non-empty list of values"),
        ({"name": ["a", "b"]}, "{spec}:{line}: matrix.name: name cannot vary by cell"),
        ({"few_shot": [{"k": 1}], "few_shot.k": [2]}, "matrix.few_shot.k: overlaps matrix key few_shot"),
    ],
)
def test_matrix_errors_name_the_key_its_line_and_the_cell(tmp_path, capsys, matrix, message):
    spec = matrix_project(tmp_path, matrix, **{"evaluation.method": "generate", "evaluation.calibration": "none"})
    key = next(k for k in reversed(list(matrix)))
    line = spec_line(spec, f"  {key}:")  # the matrix's line for the key
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert message.format(spec=spec, line=line) in " ".join(err.split()), err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["2024-01-01", "!!binary aGVsbG8=", "{1: a, b: c}"])
def test_a_matrix_value_json_cannot_hold_is_exit_2_not_a_traceback(tmp_path, capsys, value):
    spec = matrix_project(tmp_path, {})
    text = spec.read_text(encoding="utf-8").replace("matrix: {}", f"matrix:\n  prompt.system: [{value}, x]")
    spec.write_text(text, encoding="utf-8")
    for command in (["validate", str(spec)], ["run", str(spec), "--dry-run", "--out", str(tmp_path / "runs")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "matrix.prompt.system: every value must be a JSON value" in err and "Traceback" not in err


def test_set_of_the_matrix_itself_is_exit_2_not_silently_ignored(tmp_path, capsys):
    """The matrix is read from the file, so --set matrix=… on a plain spec ran it as one spec, unvaried."""
    plain = write_project(tmp_path)
    assert main(["validate", str(plain), "--set", 'matrix={"few_shot.k": [1, 2]}']) == 2
    assert "--set matrix: --set cannot change a matrix" in capsys.readouterr().err
    spec = matrix_project(tmp_path, {"few_shot.k": [1, 2]})
    assert main(["run", str(spec), "--dry-run", "--set", "matrix.few_shot.k=[5]", "--out", str(tmp_path / "r")]) == 2
    assert "--set matrix.few_shot.k: --set cannot change a matrix" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_values_that_look_like_rich_markup_are_printed_as_they_are(api, tmp_path, capsys):
    """Labels went into console.print, rules and tables as rich markup: "[/]" was a MarkupError traceback."""
    spec = remote_project(tmp_path, api, matrix={"prompt.system": ["[/]", "[bold]x"]})
    assert main(["validate", str(spec)]) == 0
    assert main(["run", str(spec), "--dry-run", "--out", str(tmp_path / "dry")]) == 0
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    assert 'prompt.system="[/]"' in err and 'prompt.system="[bold]x"' in err and "Traceback" not in err


def test_too_many_cells_is_an_error(tmp_path):
    spec = matrix_project(tmp_path, {"few_shot.k": list(range(1, 9)), "few_shot.seed": list(range(9))})
    with pytest.raises(InvalidInput, match=f"72 cells; a matrix may have at most {MAX_CELLS}"):
        read_matrix(spec)


def test_set_of_a_matrix_key_is_an_error_and_of_another_key_applies_to_every_cell(tmp_path, capsys):
    spec = matrix_project(tmp_path, {"few_shot.k": [2, 4]})
    assert main(["validate", str(spec), "--set", "few_shot.k=3"]) == 2
    assert (
        "--set few_shot.k changes a key this matrix varies; pick cells with --only few_shot.k=VALUE"
        in capsys.readouterr().err
    )
    assert main(["validate", str(spec), "--set", "few_shot={k: 3}"]) == 2  # a parent of a matrix key clashes too
    assert main(["validate", str(spec), "--set", "splits.train.n=4"]) == 0
    assert capsys.readouterr().err.count("4 train") == 2


def test_a_cell_is_the_spec_with_its_value_and_without_the_matrix(tmp_path):
    from runner.commands.matrix import cell_spec

    spec = matrix_project(tmp_path, {"few_shot.k": [2, 4]})
    matrix = read_matrix(spec)
    first, second = (cell_spec(matrix, cell, []) for cell in matrix.cells)
    assert first.doc["few_shot"]["k"] == 2 and second.doc["few_shot"]["k"] == 4
    assert "matrix" not in first.doc and first.hash() != second.hash()
    # the same spec written without a matrix is the same run: a matrix reuses runs made by hand and vice versa
    from runner.config.spec import load_spec

    assert load_spec(write_project(tmp_path, {"few_shot.k": 2})).hash() == first.hash()


# --- running ---------------------------------------------------------------------------------------------


def test_a_matrix_runs_every_cell_applies_gates_per_cell_and_compares_them(api, tmp_path, capsys):
    spec = remote_project(
        tmp_path,
        api,
        matrix={"evaluation.gates": [["accuracy >= 0.5"], ["accuracy > 1"]], "provider.params.temperature": [0, 1]},
    )
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 1  # the worst cell failed a gate
    record = matrix_record(out)
    assert [c["exit_code"] for c in record["cells"]] == [0, 0, 1, 1]
    assert record["exit_code"] == 1 and all(c["status"] == "succeeded" for c in record["cells"])
    assert [Path(c["run"]) for c in record["cells"]] == run_folders(out)
    assert {r["temperature"] for r in api.chat_requests} == {0, 1} and len(api.chat_requests) == 18
    err = capsys.readouterr().err
    assert "provider.params.temperature" in err and "spec keys that differ" in err
    (folder,) = (out / "tiny").glob("matrix-*")
    markdown = (folder / "comparison.md").read_text(encoding="utf-8")
    assert '| evaluation.gates=["accuracy > 1"],provider.params.temperature=1 | zero_shot | 100.0%' in markdown
    assert (folder / "comparison.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["compare", str(folder), "--format", "markdown", "--out", str(tmp_path / "c.md")]) == 0


def test_a_failing_cell_does_not_stop_the_others_and_sets_the_exit_code(api, tmp_path):
    spec = remote_project(tmp_path, api, matrix={"provider.api_key_env": ["NO_SUCH_KEY_VARIABLE", "OPENAI_API_KEY"]})
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    failed, ran = matrix_record(out)["cells"]
    assert failed["status"] == "failed" and failed["exit_code"] == 2 and "NO_SUCH_KEY_VARIABLE" in failed["error"]
    assert ran["status"] == "succeeded" and ran["exit_code"] == 0 and len(api.chat_requests) == 9


def test_finished_cells_are_not_run_again_and_new_values_run_only_their_cells(api, tmp_path, capsys):
    spec = remote_project(tmp_path, api, matrix={"provider.params.temperature": [0, 1]})
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out), "--no-cache", "--only", "provider.params.temperature=1"]) == 0
    assert len(api.chat_requests) == 9
    assert [c["status"] for c in matrix_record(out)["cells"]] == ["not run", "succeeded"]
    assert main(["run", str(spec), "--out", str(out), "--no-cache"]) == 0
    assert [r["temperature"] for r in api.chat_requests].count(1) == 9  # the finished cell was read, not rerun
    assert len(api.chat_requests) == 18 and len(run_folders(out)) == 2
    assert "finished earlier" in capsys.readouterr().err


def test_a_finished_cell_with_damaged_metrics_runs_again_and_damaged_gates_are_recomputed(api, tmp_path, capsys):
    spec = remote_project(tmp_path, api, matrix={"provider.params.temperature": [0, 1]},
                          **{"evaluation.gates": ["accuracy >= 0.5"]})  # fmt: skip
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    first, second = run_folders(out)
    (first / "metrics.json").write_text("{broken", encoding="utf-8")  # was exit 2 from the comparison, after every cell
    manifest = json.loads((second / "manifest.json").read_text(encoding="utf-8"))
    (second / "manifest.json").write_text(json.dumps({**manifest, "gates": "x"}), encoding="utf-8")  # was a TypeError
    capsys.readouterr()
    assert main(["run", str(spec), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"finished earlier: {second}" in err and "Traceback" not in err
    cells = matrix_record(out)["cells"]
    assert cells[0]["run"] not in (str(first), str(second)) and cells[1]["run"] == str(second)
    assert cells[1]["gates"][0]["gate"] == "accuracy >= 0.5" and cells[1]["gates"][0]["passed"]


def test_dry_run_prints_each_cell_and_the_total(api, tmp_path, capsys):
    spec = remote_project(tmp_path, api, matrix={"splits.train.n": [3, 6]})
    assert main(["run", str(spec), "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "1. splits.train.n=3" in err and "2. splits.train.n=6" in err
    assert "evaluating 9 examples on gpt-4o-mini" in err and "evaluating 6 examples on gpt-4o-mini" in err
    assert "dry run: 2 cells, estimated total ≈ $" in err
    assert api.chat_requests == []


# --- resume after a kill -------------------------------------------------------------------------------


def stop_in_second_cell(api, tmp_path: Path, signum: int) -> tuple[Path, Path, str, int]:
    """Run a three-cell matrix in a subprocess (slow server, one request at a time) and send `signum`
    once the second cell has had three answers; returns the spec, the runs folder, the output and exit code."""
    spec = remote_project(
        tmp_path,
        api,
        matrix={"provider.params.temperature": [0, 0.5, 1]},
        **{"provider.concurrency": 1},
    )
    out = tmp_path / "runs"
    api.delay = 0.2
    command = [sys.executable, "-m", "runner", "run", str(spec), "--out", str(out), "--no-cache"]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while sum(r["temperature"] == 0.5 for r in api.chat_requests) < 3:
            assert process.poll() is None and time.monotonic() < deadline, "the matrix never reached its second cell"
            time.sleep(0.02)
        process.send_signal(signum)
        output = process.communicate(timeout=60)[0].decode()
    finally:
        api.delay = 0
        if process.poll() is None:
            process.kill()
    return spec, out, output, process.returncode


def test_ctrl_c_stops_the_matrix_after_recording_the_interrupted_cell(api, tmp_path):
    _, out, output, code = stop_in_second_cell(api, tmp_path, signal.SIGINT)
    assert code == 130 and "Traceback" not in output, output
    record = matrix_record(out)
    assert [c["status"] for c in record["cells"]] == ["succeeded", "interrupted", "not run"]
    assert record["exit_code"] == 130 and record["cells"][1]["run"] == str(run_folders(out)[1])
    assert not any(r["temperature"] == 1 for r in api.chat_requests)  # the third cell never started


def test_a_killed_matrix_resumes_cell_by_cell(api, tmp_path):
    """SIGKILL in the second of three cells; the rerun (no response cache) asks nothing the first cell
    or the killed cell's saved answers already hold, and ends with every cell done."""
    spec, out, _, _ = stop_in_second_cell(api, tmp_path, signal.SIGKILL)
    before = [r["temperature"] for r in api.chat_requests]
    assert before.count(0) == 9 and before.count(1) == 0
    folders = run_folders(out)
    assert len(folders) == 2  # the finished first cell, the killed second one
    killed = json.loads((folders[1] / "manifest.json").read_text(encoding="utf-8"))
    assert killed["status"] == "running"

    assert main(["run", str(spec), "--out", str(out), "--no-cache"]) == 0
    asked_again = [r for r in api.chat_requests[len(before) :]]
    assert not any(r["temperature"] == 0 for r in asked_again)  # the finished cell was not rerun
    second = [r["messages"][-1]["content"] for r in api.chat_requests if r["temperature"] == 0.5]
    assert len(set(second)) == 9 and len(second) <= 9 + 1  # only the answer in flight at the kill is asked twice
    assert [r["temperature"] for r in asked_again].count(1) == 9
    assert run_folders(out) == [*folders, run_folders(out)[2]]  # the killed cell resumed in its own folder
    record = matrix_record(out)
    assert [c["status"] for c in record["cells"]] == ["succeeded"] * 3 and record["exit_code"] == 0
    for cell in record["cells"]:
        metrics = json.loads((Path(cell["run"]) / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["zero_shot"]["n"] == 9
