"""Run folders end to end (fake OpenAI-compatible server): failed runs recover, bad --out and manifests are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.cli import main
from runner.core.errors import RuntimeFailure
from tests.conftest import write_project
from tests.fake_api import FakeAPI

KEY = "sk-runs-test-key"


@pytest.fixture
def api(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNS_TEST_KEY", KEY)
    monkeypatch.setenv("SPECRUN_CACHE", str(tmp_path / "cache"))
    server = FakeAPI(api_key=KEY).start()
    yield server
    server.stop()


def remote_spec(root: Path, api: FakeAPI) -> Path:
    provider = {
        "name": "openai_compatible",
        "model": "gpt-4o-mini",
        "base_url": api.openai_url,
        "api_key_env": "RUNS_TEST_KEY",
    }
    overrides = {
        "provider": provider,
        "evaluation.method": "generate",
        "evaluation.calibration": "none",
        "evaluation.baseline": False,
    }
    return write_project(root, overrides)


def folders(out: Path) -> list[Path]:
    return sorted(p for p in (out / "tiny").iterdir() if p.is_dir())


def test_a_failed_run_is_left_and_the_next_starts_a_new_folder_without_buying_again(api, tmp_path, monkeypatch, capsys):
    spec, out = remote_spec(tmp_path, api), tmp_path / "runs"

    def crash(*args, **kwargs):
        raise RuntimeFailure("something after the answers broke")

    monkeypatch.setattr("runner.pipeline.gates.check_gates", crash)
    assert main(["run", str(spec), "--out", str(out)]) == 3
    (failed,) = folders(out)
    assert json.loads((failed / "manifest.json").read_text())["status"] == "failed"
    bought = len(api.chat_requests)
    assert bought == 6
    monkeypatch.undo()
    monkeypatch.setenv("RUNS_TEST_KEY", KEY)
    monkeypatch.setenv("SPECRUN_CACHE", str(tmp_path / "cache"))
    capsys.readouterr()
    # The cause is fixed: the rerun does not replay the failed folder; it says so and starts afresh.
    assert main(["run", str(spec), "--out", str(out)]) == 0
    err = capsys.readouterr().err.replace("\n", "")
    assert "failed" in err and "new run folder" in err and failed.name in err
    assert len(folders(out)) == 2
    assert len(api.chat_requests) == bought  # the answers came from the response cache


def test_out_pointing_at_a_file_is_exit_3_with_one_line(api, tmp_path, capsys):
    spec = remote_spec(tmp_path, api)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "below"):
        assert main(["run", str(spec), "--out", str(out)]) == 3
        err = capsys.readouterr().err
        assert "--out" in err and str(blocker) in err.replace("\n", "") and "Traceback" not in err
    assert api.chat_requests == []  # nothing bought before the folder exists


@pytest.mark.parametrize("manifest", [b"{torn", b"\xff\xfe\x00", b"[]", b"null"])
def test_a_corrupt_manifest_is_skipped_aloud(api, tmp_path, capsys, manifest):
    spec, out = remote_spec(tmp_path, api), tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out), "--dry-run"]) == 0
    (first,) = folders(out)
    (first / "manifest.json").write_bytes(manifest)
    assert main(["run", str(spec), "--out", str(out), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(folders(out)) == 2
