"""HTTP clients for the SDKs that bound each attempt's total time and each answer's size.

httpx's timeouts bound each socket operation, not a request: a server that drips one byte
every half second never trips a 5 s read timeout, and a 10 MB answer to `max_tokens: 8` is
read whole. Here every request the SDKs send:

- runs under the calling thread's deadline (`attempt_deadline`): every connect, write and read
  gets at most the time left, and the body is read before the SDK sees it, so one attempt
  never takes longer than `timeout_s` (plus one socket operation at most);
- has its body read here, up to MAX_BODY_BYTES after decompression: a larger one is refused
  (AnswerTooLarge) and never reaches the cache or the run folder;
- leaves its body on the calling thread (`last_body`), so answers are parsed from the bytes the
  server sent rather than from whatever an SDK made of them (`json_answer`).

openai uses httpx2/httpcore2, zhipuai httpx/httpcore: the same wrappers serve both, given the module.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from runner.core.errors import InvalidInput
from runner.providers.api.retry import CONNECTION_ERRORS, MalformedAnswer, status_code

MAX_BODY_BYTES = 8 * 1024 * 1024

_local = threading.local()


class AnswerTooLarge(Exception):
    """The server sent a body over MAX_BODY_BYTES: refused, never stored."""


@contextmanager
def attempt_deadline(seconds: float | None) -> Iterator[None]:
    """Requests this thread sends inside the block must be over within `seconds` in total."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = None if seconds is None else time.monotonic() + seconds
    _local.body = None
    try:
        yield
    finally:
        _local.deadline = previous


def last_body() -> bytes | None:
    """The body of the last answer this thread received (read by the guarded transport)."""
    return getattr(_local, "body", None)


def caused_by(error: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in error's chain (the SDKs wrap transport errors)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, kind):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def json_answer(send: Callable[[], Any]) -> Any:
    """send() through the SDK (HTTP errors and dropped connections raise as usual), then the JSON body
    the server sent, as plain Python values. Whatever the SDK made of an odd body is not used:
    a body that is not JSON is a MalformedAnswer saying so (retryable), never a Python message."""
    try:
        send()
    except Exception as error:
        if too_large := caused_by(error, AnswerTooLarge):
            raise MalformedAnswer(str(too_large)) from None
        code = status_code(error)
        if (isinstance(code, int) and code >= 400) or isinstance(error, CONNECTION_ERRORS):
            raise
        # the SDK choked on the body: read it ourselves below, to say what is wrong with it
    body = last_body()
    if body is None:
        raise MalformedAnswer("the server sent no answer body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        if body.lstrip()[:1] == b"<":
            raise MalformedAnswer("the answer is an HTML page, not JSON") from None
        raise MalformedAnswer(f"the answer is not JSON ({len(body)} bytes)") from None


def _time_left(timeout: float | None, timeout_error: type[Exception]) -> float | None:
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise timeout_error("timeout_s passed before the answer was complete")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """A network stream whose every operation waits at most the time left to the attempt."""

    def __init__(self, inner: Any, core: ModuleType):
        self._inner = inner
        self._core = core

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, self._core.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        return self._inner.write(buffer, _time_left(timeout, self._core.WriteTimeout))

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        timeout = _time_left(timeout, self._core.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._core)

    def close(self) -> None:
        self._inner.close()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _DeadlineBackend:
    """httpcore's network backend, with connects bounded by the attempt's deadline too."""

    def __init__(self, inner: Any, core: ModuleType):
        self._inner = inner
        self._core = core

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, *args: Any, **kwargs: Any) -> Any:
        timeout = _time_left(timeout, self._core.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, timeout, *args, **kwargs), self._core)

    def connect_unix_socket(self, path: str, timeout: float | None = None, *args: Any, **kwargs: Any) -> Any:
        timeout = _time_left(timeout, self._core.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, timeout, *args, **kwargs), self._core)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _GuardedTransport:
    """Reads each response body here: within the deadline, up to MAX_BODY_BYTES, kept for `last_body`."""

    def __init__(self, inner: Any, httpx: ModuleType):
        self._inner = inner
        self._httpx = httpx

    def handle_request(self, request: Any) -> Any:
        httpx = self._httpx
        response = self._inner.handle_request(request)
        decoded = httpx.Response(response.status_code, headers=response.headers, stream=response.stream)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in decoded.iter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise AnswerTooLarge(f"the server's answer is over {MAX_BODY_BYTES // 2**20} MB; refused")
                _time_left(None, httpx.ReadTimeout)  # also between chunks (a proxy's stream has no deadline)
                chunks.append(chunk)
        finally:
            decoded.close()
        body = b"".join(chunks)
        _local.body = body
        headers = [
            (key, value)
            for key, value in response.headers.multi_items()
            if key.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(response.status_code, headers=headers, content=body, extensions=response.extensions)

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def guarded_client(base: type, httpx: ModuleType, core: ModuleType, **kwargs: Any) -> Any:
    """An instance of `base` (an httpx Client class) whose requests go through the guards above."""

    class GuardedClient(base):  # type: ignore[misc, valid-type]
        def _transport_for_url(self, url: Any) -> Any:  # every route, proxies included
            return _GuardedTransport(super()._transport_for_url(url), httpx)

    transport = httpx.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = _DeadlineBackend(pool._network_backend, core)
    return GuardedClient(transport=transport, **kwargs)


def openai_http_client(timeout: float) -> Any:
    import httpcore2
    import httpx2
    import openai

    return guarded_client(openai.DefaultHttpxClient, httpx2, httpcore2, timeout=timeout)


def zhipuai_http_client(timeout: float) -> Any:
    import httpcore
    import httpx

    return guarded_client(httpx.Client, httpx, httpcore, timeout=timeout)


def check_base_url(url: Any, where: str) -> None:
    """An http(s) URL with a host and a valid port (or a list of them: a fleet of servers, fleet.py),
    or InvalidInput naming `where`: no network needed."""
    if isinstance(url, list):
        if not url:
            raise InvalidInput("give at least one server URL", where=where)
        for number, one in enumerate(url):
            check_base_url(one, f"{where}[{number}]")
        if len(set(url)) < len(url):
            raise InvalidInput("a server is listed twice", where=where)
        return
    shown = repr(url)
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{shown} is not a URL; expected e.g. http://localhost:8000/v1", where=where)
    if url != url.strip() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidInput(f"{shown} contains spaces or control characters", where=where)
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. "Invalid IPv6 URL" for http://[::1
        raise InvalidInput(f"{shown} is not a URL ({error})", where=where) from None
    if parts.username is not None or parts.password is not None:  # the spec, manifest and logs would keep it
        raise InvalidInput(
            "the URL carries credentials (user:key@host); give the key in the environment variable "
            "provider.api_key_env names, never in a spec",
            where=where,
        )
    if parts.scheme.lower() not in ("http", "https"):
        hint = f" (did you mean http://{url}?)" if "://" not in url and not url.startswith("/") else ""
        raise InvalidInput(f"{shown} does not start with http:// or https://{hint}", where=where)
    if not url.lower().startswith(f"{parts.scheme.lower()}://") or not parts.hostname:
        raise InvalidInput(f"{shown} has no host; expected e.g. {parts.scheme}://localhost:8000/v1", where=where)
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in 0..65535)
    except ValueError:
        raise InvalidInput(f"{shown} has an invalid port", where=where) from None
