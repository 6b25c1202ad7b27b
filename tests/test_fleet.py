"""provider.base_url as a list of servers (runner/providers/api/fleet.py): spreading, failover, cache.

The servers here are loopback HTTP servers that can be killed mid-run: a killed server drops
every request it holds (and every later one on a kept-alive connection) without answering, and
refuses connections until it is restarted on the same port. Requests and time are bounded:
a few hundred short requests, every wait with a deadline.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runner.core.cache import ResponseCache
from runner.core.errors import InvalidInput
from runner.providers.api import fleet as fleet_module
from runner.providers.registry import open_provider, preflight


def answer_for(text: str) -> str:
    return f"label-{sum(map(ord, text)) % 7}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # dropped connections are the point
        pass


class Loopback:
    """An OpenAI-style chat server with a fixed latency that can be killed and restarted on its port."""

    def __init__(self, delay: float = 0.02, port: int = 0):
        self.delay = delay
        self.answered: list[str] = []  # the prompt of every answer sent in full
        self.lock = threading.Lock()
        self.killed = threading.Event()
        self._serve(port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self, port: int) -> None:
        self.killed.clear()
        self.server = _Server(("127.0.0.1", port), _handler(self))
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kill(self) -> None:
        self.killed.set()  # requests held now are dropped unanswered
        self.server.shutdown()
        self.server.server_close()

    def restart(self) -> None:
        self._serve(self.port)


def _handler(owner: Loopback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _drop(self) -> None:
            self.close_connection = True
            self.connection.close()

        def do_POST(self) -> None:
            if owner.killed.is_set():
                return self._drop()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = body["messages"][-1]["content"]
            time.sleep(owner.delay)
            if owner.killed.is_set():
                return self._drop()
            answer = {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer_for(text)}}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
            data = json.dumps(answer).encode()
            with owner.lock:  # counted under the lock that kill() cannot interleave with a half-sent answer
                if owner.killed.is_set():
                    return self._drop()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                owner.answered.append(text)

    return Handler


def _provider(urls: str | list[str], cache_path: Path, concurrency: int = 2) -> Any:
    config = {"name": "openai_compatible", "model": "m", "base_url": urls, "concurrency": concurrency}
    config |= {"timeout_s": 5, "max_retries": 6}
    return open_provider(config, ResponseCache(cache_path))


def _chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"text number {i}"}] for i in range(n)]


PARAMS = {"max_tokens": 8, "temperature": 0}


@pytest.fixture(autouse=True)
def short_cool_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet_module, "COOL_OFF_S", 0.2)


def test_killed_server_fails_over_and_every_answer_is_bought_once(tmp_path: Path) -> None:
    chats = _chats(100)
    single = Loopback()
    try:
        alone = [c.text for c in _provider(single.url, tmp_path / "one.sqlite").chat(chats, PARAMS)]
    finally:
        single.kill()

    a, b = Loopback(), Loopback()
    killed_at: list[int] = []

    def kill_then_restart() -> None:
        deadline = time.monotonic() + 20
        while len(a.answered) < 10 and time.monotonic() < deadline:
            time.sleep(0.005)
        with a.lock:
            killed_at.append(len(a.answered))
            a.kill()
        time.sleep(0.3)
        a.restart()

    chaos = threading.Thread(target=kill_then_restart, daemon=True)
    chaos.start()
    provider = _provider([a.url, b.url], tmp_path / "fleet.sqlite")
    try:
        answers = [c.text for c in provider.chat(chats, PARAMS)]
        chaos.join(20)
    finally:
        a.kill()
        b.kill()

    assert answers == alone  # the same predictions as one server
    bought = a.answered + b.answered
    assert sorted(bought) == sorted(c[-1]["content"] for c in chats)  # every answer bought exactly once
    assert killed_at and len(a.answered) > killed_at[0]  # a killed server came back into rotation
    assert provider.describe()["answered_by"] == {a.url: len(a.answered), b.url: len(b.answered)}


def test_fleet_answers_come_from_the_cache_again(tmp_path: Path) -> None:
    chats = _chats(20)
    a, b = Loopback(delay=0.0), Loopback(delay=0.0)
    try:
        first = [c.text for c in _provider([a.url, b.url], tmp_path / "c.sqlite").chat(chats, PARAMS)]
        again = _provider([a.url, b.url], tmp_path / "c.sqlite").chat(chats, PARAMS)
    finally:
        a.kill()
        b.kill()
    assert [c.text for c in again] == first and all(c.cached for c in again)
    assert len(a.answered) + len(b.answered) == 20
    assert a.answered and b.answered  # both servers took a share


def test_least_outstanding_spreads_by_server_speed(tmp_path: Path) -> None:
    """A slow server holds its requests longer, so the fast one takes more of them."""
    fast, slow = Loopback(delay=0.005), Loopback(delay=0.1)
    try:
        _provider([fast.url, slow.url], tmp_path / "c.sqlite").chat(_chats(60), PARAMS)
    finally:
        fast.kill()
        slow.kill()
    assert len(fast.answered) + len(slow.answered) == 60
    assert len(fast.answered) > 2 * len(slow.answered)


def test_a_fleet_of_one_is_that_server(tmp_path: Path) -> None:
    server = Loopback(delay=0.0)
    try:
        provider = _provider([server.url], tmp_path / "c.sqlite")
        assert provider.base_url == server.url and "answered_by" not in provider.describe()
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("urls", "where"),
    [
        ([], "provider.base_url"),
        (["http://127.0.0.1:8000/v1", "127.0.0.1:8001"], "provider.base_url[1]"),
        (["http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"], "provider.base_url"),
    ],
)
def test_bad_server_lists_are_named(urls: list[str], where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        preflight({"name": "openai_compatible", "model": "m", "base_url": urls})
    assert where in str(caught.value)


def test_the_manifest_says_which_servers_answered(api, tmp_path: Path) -> None:
    from runner.cli import main
    from tests.conftest import CANARY
    from tests.fake_api import FakeAPI
    from tests.test_remote import remote_project

    other = FakeAPI(api_key=CANARY).start()
    try:
        spec = remote_project(tmp_path, api)
        servers = [api.openai_url, other.openai_url]
        assert main(["run", str(spec), "--out", str(tmp_path / "runs"), "--set", f"provider.base_url={servers}"]) == 0
    finally:
        other.stop()
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    (model,) = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["models"].values()
    assert model["base_url"] == servers
    assert model["answered_by"] == {api.openai_url: len(api.chat_requests), other.openai_url: len(other.chat_requests)}
    assert sum(model["answered_by"].values()) == 9 and api.chat_requests and other.chat_requests
