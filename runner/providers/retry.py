"""Retries with exponential backoff and Retry-After, and a requests-per-minute limit.

The SDK clients are built with max_retries=0, so these are the only retries: they are not
stacked on the SDKs' own.
"""

from __future__ import annotations

import email.utils
import json
import random
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
RETRY_AFTER_CAP_S = 120.0

CONNECTION_ERRORS = (openai.APIConnectionError, zhipu_errors.APIConnectionError)
MALFORMED_ERRORS = (json.JSONDecodeError, openai.APIResponseValidationError, zhipu_errors.APIResponseValidationError)


def status_code(error: BaseException) -> int | None:
    return getattr(error, "status_code", None)


def is_retryable(error: BaseException) -> bool:
    """Timeouts, dropped connections, malformed bodies, 408/409/429 and 5xx are worth another try."""
    if isinstance(error, CONNECTION_ERRORS + MALFORMED_ERRORS):
        return True
    code = status_code(error)
    return code is not None and (code in RETRYABLE_STATUS or code >= 500)


def retry_after(error: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After, seconds or HTTP date), if it did."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def with_retries(
    call: Callable[[], T], max_retries: int, on_retry: Callable[[BaseException, float], None] | None = None
) -> T:
    for attempt in range(max_retries + 1):
        try:
            return call()
        except Exception as error:
            if attempt == max_retries or not is_retryable(error):
                raise
            wait = retry_after(error)
            if wait is None:
                wait = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
            wait = min(wait, RETRY_AFTER_CAP_S)
            if on_retry:
                on_retry(error, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart, across threads."""

    def __init__(self, requests_per_minute: float | None):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(0.0, start - now))
