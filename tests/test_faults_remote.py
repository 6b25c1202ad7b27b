"""A misbehaving server, a broken cache and Ctrl-C: no hang, no traceback, no money spent after a stop.

Issue 8's transport half. The servers are tests/fake_api.py on 127.0.0.1 with some routes swapped
for hostile ones (`hostile`); the CLI runs in-process, or in a subprocess where signals are sent.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.cli import main
from runner.core.cache import ResponseCache
from runner.core.errors import InvalidInput, RuntimeFailure
from runner.providers.api import retry
from runner.providers.api.client import check_base_url, preflight
from runner.providers.api.retry import retry_after, with_retries
from tests.conftest import ROOT
from tests.fake_api import FakeAPI
from tests.test_remote import folders, read, remote_project

Respond = Callable[[Any, dict[str, Any]], None]


def hostile(api: FakeAPI, chat: Respond | None = None, jobs: Respond | None = None, echo_key: bool = False) -> FakeAPI:
    """Swap fake_api's handlers for hostile ones: `chat(handler, request)` answers chat completions,
    `jobs(handler, {"method", "rest"})` answers fine_tuning/jobs, and echo_key makes 401 messages
    repeat the Authorization header the client sent."""
    base = api.server.RequestHandlerClass

    class Hostile(base):  # type: ignore[misc, valid-type]
        def _error(self, status, message, code="error", headers=None):
            if echo_key and status == 401:
                message = f"{message}: {self.headers.get('Authorization', '')}"
            return super()._error(status, message, code, headers)

        def _chat(self, request, zhipu):
            if chat is None:
                return super()._chat(request, zhipu)
            api.chat_requests.append(request)
            return chat(self, request)

        def _jobs(self, method, rest, body, zhipu):
            if jobs is None:
                return super()._jobs(method, rest, body, zhipu)
            return jobs(self, {"method": method, "rest": rest})

    api.server.RequestHandlerClass = Hostile
    return api


def send_raw(handler: Any, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", (headers or {}).pop("Content-Type", "application/json"))
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def chat_body(content: Any = "这条新闻属于科技类别。", **overrides: Any) -> dict[str, Any]:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }
    body.update(overrides)
    return body


def chat_requests(api: FakeAPI) -> int:
    """Chat requests that reached the server (counted on arrival, before any delay)."""
    return sum(1 for _, route in list(api.requests) if route == "/chat/completions")


@pytest.fixture
def api(api):
    """The shared loopback server (tests/conftest.py), with the fake's own 2 s for a slow answer."""
    api.slow_seconds = 2.0
    return api


def run(spec: Path, out: Path, *extra: str) -> int:
    return main(["run", str(spec), "--out", str(out), *extra])


# --- the response cache ------------------------------------------------------------------------------


def test_corrupt_cache_file_is_one_clear_line_and_exit_3(api, tmp_path, capfd):
    cache = tmp_path / "cache" / "responses.sqlite"
    cache.parent.mkdir()
    cache.write_bytes(b"this is not a database\n" * 100)
    assert run(remote_project(tmp_path, api), tmp_path / "runs") == 3
    err = capfd.readouterr().err
    assert "responses.sqlite" in err and "not a usable SQLite database" in err and "--no-cache" in err
    assert "Traceback" not in err
    assert chat_requests(api) == 0  # found before anything was bought
    assert run(remote_project(tmp_path, api), tmp_path / "runs", "--no-cache") == 0  # the way out works


def test_specrun_cache_pointing_at_a_file_is_exit_3(monkeypatch, tmp_path, capfd):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("SPECRUN_CACHE", str(blocker))
    with pytest.raises(RuntimeFailure, match="SPECRUN_CACHE"):
        ResponseCache()
    assert main(["cache"]) == 3
    err = capfd.readouterr().err
    assert "cannot create the folder" in err and str(blocker) in err and "Traceback" not in err
    monkeypatch.setenv("SPECRUN_CACHE", str(tmp_path))
    (tmp_path / "responses.sqlite").mkdir()  # the database's own name taken by a folder
    with pytest.raises(RuntimeFailure, match="is not a file"):
        ResponseCache()


