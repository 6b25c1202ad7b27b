"""Several servers serving one model (`provider.base_url` as a list): each request goes to one of them.

The engine (vLLM, llama.cpp) batches and schedules on each server; specrun only spreads requests:

- least outstanding requests: a request goes to the live server with the fewest requests in flight,
  at most `concurrency` on each (the provider's concurrency is per server);
- a server whose request fails in a way worth retrying (refused or dropped connection, timeout,
  5xx, 429, malformed answer) is taken out of rotation for a cool-off that doubles while it keeps
  failing (COOL_OFF_S .. MAX_COOL_OFF_S), and the request is sent again at once to another
  server, with a fresh timeout_s; when every server has failed it, the error goes to the
  provider's retries (backoff), and the next attempt waits for the first server due back;
- an answer from any server is the same answer: the response cache keys on the list, not on the
  server that answered, so cache and resume behave as with one server.

`answered` counts the answers each server gave; the provider's describe() hands this very dict to
the manifest, so the manifest says which servers answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner.providers.api.retry import Stopped, is_retryable
from runner.providers.api.transport import attempt_deadline

COOL_OFF_S = 0.5
MAX_COOL_OFF_S = 30.0
WAIT_SLICE_S = 0.1  # waits for a slot wake up this often to notice Ctrl-C


@dataclass(eq=False)
class Server:
    url: str
    sdk: Any
    outstanding: int = 0
    down_until: float = 0.0
    cool_off_s: float = COOL_OFF_S


class Fleet:
    """Least-outstanding-requests routing over servers, with failover; thread-safe."""

    def __init__(self, urls: list[str], make_sdk: Callable[[str], Any], per_server: int, timeout_s: float | None):
        self.servers = [Server(url, make_sdk(url)) for url in urls]
        self.per_server = per_server
        self.timeout_s = timeout_s
        self.answered: dict[str, int] = dict.fromkeys(urls, 0)
        self._slots = threading.Condition()

    def send(self, call: Callable[[Any], Any], stop: threading.Event | None = None) -> Any:
        """call(sdk) on one server; on a retryable failure, again on another it has not failed on yet."""
        failed: set[int] = set()
        while True:
            server = self._take(failed, stop)
            try:
                with attempt_deadline(self.timeout_s):  # each server gets the whole timeout_s
                    answer = call(server.sdk)
            except Exception as error:
                self._give_back(server, ok=False, counts=is_retryable(error))
                failed.add(id(server))
                if not is_retryable(error) or len(failed) == len(self.servers):
                    raise  # the same request fails everywhere, or every server failed it: the provider's retries
                continue
            self._give_back(server, ok=True, counts=True)
            return answer

    def _take(self, failed: set[int], stop: threading.Event | None) -> Server:
        """The live server with the fewest requests in flight (a free slot), waiting for one if need be."""
        with self._slots:
            while True:
                if stop is not None and stop.is_set():
                    raise Stopped
                now = time.monotonic()
                open_ = [s for s in self.servers if id(s) not in failed and s.outstanding < self.per_server]
                live = [s for s in open_ if s.down_until <= now]
                if live:
                    server = min(live, key=lambda s: s.outstanding)
                    server.outstanding += 1
                    return server
                # all down (or full): wake when a slot frees or the first server is due back
                due = [s.down_until - now for s in open_ if s.down_until > now]
                self._slots.wait(min([WAIT_SLICE_S, *due]))

    def _give_back(self, server: Server, ok: bool, counts: bool) -> None:
        with self._slots:
            server.outstanding -= 1
            if ok:
                server.cool_off_s = COOL_OFF_S
                self.answered[server.url] += 1
            elif counts and server.down_until <= time.monotonic():  # its fault: out of rotation for a while
                server.down_until = time.monotonic() + server.cool_off_s  # (its other requests in flight
                server.cool_off_s = min(MAX_COOL_OFF_S, server.cool_off_s * 2)  # failing too count once)
            self._slots.notify_all()
