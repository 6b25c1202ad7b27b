"""Exact OpenAI token counts offline, from the tiktoken rank files shipped in data/tiktoken/.

tiktoken normally downloads these files; it also reads them from TIKTOKEN_CACHE_DIR under the
SHA-1 of their download URL. We place our verified copies there, so tiktoken's own encoding
definitions (regex, special tokens) are used unchanged and nothing touches the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from functools import cache
from pathlib import Path

import tiktoken

from runner import PROJECT_ROOT

RANK_FILES = PROJECT_ROOT / "data" / "tiktoken"
_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
SHIPPED_ENCODINGS = ("cl100k_base", "o200k_base")


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
    cache_dir = Path(os.environ.get("SPECRUN_CACHE", Path.home() / ".cache" / "specrun")) / "tiktoken"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / hashlib.sha1(_URL.format(name).encode()).hexdigest()
    if not cached.exists():
        shutil.copyfile(RANK_FILES / f"{name}.tiktoken", cached)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)  # tiktoken verifies the sha256 as it loads
    return tiktoken.get_encoding(name)
