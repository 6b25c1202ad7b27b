"""`specrun run MATRIX_SPEC --shard i/N`: N disjoint parts of the matrix whose union is the matrix,
run on several machines, collected into one runs folder and compared as one table."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from runner.cli import main
from runner.commands.matrix import Shard, parse_shard, read_matrix, run_matrix, select, shard_of
from tests.test_matrix import matrix_project, matrix_record, run_folders
from tests.test_remote import remote_project

GRID = {"few_shot.k": [0, 2, 4], "evaluation.calibration": ["none", "mean"], "prompt.system": ["a", "b"]}


@pytest.mark.parametrize("count", [1, 2, 3, 5, 12, 13])
@pytest.mark.parametrize("only", [[], ["few_shot.k=2", "few_shot.k=4"], ["prompt.system=b"]])
def test_shards_partition_the_selected_cells(tmp_path: Path, count: int, only: list[str]) -> None:
    matrix = read_matrix(matrix_project(tmp_path, GRID))
    selected = select(matrix, only)
    parts = [shard_of(selected, Shard(index, count)) for index in range(1, count + 1)]
    every = [cell for part in parts for cell in part]
    assert sorted(c.label for c in every) == sorted(c.label for c in selected)  # the union is the selection
    assert len(set(every)) == len(every)  # no cell in two shards
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # as even as the count allows
    (tmp_path / "again").mkdir()
    again = read_matrix(matrix_project(tmp_path / "again", GRID))  # another machine splits it the same way
    assert [c.label for c in shard_of(select(again, only), Shard(1, count))] == [c.label for c in parts[0]]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2", "1/2/3", ""])
def test_a_bad_shard_is_exit_2_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    with pytest.raises(ValueError, match="i/N"):
        parse_shard(text)
    with pytest.raises(SystemExit) as stopped:
        main(["run", str(matrix_project(tmp_path, GRID)), f"--shard={text}"])
    assert stopped.value.code == 2 and "--shard" in capsys.readouterr().err
    assert parse_shard("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"


def test_shards_on_separate_machines_run_each_cell_once_and_compare_as_one_table(api, tmp_path: Path) -> None:
    matrix = {"provider.params.temperature": [0, 1], "evaluation.gates": [["accuracy >= 0.5"], []]}
    # timeout_s 30: a loaded machine must not turn a slow answer into a retry, which the count below would see
    spec = remote_project(tmp_path, api, matrix=matrix, **{"provider.timeout_s": 30})
    console = Console(file=io.StringIO())
    machines = [tmp_path / f"machine{index}" for index in (1, 2, 3)]
    fresh = {"overrides": [], "only": [], "console": console, "use_cache": False}  # each machine asks the API
    codes = [
        run_matrix(read_matrix(spec), out_dir=out, shard=Shard(index, 3), **fresh)
        for index, out in enumerate(machines, 1)
    ]
    assert codes == [0, 0, 0]
    assert len(api.chat_requests) == 4 * 9  # four cells, nine eval lines each: every cell run exactly once
    assert [len(run_folders(out)) for out in machines] == [2, 1, 1]
    assert matrix_record(machines[1])["shard"] == "2/3"

    collected = tmp_path / "collected"  # what a CI job downloading every shard's artifact holds
    for index, out in enumerate(machines):  # one folder per shard: two shards may start in the same second
        shutil.copytree(out, collected / f"shard-{index + 1}")
    table = tmp_path / "table.md"
    assert main(["compare", str(collected / "*" / "tiny" / "*Z*"), "--format", "markdown", "--out", str(table)]) == 0
    rows = [line for line in table.read_text(encoding="utf-8").splitlines() if "| zero_shot |" in line]
    assert len(rows) == 4  # one table, one row per cell

    # each shard run again where it ran: every cell found finished, nothing asked again
    for index, out in enumerate(machines, 1):
        assert run_matrix(read_matrix(spec), out_dir=out, shard=Shard(index, 3), **fresh) == 0
    assert len(api.chat_requests) == 36


def test_the_run_command_passes_its_shard(api, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = remote_project(tmp_path, api, matrix={"provider.params.temperature": [0, 1]})
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out), "--no-cache", "--shard", "2/2"]) == 0
    assert [r["temperature"] for r in api.chat_requests] == [1] * 9
    assert "1 of 2 cells (shard 2/2)" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    plain = remote_project(tmp_path / "plain", api)
    assert main(["run", str(plain), "--out", str(out), "--shard", "1/2"]) == 2
    assert "--shard" in capsys.readouterr().err