class _FullDisk:
    """A writer connection on a full disk."""

    def executemany(self, *args):
        raise sqlite3.OperationalError("database or disk is full")

    def commit(self):
        pass


def test_a_dying_cache_writer_never_hangs_the_run(tmp_path, capfd):
    cache = ResponseCache(tmp_path / "responses.sqlite")
    cache._connect = _FullDisk  # the writer's connection fails on its first commit
    cache.put({"q": 1}, {"text": "a", "usage": {}})
    assert cache.flush(timeout=10), "flush waited on a writer that had died"
    assert cache.disabled == "database or disk is full"
    cache.put({"q": 2}, {"text": "b", "usage": {}})  # later answers: no writer, no wait
    assert cache.flush(timeout=1)
    assert cache.get_many([{"q": 1}, {"q": 2}]) == {}
    err = capfd.readouterr().err
    assert err.count("response cache") == 1 and "going on without it" in err


def test_cache_locked_by_another_process_falls_back_aloud(api, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr("runner.core.cache.BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "cache" / "responses.sqlite"
    ResponseCache(path)  # exists, in WAL mode
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock for the whole run
    try:
        assert run(remote_project(tmp_path, api), tmp_path / "runs") == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capfd.readouterr().err
    assert "database is locked" in err and "going on without it" in err and "Traceback" not in err
    (folder,) = folders(tmp_path / "runs")
    assert read(folder, "metrics.json")["zero_shot"]["n"] == 9  # every answer reached the run folder


def test_a_damaged_cache_row_is_asked_again(api, tmp_path):
    spec = remote_project(tmp_path, api)
    assert run(spec, tmp_path / "runs") == 0
    db = sqlite3.connect(tmp_path / "cache" / "responses.sqlite")
    db.execute("UPDATE responses SET response = 'not json' WHERE rowid = (SELECT MIN(rowid) FROM responses)")
    db.execute("UPDATE responses SET response = '{\"text\": 5}' WHERE rowid = (SELECT MAX(rowid) FROM responses)")
    db.commit()
    db.close()
    assert run(spec, tmp_path / "runs2") == 0
    assert chat_requests(api) == 9 + 2


# --- Ctrl-C and SIGTERM ------------------------------------------------------------------------------


def start_cli(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(spec), "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]])
def test_interrupt_stops_spending(api, tmp_path, signals):
    """40 items at 0.5 s each on 4 slots: after the signal nothing new is sent, exit 130, no traceback."""
    api.delay = 0.5
    spec = remote_project(tmp_path, api, n_per_label=14, **{"provider.concurrency": 4})
    out = tmp_path / "runs"
    process = start_cli(spec, out)
    wait_for(lambda: chat_requests(api) >= 8)
    for number, signum in enumerate(signals):
        if number:
            time.sleep(0.05)
        process.send_signal(signum)
    at_signal = chat_requests(api)
    output = process.communicate(timeout=60)[0].decode()
    time.sleep(1.0)  # anything still queued would arrive now
    assert process.returncode == 130, output
    assert "Traceback" not in output and "Exception ignored" not in output, output
    assert chat_requests(api) <= at_signal + 4, "requests started after the interrupt"
    assert chat_requests(api) < 39
    (folder,) = folders(out)
    if len(signals) == 1:  # a second Ctrl-C leaves at once, without the last manifest write
        assert read(folder, "manifest.json")["status"] == "interrupted"


def test_stop_event_ends_retry_waits_at_once():
    stop = threading.Event()
    calls = []

    def failing():
        calls.append(1)
        stop.set()
        raise retry.Transient("try again")

    started = time.monotonic()
    with pytest.raises(retry.Stopped):
        with_retries(failing, max_retries=5, stop=stop)
    assert calls == [1] and time.monotonic() - started < 1


def test_answers_are_handed_over_as_they_arrive_even_when_a_later_one_fails(api):
    """on_answer sees every answer bought before the failure: the caller can save them at once."""
    from runner.providers.registry import open_provider

    served = itertools.count()

    def fifth_fails(handler: Any, request: dict[str, Any]) -> None:
        if next(served) >= 4:
            return handler._error(400, "context length exceeded", "invalid_request")
        send_raw(handler, 200, json.dumps(chat_body()).encode())

    hostile(api, chat=fifth_fails)
    provider = open_provider(
        {"name": "openai", "model": "gpt-4o-mini", "base_url": api.openai_url, "concurrency": 1, "max_retries": 0}
    )
    delivered: list[int] = []
    conversations = [[{"role": "user", "content": f"文本：{n}"}] for n in range(10)]
    with pytest.raises(RuntimeFailure, match="HTTP 400"):
        provider.chat(conversations, {"max_tokens": 8}, on_answer=lambda index, completion: delivered.append(index))
    assert delivered == [0, 1, 2, 3]
    assert chat_requests(api) == 5  # and nothing asked after the failure


# --- timeouts and Retry-After -----------------------------------------------------------------------


def drip(where: str, seconds: float = 0.2) -> Respond:
    """A server that sends its answer one byte at a time: the status line's or the body's."""

    def respond(handler: Any, request: dict[str, Any]) -> None:
        body = json.dumps(chat_body()).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        slow, fast = (head, b"") if where == "headers" else (body, head)
        try:
            handler.wfile.write(fast)
            for byte in slow:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(seconds)
            if where == "headers":
                handler.wfile.write(body)
        except OSError:
            pass  # the client gave up: that is the point
        handler.close_connection = True

    return respond


@pytest.mark.parametrize(("provider", "where"), [("openai", "body"), ("openai", "headers"), ("zhipuai", "headers")])
def test_timeout_bounds_each_attempt_in_total(api, tmp_path, capfd, provider, where):
    hostile(api, chat=drip(where))
    settings = {"provider.timeout_s": 1, "provider.max_retries": 1, "provider.concurrency": 1}
    spec = remote_project(tmp_path, api, provider, **settings, **{"provider.model": "glm-4-flash"})
    started = time.monotonic()
    assert run(spec, tmp_path / "runs", "--no-cache") == 3
    assert time.monotonic() - started < 15  # two 1 s attempts (a dripped answer would take ~50 s each)
    err = capfd.readouterr().err
    assert f"{provider} request failed (after 2 tries): no complete answer within timeout_s=1" in err
    assert "Traceback" not in err
    assert sum(1 for _, route in api.requests if route == "/chat/completions") == 2


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "150"}, 0.15),
        ({"retry-after": "999999"}, 999999.0),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after-ms": "-1", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "NaN"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ],
)
def test_retry_after_values(headers, expected):
    error = type("E", (Exception,), {"status_code": 429})()
    error.response = type("R", (), {"headers": headers})()
    assert retry_after(error) == expected


