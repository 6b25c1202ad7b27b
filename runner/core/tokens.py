"""Exact OpenAI token counts offline, from the tiktoken rank files shipped in runner/resources/tiktoken/.

tiktoken normally downloads these files; it also reads them from TIKTOKEN_CACHE_DIR under the
SHA-1 of their download URL. We place our verified copies there, so tiktoken's own encoding
definitions (regex, special tokens) are used unchanged and nothing touches the network.

tiktoken re-downloads a cached file whose sha256 is wrong (offline: a traceback), so a cached
file is checked against the expected hash before tiktoken sees it and, when it is missing or
bad (a copy cut short by a kill, a full disk), replaced from the shipped copy atomically:
written to a temporary file in the same folder, fsynced, then renamed over the old one.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

import tiktoken

from runner import RESOURCES, cache_root
from runner.core.errors import RuntimeFailure
from runner.core.files import write_atomic

RANK_FILES = RESOURCES / "tiktoken"
_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
SHIPPED_ENCODINGS = ("cl100k_base", "o200k_base")
#: The hashes tiktoken itself expects for these files (tiktoken_ext/openai_public.py).
EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


def encoding_name(model: str) -> str | None:
    """The encoding tiktoken uses for `model`, or None when tiktoken does not know the model."""
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    return name if name in SHIPPED_ENCODINGS else None


@cache
def encoding_for_model(model: str) -> tiktoken.Encoding:
    name = encoding_name(model)
    if name is None:
        raise KeyError(f"no shipped tiktoken encoding for model {model!r} (shipped: {', '.join(SHIPPED_ENCODINGS)})")
    cache_dir = cache_root() / "tiktoken"
    install_rank_file(name, cache_dir)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)  # tiktoken verifies the sha256 again as it loads
    return tiktoken.get_encoding(name)


def cached_rank_file(name: str, cache_dir: Path) -> Path:
    """Where tiktoken looks for encoding `name` in `cache_dir`: the SHA-1 of its download URL."""
    return cache_dir / hashlib.sha1(_URL.format(name).encode()).hexdigest()


def install_rank_file(name: str, cache_dir: Path) -> Path:
    """Make sure `cache_dir` holds a good copy of `name`'s rank file; returns its path.

    A file with the expected sha256 is left alone; anything else (missing, truncated,
    corrupt) is replaced from runner/resources/tiktoken/ atomically. RuntimeFailure when the cache
    folder cannot be written or the shipped copy itself is damaged.
    """
    expected = EXPECTED_SHA256[name]
    cached = cached_rank_file(name, cache_dir)
    try:
        if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == expected:
            return cached
    except OSError:
        pass  # unreadable: replaced below
    shipped = RANK_FILES / f"{name}.tiktoken"
    try:
        data = shipped.read_bytes()
    except OSError as error:
        raise RuntimeFailure(f"{shipped}: cannot read the shipped tiktoken file: {error.strerror or error}") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise RuntimeFailure(f"{shipped}: the shipped tiktoken file is damaged (sha256 mismatch); restore it from git")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, data)
    except OSError as error:
        raise RuntimeFailure(
            f"{cache_dir}: cannot write the tokenizer cache (SPECRUN_CACHE): {error.strerror or error}"
        ) from None
    return cached
