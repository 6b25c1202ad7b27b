"""The API key never leaves the process, even when a server echoes it back.

A canary key; a fake server that repeats it in 401/403/500 messages, in answers and in job
fields; then every file under the run folder, the cache and the registry, and everything the
CLI printed, is scanned for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.cli import main
from runner.core.secrets import MASK, redact, redact_value, register
from tests.fake_api import FakeAPI, keyword_answer
from tests.test_faults_remote import chat_body, hostile, send_raw
from tests.test_remote import fine_tune_project, folders, remote_project

KEY = "sk-proj-CANARY-7d41c2e09f8b5a36"


@pytest.fixture
def api(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("SPECRUN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPECRUN_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr("runner.providers.api.retry.BACKOFF_BASE_S", 0.01)
    server = FakeAPI(api_key=KEY).start()
    yield server
    server.stop()


def assert_no_key(root: Path, captured: Any) -> int:
    """The key is in no file under root and in nothing printed; returns how many files were scanned."""
    assert KEY not in captured.out and KEY not in captured.err
    files = [path for path in root.rglob("*") if path.is_file()]
    for path in files:
        assert KEY.encode() not in path.read_bytes(), f"the key leaked into {path}"
    return len(files)


def echoing_answer(handler: Any, request: dict[str, Any]) -> None:
    """Answers that repeat the key the client sent (a prompt-injected or buggy server)."""
    sent = handler.headers.get("Authorization", "").removeprefix("Bearer ")
    text = f"{keyword_answer(request['messages'], request['model'])} (key {sent}; again: {sent})"
    send_raw(handler, 200, json.dumps(chat_body(text)).encode())


def test_redact_removes_registered_keys_everywhere():
    register(KEY)
    register("short")  # too short to be a key: redacting it would mangle answers
    assert redact(f"Incorrect API key provided: Bearer {KEY}.") == f"Incorrect API key provided: Bearer {MASK}."
    assert redact("a short answer") == "a short answer"
    assert redact_value({"m": [f"x{KEY}", 1, None], KEY: "k"}) == {"m": [f"x{MASK}", 1, None], MASK: "k"}


def test_key_echoed_in_answers_reaches_no_file_and_no_output(api, tmp_path, capfd):
    hostile(api, chat=echoing_answer)
    spec = remote_project(tmp_path, api)
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0  # served from the cache
    (first, second) = folders(tmp_path / "runs")
    answers = (first / "zero_shot.generate.jsonl").read_text(encoding="utf-8")
    assert answers.count(MASK) == 2 * 9  # the answers are kept, the key is not
    assert (first / "predictions.jsonl").is_file() and (second / "predictions.jsonl").is_file()
    assert assert_no_key(tmp_path, capfd.readouterr()) >= 10


@pytest.mark.parametrize("status", [401, 500])
def test_key_echoed_in_error_messages_is_not_printed_or_saved(api, tmp_path, capfd, status):
    if status == 401:
        api.api_key = "sk-the-right-one"  # ours is refused, and the refusal quotes it
        hostile(api, echo_key=True)
    else:
        hostile(api, chat=lambda h, r: h._error(500, f"upstream failed for {h.headers['Authorization']}"))
    spec = remote_project(tmp_path, api, **{"provider.max_retries": 1})
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 3
    captured = capfd.readouterr()
    assert f"HTTP {status}" in captured.err and MASK in captured.err
    (folder,) = folders(tmp_path / "runs")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "failed" and MASK in manifest["error"]
    assert_no_key(tmp_path, captured)


def test_key_echoed_by_fine_tuning_is_not_printed_or_saved(api, tmp_path, capfd):
    api.refuse_fine_tuning = f"organisation of key {KEY} may not fine-tune"
    assert main(["run", str(fine_tune_project(tmp_path, api)), "--out", str(tmp_path / "runs")]) == 3
    job = {"id": "ftjob-1", "status": "failed", "model": "gpt-4o-mini", "error": {"message": f"bad key {KEY}"}}
    hostile(api, jobs=lambda h, r: send_raw(h, 200, json.dumps(job).encode()))
    assert main(["jobs", "show", "ftjob-1", "--base-url", api.openai_url]) == 0
    captured = capfd.readouterr()
    assert f"error: bad key {MASK}" in captured.err
    assert_no_key(tmp_path, captured)