def test_absurd_retry_after_is_capped_and_said_once(monkeypatch, capfd):
    slept = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    monkeypatch.setattr(retry, "_said", set())

    def flaky(header: str) -> Callable[[], str]:
        answers = iter([header, "ok"])

        def call() -> str:
            value = next(answers)
            if value == "ok":
                return value
            error = type("RateLimited", (Exception,), {"status_code": 429})()
            error.response = type("R", (), {"headers": {"retry-after": value}})()
            raise error

        return call

    assert with_retries(flaky("999999"), max_retries=2) == "ok"
    assert with_retries(flaky("Fri, 01 Jan 2099 00:00:00 GMT"), max_retries=2) == "ok"
    assert with_retries(flaky("-3"), max_retries=2) == "ok"
    assert slept[:2] == [retry.RETRY_AFTER_CAP_S, retry.RETRY_AFTER_CAP_S]
    assert slept[2] <= retry.BACKOFF_BASE_S  # a negative Retry-After: the normal backoff
    err = capfd.readouterr().err
    assert err.count("Retry-After") == 1 and "at most 60 s" in err


# --- answer size --------------------------------------------------------------------------------------


def test_a_10_mb_answer_is_refused_and_never_stored(api, tmp_path, capfd):
    huge = json.dumps(chat_body("科技" + "a" * 10_000_000)).encode()
    hostile(api, chat=lambda h, r: send_raw(h, 200, huge))
    settings = {"provider.max_retries": 1, "provider.timeout_s": 30, "provider.params": {"max_tokens": 8}}
    spec = remote_project(tmp_path, api, **settings)
    assert run(spec, tmp_path / "runs") == 3
    err = capfd.readouterr().err
    assert "over 8 MB" in err and "Traceback" not in err
    cache = (tmp_path / "cache").glob("responses.sqlite*")  # (the cache folder also holds tiktoken's files)
    stored = sum(p.stat().st_size for p in [*(tmp_path / "runs").rglob("*"), *cache] if p.is_file())
    assert stored < 1_000_000


