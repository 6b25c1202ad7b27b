"""Issue 21, classes 1 and 8: a run that died natively, and `models delete` on a linked folder.

A process that segfaults (a native library handed what it cannot take) or is SIGKILLed leaves its
folder "running". The next start must say so, not deadlock on the lock, resume it once, and not
resume it again if it dies again (a crash that repeats on resume would loop forever).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli import main
from runner.core.runfolder import DEATHS_NAME, RunFolder
from tests.conftest import ROOT
from tests.test_extraction import write_ner_project

CRASHING = """
import os, signal, sys
sys.path.insert(0, os.getcwd())
import runner.pipeline as pipeline
import runner.tasks.extraction as extraction
from tests.test_extraction import GazetteerProvider
pipeline.open_provider = lambda config, cache=None: GazetteerProvider()
# What crfsuite did with empty training texts: a segfault in the middle of the baseline stage.
extraction.crf_predictions = lambda train, evaluation: os.kill(os.getpid(), getattr(signal, sys.argv[1]))
from runner.cli import main
sys.exit(main(sys.argv[2:]))
"""


def crash(spec: Path, out: Path, how: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CRASHING, how, "run", str(spec), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # a rerun that deadlocked on the dead run's lock fails here, not forever
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def died_twice(tmp_path_factory) -> tuple[Path, Path, Path, subprocess.CompletedProcess]:
    """An extraction run that segfaults in its baseline stage, then a rerun that resumes it and segfaults again."""
    root = tmp_path_factory.mktemp("died")
    spec = write_ner_project(root)
    out = root / "runs"
    first = crash(spec, out, "SIGSEGV")
    assert first.returncode == -signal.SIGSEGV, first.stderr
    (folder,) = list((out / "ner").iterdir())
    assert json.loads((folder / "manifest.json").read_text())["status"] == "running"
    assert (folder / "zero_shot.generate.jsonl").is_file()  # answers bought before the crash are kept
    assert not (folder / "report.html").exists()
    second = crash(spec, out, "SIGSEGV")  # found dead, resumed, dies again in the same stage
    assert second.returncode == -signal.SIGSEGV, second.stderr
    return spec, out, folder, second


def test_the_rerun_writes_the_dead_runs_outputs(died_twice):
    _, _, folder, _ = died_twice
    for name in ("report.html", "summary.json", "junit.xml"):  # written by the rerun before it died too
        assert (folder / name).is_file(), name
    assert "died without a word" in json.loads((folder / "summary.json").read_text())["error"]


def test_a_run_that_died_natively_is_reported_resumed_once_then_left_as_failed(died_twice, capsys):
    spec, out, folder, second = died_twice
    said = second.stdout + second.stderr
    assert "died without a word" in said and "resuming it" in said and str(folder) in said
    assert len(list((out / "ner").iterdir())) == 1
    assert main(["run", str(spec), "--out", str(out)]) == 0  # dead twice: left as failed, a new run succeeds
    said = capsys.readouterr()
    assert "died 2 times" in said.err + said.out and "new run folder" in said.err + said.out
    old = json.loads((folder / "manifest.json").read_text())
    assert old["status"] == "failed" and "died without a word" in old["error"]
    (fresh,) = [p for p in (out / "ner").iterdir() if p != folder]
    assert json.loads((fresh / "manifest.json").read_text())["status"] == "succeeded"
    assert (folder / DEATHS_NAME).read_text().count("\n") == 2


def test_the_folder_this_process_holds_is_never_taken_for_dead(tmp_path):
    identity = {"spec_hash": "abc"}
    run, _ = RunFolder.open(tmp_path, "tiny", identity)
    run.write_json("manifest.json", {"identity": identity, "status": "running"})
    again, resumed = RunFolder.open(tmp_path, "tiny", identity)
    assert resumed and again.path == run.path and again.dead is None
    run.close()


# --- class 8: models delete on a linked folder --------------------------------------------------------


def test_models_delete_on_a_symlinked_model_folder_is_exit_3_and_touches_nothing(tmp_path, monkeypatch, capsys):
    registry = tmp_path / "registry"
    outside = tmp_path / "precious"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("mine")
    record = {
        "id": "ftjob-x", "model_id": "m-ft-x", "object": "fine_tuning.job", "status": "succeeded",
        "base_model": "m", "training_file": "f", "settings": {}, "created_at": 1.0, "finished_at": 2.0,
        "step": 1, "total_steps": 1, "checkpoints": [], "error": None,
    }  # fmt: skip
    (outside / "job.json").write_text(json.dumps(record))
    registry.mkdir()
    (registry / "m-ft-x").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("SPECRUN_REGISTRY", str(registry))
    assert main(["models", "list"]) == 0
    capsys.readouterr()
    assert main(["models", "delete", "m-ft-x"]) == 3
    err = capsys.readouterr().err
    assert "symbolic link" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (outside / "keep.txt").read_text() == "mine" and (registry / "m-ft-x").is_symlink()
