"""API keys never leave the process: every text a provider hands back passes through `redact`.

A server may echo the key it was sent (in a 401 message, or in an answer); whatever specrun
then prints, caches or writes to a run folder would carry it. Providers register each key
they read, and redact every error message and answer text at their boundary, so nothing
downstream (manifest, raw outputs, predictions, cache, console) ever sees the value.
"""

from __future__ import annotations

import threading
from typing import Any

MASK = "<redacted>"
MIN_LENGTH = 8  # shorter "keys" (e.g. "x" for a local server) would mangle ordinary text

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register(value: str | None) -> None:
    """Remember a key's value so `redact` removes it from now on."""
    global _secrets
    if not value or len(value.strip()) < MIN_LENGTH:
        return
    with _lock:
        if value not in _secrets:
            _secrets = tuple(sorted({*_secrets, value, value.strip()}, key=len, reverse=True))


def redact(text: str) -> str:
    """The text with every registered key's value replaced by <redacted>."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: Any) -> Any:
    """`redact` applied to every string inside a JSON-like value (dicts, lists, keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