def test_an_answer_longer_than_max_tokens_allows_is_cut(api, tmp_path, capfd):
    hostile(api, chat=lambda h, r: send_raw(h, 200, json.dumps(chat_body("科技" + "啊" * 300_000)).encode()))
    spec = remote_project(tmp_path, api, **{"provider.params": {"max_tokens": 8}})
    assert run(spec, tmp_path / "runs") == 0
    (folder,) = folders(tmp_path / "runs")
    answers = [json.loads(line)["text"] for line in (folder / "zero_shot.generate.jsonl").open(encoding="utf-8")]
    assert answers and all(len(text) <= 64 * 8 + 256 for text in answers)
    assert (tmp_path / "cache" / "responses.sqlite").stat().st_size < 1_000_000
    assert capfd.readouterr().err.count("longer than max_tokens allows") == 1


# --- malformed answers -------------------------------------------------------------------------------

MALFORMED = {
    "content an int": json.dumps(chat_body(5)),
    "content a list of ints": json.dumps(chat_body([1, 2])),
    "choices a string": json.dumps(chat_body(choices="科技")),
    "choices empty": json.dumps(chat_body(choices=[])),
    "null message": json.dumps(chat_body(choices=[{"index": 0, "message": None}])),
    "no choices": json.dumps({"id": "x", "object": "chat.completion"}),
    "a JSON list": "[1, 2, 3]",
    "a JSON string": '"科技"',
    "cut short": '{"id": "broken", "choices": [',
    "empty": "",
    "nested too deep": "[" * 100_000 + "]" * 100_000,
    "an integer too large to parse": '{"choices": ' + "9" * 5000 + "}",
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_answers_are_retried_then_one_line_exit_3(api, tmp_path, capfd, name):
    body = MALFORMED[name].encode()
    hostile(api, chat=lambda h, r: send_raw(h, 200, body))
    spec = remote_project(tmp_path, api, **{"provider.max_retries": 2, "provider.concurrency": 1})
    assert run(spec, tmp_path / "runs") == 3
    err = capfd.readouterr().err
    assert "sent a malformed answer (after 3 tries)" in err and "Traceback" not in err
    assert "object has no attribute" not in err and "Error:" not in err.replace("error:", "")
    assert chat_requests(api) == 3  # retried as the README promises, then nothing more asked


def test_an_html_page_with_status_200_is_named(api, tmp_path, capfd):
    page = b"<html><body>Gateway login</body></html>"
    hostile(api, chat=lambda h, r: send_raw(h, 200, page, {"Content-Type": "text/html"}))
    spec = remote_project(tmp_path, api, **{"provider.max_retries": 0})
    assert run(spec, tmp_path / "runs") == 3
    assert "the answer is an HTML page, not JSON" in capfd.readouterr().err


@pytest.mark.parametrize(
    "body",
    [
        chat_body(usage={"prompt_tokens": "12", "completion_tokens": "3"}),
        chat_body(usage="lots"),
        chat_body(content=[{"type": "text", "text": "这条新闻属于科技类别。"}]),
        chat_body(content=None),
        chat_body(content="\ud800科技"),
    ],
    ids=["usage strings", "usage a string", "content parts", "content null", "lone surrogate"],
)
def test_odd_but_readable_answers_are_accepted(api, tmp_path, capfd, body):
    raw = json.dumps(body).encode()
    hostile(api, chat=lambda h, r: send_raw(h, 200, raw))
    assert run(remote_project(tmp_path, api), tmp_path / "runs") in (0, 1)
    assert "Traceback" not in capfd.readouterr().err
    (folder,) = folders(tmp_path / "runs")
    assert read(folder, "metrics.json")["zero_shot"]["n"] == 9


@pytest.mark.parametrize(
    ("action", "answer"),
    [
        ("list", {"object": "list", "data": "jobs"}),
        ("list", {"object": "list", "data": [{"id": 5, "status": "running"}]}),
        ("list", ["not", "an", "object"]),
        ("show", {"id": "ftjob-1", "status": None, "model": "m"}),
        ("show", "just text"),
        ("events", {"object": "list", "data": [{"id": "e", "message": 5, "created_at": "yesterday"}, 7]}),
        ("checkpoints", {"object": "list", "data": [{"id": "c", "step_number": "one"}]}),
    ],
)
def test_malformed_jobs_answers_are_one_line(api, capfd, action, answer):
    hostile(api, jobs=lambda h, r: send_raw(h, 200, json.dumps(answer).encode()))
    code = main(["jobs", action, *([] if action == "list" else ["ftjob-1"]), "--base-url", api.openai_url])
    err = capfd.readouterr().err
    assert "Traceback" not in err
    if action == "events":  # an event with an id is shown; the bare number is not an event
        assert code == 3 and "a job event is a number, not an object" in err
    else:
        assert code == 3 and "sent a malformed answer" in err


# --- the local registry ------------------------------------------------------------------------------


def job_record(**changes: Any) -> dict[str, Any]:
    record = {
        "id": "ftjob-abc",
        "model_id": "tiny-ft-abc",
        "status": "succeeded",
        "base_model": "gemma-3-270m",
        "training_file": "file-local-x",
        "settings": {},
        "created_at": 1.0,
        "step": 3,
        "total_steps": 3,
        "checkpoints": [{"id": "step-000003", "step": 3, "metrics": {"train_loss": 0.5}}],
        "error": None,
    }
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"id": "ftjob-abc", "status": ', "not JSON"),
        (b"\xff\xfe not utf-8", "not JSON"),
        (json.dumps([1, 2]).encode(), "not a JSON object"),
        (json.dumps(job_record(created_at="yesterday")).encode(), "field 'created_at' is not int or float"),
        (json.dumps({k: v for k, v in job_record().items() if k != "model_id"}).encode(), "'model_id' is missing"),
        (json.dumps(job_record(checkpoints=[{"step": 1}])).encode(), "checkpoints[0]"),
        (json.dumps(job_record(model_id="tiny-ft-renamed")).encode(), "is not the name of its folder"),
        (json.dumps(job_record(model_id="")).encode(), "is not the name of its folder"),
    ],
)
def test_a_corrupt_registry_record_names_its_file(api, tmp_path, capfd, content, problem):
    folder = tmp_path / "registry" / "tiny-ft-abc"
    folder.mkdir(parents=True)
    (folder / "job.json").write_bytes(content)
    for argv in (["models"], ["jobs", "list", "--provider", "local"], ["jobs", "show", "x", "--provider", "local"]):
        assert main(argv) == 3
        err = capfd.readouterr().err
        assert str(folder / "job.json") in err and problem in err and "Traceback" not in err


