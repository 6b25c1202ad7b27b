"""The run folder: JSONL read by "\\n" only, torn lines, locks, unreadable manifests, bad --out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.core.errors import InvalidInput, RuntimeFailure
from runner.core.jsonl import read_jsonl, repair_tail
from runner.core.runfolder import RunFolder
from tests.conftest import ROOT

IDENTITY = {"spec_hash": "abc", "limit": None, "stages": ["eval"], "dry_run": False}
SEPARATORS = "a\u2028b\u2029c\u0085d\x1ce\x1df\x1eg\x0bh\x0ci\rj"  # all split by str.splitlines()


def finish(run: RunFolder, status: str, identity: dict = IDENTITY, **extra) -> None:
    run.write_json("manifest.json", {"identity": identity, "status": status, **extra})
    run.close()


def test_rows_with_unicode_line_separators_survive_a_round_trip(tmp_path):
    run, _ = RunFolder.open(tmp_path, "tiny", IDENTITY)
    rows = [{"id": f"L{i}", "text": SEPARATORS * i} for i in range(4)]
    run.append_jsonl("zero_shot.generate.jsonl", rows[:2])
    run.append_jsonl("zero_shot.generate.jsonl", rows[2:])
    assert run.read_jsonl("zero_shot.generate.jsonl") == rows
    assert [n for n, _ in read_jsonl(run.file("zero_shot.generate.jsonl"))] == [1, 2, 3, 4]


def test_a_torn_last_line_is_dropped_and_the_next_append_starts_a_new_line(tmp_path):
    run, _ = RunFolder.open(tmp_path, "tiny", IDENTITY)
    run.append_jsonl("x.jsonl", [{"id": "L1"}, {"id": "L2"}])
    with run.file("x.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"id": "L3", "sco')  # killed mid-write
    assert run.read_jsonl("x.jsonl") == [{"id": "L1"}, {"id": "L2"}]
    run.append_jsonl("x.jsonl", [{"id": "L3"}, {"id": "L4"}])
    assert run.read_jsonl("x.jsonl") == [{"id": f"L{i}"} for i in range(1, 5)]
    assert run.file("x.jsonl").read_text(encoding="utf-8").count("\n") == 4


def test_a_whole_last_line_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "L1"}\n{"id": "L2"}', encoding="utf-8")
    repair_tail(path)
    assert path.read_text(encoding="utf-8") == '{"id": "L1"}\n{"id": "L2"}\n'


def test_damage_before_the_last_line_is_an_error_naming_the_line(tmp_path):
    run, _ = RunFolder.open(tmp_path, "tiny", IDENTITY)
    run.file("x.jsonl").write_text('{"id": "L1"}\n{"id": \n{"id": "L3"}\n', encoding="utf-8")
    with pytest.raises(RuntimeFailure, match=r"x\.jsonl:2"):
        run.read_jsonl("x.jsonl")


def test_strict_reader_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": \xff}\n')
    with pytest.raises(InvalidInput, match=r"d\.jsonl:3: not UTF-8"):
        list(read_jsonl(path))
    path.write_text('{"a": 1}\n' + "[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"d\.jsonl:2: JSON nested too deeply"):
        list(read_jsonl(path))
    path.write_text('{"a": ' + "9" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"d\.jsonl:1: JSON value cannot be read"):
        list(read_jsonl(path))
    path.write_text('{"a": 1}\n{"a": ', encoding="utf-8")  # outside the run folder a torn line is an error
    with pytest.raises(InvalidInput, match=r"d\.jsonl:2: not valid JSON"):
        list(read_jsonl(path))


def test_interrupted_and_killed_runs_resume_finished_and_failed_ones_do_not(tmp_path, capsys):
    run, resumed = RunFolder.open(tmp_path, "tiny", IDENTITY)
    assert not resumed
    finish(run, "interrupted")
    again, resumed = RunFolder.open(tmp_path, "tiny", IDENTITY)
    assert resumed and again.path == run.path
    finish(again, "running")  # what a kill -9 leaves
    again, resumed = RunFolder.open(tmp_path, "tiny", IDENTITY)
    assert resumed and again.path == run.path
    finish(again, "failed", error="'int' object has no attribute 'strip'")
    fresh, resumed = RunFolder.open(tmp_path, "tiny", IDENTITY)
    assert not resumed and fresh.path != run.path
    note = capsys.readouterr().err
    assert str(run.path) in note and "failed" in note and "new run folder" in note
    finish(fresh, "succeeded")
    newest, resumed = RunFolder.open(tmp_path, "tiny", IDENTITY)
    assert not resumed and newest.path not in (run.path, fresh.path)
    newest.close()


@pytest.mark.parametrize(
    "manifest", [b"{not json", b"\xff\xfe", b"[1, 2]", b"[" * 100_000, b'{"identity": 1, "status": "running"}']
)
def test_an_unreadable_manifest_is_skipped_aloud_never_a_traceback(tmp_path, capsys, manifest):
    run, _ = RunFolder.open(tmp_path, "tiny", IDENTITY)
    run.file("manifest.json").write_bytes(manifest)
    run.close()
    fresh, resumed = RunFolder.open(tmp_path, "tiny", IDENTITY)
    assert not resumed and fresh.path != run.path
    fresh.close()
    if manifest != b'{"identity": 1, "status": "running"}':
        assert "skipped, not resumed" in capsys.readouterr().err


def test_out_that_is_a_file_or_unwritable_is_a_runtime_failure(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RuntimeFailure, match="is a file, not a folder"):
        RunFolder.open(blocker, "tiny", IDENTITY)
    with pytest.raises(RuntimeFailure, match="cannot create"):
        RunFolder.open(blocker / "below", "tiny", IDENTITY)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(RuntimeFailure, match=r"not writable|cannot create"):
            RunFolder.open(locked, "tiny", IDENTITY)


def test_a_write_that_fails_is_a_runtime_failure(tmp_path):
    run, _ = RunFolder.open(tmp_path, "tiny", IDENTITY)
    run.file("report.md").mkdir()  # the finished file cannot replace a folder
    with pytest.raises(RuntimeFailure, match=r"report\.md: cannot write"):
        run.write_text("report.md", "x")
    run.close()


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from runner.core.runfolder import RunFolder
    identity = {"spec_hash": "abc", "limit": None, "stages": ["eval"], "dry_run": False}
    run, resumed = RunFolder.open(Path(sys.argv[1]), "tiny", identity)
    if sys.argv[2] == "write":
        run.write_json("manifest.json", {"identity": identity, "status": "running"})
    print(run.path, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("stage", ["write", "no-manifest-yet"])
def test_a_second_process_on_the_same_spec_fails_naming_the_holder(tmp_path, stage):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), stage], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        folder = Path(holder.stdout.readline().strip())
        assert folder.is_dir()
        with pytest.raises(RuntimeFailure, match=f"pid {holder.pid}"):
            RunFolder.open(tmp_path, "tiny", IDENTITY)
        other, resumed = RunFolder.open(tmp_path, "tiny", {**IDENTITY, "limit": 3})  # another identity is free
        assert not resumed and other.path != folder
        other.close()
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the folder is resumable (or replaced) now.
    run, resumed = RunFolder.open(tmp_path, "tiny", IDENTITY)
    assert resumed == (stage == "write") and (run.path == folder) == resumed
    run.close()


def test_the_lock_holder_file_names_the_pid(tmp_path):
    run, _ = RunFolder.open(tmp_path, "tiny", IDENTITY)
    claim = json.loads(run.file(".lock").read_text())
    assert claim == {"pid": os.getpid(), "identity": IDENTITY}
    run.close()


def test_a_kill_inside_a_multibyte_character_is_a_torn_line_too(tmp_path):
    """Found by hypothesis: the cut left half of '，' (3 bytes in UTF-8), so the file was not UTF-8."""
    run, _ = RunFolder.open(tmp_path, "tiny", IDENTITY)
    run.append_jsonl("x.jsonl", [{"id": "L1"}, {"id": "，"}])
    data = run.file("x.jsonl").read_bytes()
    run.file("x.jsonl").write_bytes(data[: data.index("，".encode()) + 1])
    assert run.read_jsonl("x.jsonl") == [{"id": "L1"}]
    run.append_jsonl("x.jsonl", [{"id": "L2"}])
    assert run.read_jsonl("x.jsonl") == [{"id": "L1"}, {"id": "L2"}]
    run.close()


def test_appends_from_many_threads_never_interleave_or_truncate_each_other(tmp_path):
    """Answers may be appended as they arrive, from worker threads: every row must survive whole."""
    from concurrent.futures import ThreadPoolExecutor

    run, _ = RunFolder.open(tmp_path, "tiny", IDENTITY)
    big = "名" * 20_000  # 60 kB a row: larger than any write buffer, so a row takes several writes

    def worker(n: int) -> None:
        for i in range(20):
            run.append_jsonl("x.jsonl", [{"id": f"{n}-{i}", "text": big}])

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(worker, range(6)))
    rows = run.read_jsonl("x.jsonl")
    assert sorted(row["id"] for row in rows) == sorted(f"{n}-{i}" for n in range(6) for i in range(20))
    assert all(row["text"] == big for row in rows)
    run.close()


def test_manifest_commit_is_the_spec_repository_not_specrun(tmp_path):
    """A team versions its specs in its own repository: that is the commit a report must name."""
    from runner.core.runfolder import environment

    outside = tmp_path / "plain"
    outside.mkdir()
    (outside / "spec.yaml").write_text("name: x\n")
    assert environment(outside / "spec.yaml")["git_commit"] is None

    project = tmp_path / "project"
    project.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(project)]
    subprocess.run([*git, "init", "-q"], check=True)
    (project / "spec.yaml").write_text("name: x\n")
    subprocess.run([*git, "add", "spec.yaml"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "spec"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert environment(project / "spec.yaml")["git_commit"] == head
    (project / "spec.yaml").write_text("name: y\n")  # an uncommitted edit to the spec
    assert environment(project / "spec.yaml")["git_commit"] == head + "-dirty"
