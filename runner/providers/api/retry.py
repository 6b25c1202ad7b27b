"""Retries with exponential backoff and Retry-After, and a requests-per-minute limit.

The SDK clients are built with max_retries=0, so these are the only retries: they are not
stacked on the SDKs' own. A server's Retry-After is obeyed up to RETRY_AFTER_CAP_S (an absurd
one is capped and said aloud once); one that is negative, NaN or unreadable is ignored in
favour of the normal backoff. Every wait ends early when the run is stopped (Ctrl-C).
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import openai
import zhipuai.core._errors as zhipu_errors

T = TypeVar("T")

RETRYABLE_STATUS = {408, 409, 429}
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 60.0


class MalformedAnswer(Exception):
    """A 200 answer whose body is not the JSON shape the API documents: worth another try."""


class Stopped(Exception):
    """The run is stopping (Ctrl-C, or another request failed for good): start nothing more."""


class Transient(Exception):
    """A retryable failure already put in words (and redacted) by the provider, for callers that retry."""


CONNECTION_ERRORS = (openai.APIConnectionError, zhipu_errors.APIConnectionError, Transient)
MALFORMED_ERRORS = (
    json.JSONDecodeError,
    MalformedAnswer,
    openai.APIResponseValidationError,
    zhipu_errors.APIResponseValidationError,
)


def status_code(error: BaseException) -> int | None:
    return getattr(error, "status_code", None)


def is_retryable(error: BaseException) -> bool:
    """Timeouts, dropped connections, malformed bodies, 408/409/429 and 5xx are worth another try."""
    if isinstance(error, CONNECTION_ERRORS + MALFORMED_ERRORS):
        return True
    code = status_code(error)
    return code is not None and (code in RETRYABLE_STATUS or code >= 500)


def _seconds(value: str, scale: float = 1.0) -> float | None:
    """A finite, non-negative number of seconds, or None for anything else (negative, NaN, text)."""
    try:
        seconds = float(value) * scale
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_after(error: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After, seconds or HTTP date), if it did sensibly."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        value = headers.get("retry-after-ms")
        if value and (seconds := _seconds(str(value), 1 / 1000)) is not None:
            return seconds
        value = headers.get("retry-after")
    except Exception:  # a headers object that is not a mapping: no advice
        return None
    if not value:
        return None
    value = str(value).strip()
    seconds = _seconds(value)
    if seconds is not None or not value or value[0] in "+-0123456789.":
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


_said: set[str] = set()
_said_lock = threading.Lock()


def say_once(message: str, key: str | None = None) -> None:
    """Print a warning line the first time it (or its key) comes up in this process, not once per request."""
    key = key or message
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def with_retries(
    call: Callable[[], T],
    max_retries: int,
    on_retry: Callable[[BaseException, float], None] | None = None,
    stop: threading.Event | None = None,
) -> T:
    """call(), retried on retryable errors; raises Stopped instead of starting an attempt once stop is set."""
    for attempt in range(max_retries + 1):
        if stop is not None and stop.is_set():
            raise Stopped
        try:
            return call()
        except Exception as error:
            if attempt == max_retries or not is_retryable(error):
                raise
            wait = retry_after(error)
            if wait is None:
                wait = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
            elif wait > RETRY_AFTER_CAP_S:
                say_once(
                    f"a server asked to wait {wait:.0f} s before retrying (Retry-After); "
                    f"waiting at most {RETRY_AFTER_CAP_S:.0f} s instead (said once)",
                    key="retry-after-cap",
                )
                wait = RETRY_AFTER_CAP_S
            if on_retry:
                on_retry(error, wait)
            if stop is None:
                time.sleep(wait)
            elif stop.wait(wait):
                raise Stopped from None
    raise AssertionError("unreachable")


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart, across threads."""

    def __init__(self, requests_per_minute: float | None):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self, stop: threading.Event | None = None) -> None:
        """Sleep until this request may start; raise Stopped if the run stops meanwhile."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if stop is None:
            time.sleep(max(0.0, start - now))
        elif stop.wait(max(0.0, start - now)):
            raise Stopped