def test_models_delete_never_follows_a_model_id_out_of_its_folder(api, tmp_path, capfd):
    """It deleted root / model_id: a job.json naming another folder (or "", the registry itself) lost that folder."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep")
    folder = tmp_path / "registry" / "evil"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(job_record(id="ftjob-evil", model_id=str(victim))))
    assert main(["models", "delete", "ftjob-evil"]) == 3
    assert "is not the name of its folder" in capfd.readouterr().err
    assert (victim / "important.txt").is_file() and folder.is_dir()


def test_corrupt_registry_events_name_file_and_line(api, tmp_path, capfd):
    folder = tmp_path / "registry" / "tiny-ft-abc"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(job_record()))
    good = json.dumps({"id": "e1", "created_at": 1, "message": "Created", "data": {}})
    (folder / "events.jsonl").write_text(f"{good}\n{{broken\n{good}\n")
    assert main(["jobs", "events", "ftjob-abc", "--provider", "local"]) == 3
    assert f"{folder / 'events.jsonl'}:2: corrupt job event" in capfd.readouterr().err
    (folder / "events.jsonl").write_text(f"{good}\n{good[:10]}")  # torn last line: a kill mid-write
    assert main(["jobs", "events", "ftjob-abc", "--provider", "local"]) == 0
    assert "Created" in capfd.readouterr().err


# --- preflight: base_url, key, model, before anything is made or sent -------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("htp:/x", "does not start with http:// or https://"),
        ("localhost:8000", "did you mean http://localhost:8000?"),
        ("http:/localhost:8000/v1", "has no host"),
        ("http://", "has no host"),
        ("http://localhost:99999/v1", "invalid port"),
        ("http://localhost:80a/v1", "invalid port"),
        (" http://localhost/v1", "spaces"),
        ("", "is not a URL"),
        ("http://[::1/v1", "is not a URL (Invalid IPv6 URL)"),
        ("http://me:sk-SECRET@localhost:8000/v1", "carries credentials"),
        ("http://me:sk-SECRET@localhost:99999/v1", "carries credentials"),
    ],
)
def test_malformed_base_url_is_named_before_any_request(url, says):
    with pytest.raises(InvalidInput, match=r"provider\.base_url") as raised:
        preflight({"name": "openai_compatible", "model": "m", "base_url": url})
    assert says in str(raised.value) and "SECRET" not in str(raised.value)


def test_good_base_urls_pass():
    for url in ("http://127.0.0.1:8000/v1", "https://api.deepseek.com", "http://[::1]:8080/v1", "HTTPS://x.y/v1"):
        check_base_url(url, "provider.base_url")


def test_preflight_names_key_env_model_and_env_base_url(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InvalidInput, match=r"provider.api_key_env: environment variable OPENAI_API_KEY is not set"):
        preflight({"name": "openai", "model": "gpt-4o-mini"})
    preflight({"name": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:1/v1"})  # no key needed
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    with pytest.raises(InvalidInput, match=r"provider\.model"):
        preflight({"name": "openai"})
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:8000")
    with pytest.raises(InvalidInput, match="environment variable OPENAI_BASE_URL"):
        preflight({"name": "openai", "model": "gpt-4o-mini"})


def test_malformed_base_url_fails_fast_in_the_cli(api, tmp_path, capfd):
    spec = remote_project(tmp_path, api, **{"provider.base_url": "localhost:8000"})
    started = time.monotonic()
    assert run(spec, tmp_path / "runs") == 2
    assert time.monotonic() - started < 10
    err = capfd.readouterr().err
    assert "provider.base_url" in err and "did you mean http://localhost:8000?" in err
    assert not (tmp_path / "runs").exists()  # found before a run folder was made
    assert main(["validate", str(spec)]) == 2  # validate passed it: the form was checked only when a run began
    assert "provider.base_url" in capfd.readouterr().err
    assert main(["jobs", "list", "--base-url", "htp:/x"]) == 2
    assert "--base-url: 'htp:/x' does not start with http://" in capfd.readouterr().err
