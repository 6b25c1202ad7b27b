"""The tokenizer cache: a damaged cached rank file is replaced from runner/resources/tiktoken/, never downloaded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest

from runner.core.errors import RuntimeFailure
from runner.core.tokens import EXPECTED_SHA256, RANK_FILES, cached_rank_file, install_rank_file
from tests.conftest import ROOT


def test_the_shipped_files_have_the_hashes_tiktoken_expects():
    for name, expected in EXPECTED_SHA256.items():
        assert hashlib.sha256((RANK_FILES / f"{name}.tiktoken").read_bytes()).hexdigest() == expected


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "missing"])
def test_a_damaged_cached_file_is_replaced(tmp_path, damage):
    cached = cached_rank_file("cl100k_base", tmp_path)
    shipped = (RANK_FILES / "cl100k_base.tiktoken").read_bytes()
    content = {"truncated": shipped[: len(shipped) // 2], "empty": b"", "garbage": b"\x00" * 100}.get(damage)
    if content is not None:
        cached.write_bytes(content)
    assert install_rank_file("cl100k_base", tmp_path) == cached
    assert cached.read_bytes() == shipped
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no temporary file left behind


def test_a_good_cached_file_is_not_rewritten(tmp_path):
    cached = install_rank_file("o200k_base", tmp_path)
    os.utime(cached, (1, 1))
    install_rank_file("o200k_base", tmp_path)
    assert cached.stat().st_mtime == 1


def test_a_cache_that_is_a_file_is_one_runtime_failure(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RuntimeFailure, match="cannot write the tokenizer cache"):
        install_rank_file("cl100k_base", blocker / "tiktoken")


OFFLINE = textwrap.dedent(
    """
    import tiktoken.load
    def no_network(*args, **kwargs):
        raise SystemExit("tiktoken tried to download")
    tiktoken.load.read_file = no_network
    from runner.core.tokens import encoding_for_model
    print(len(encoding_for_model("gpt-4o-mini").encode("hello world")))
    """
)


def test_a_half_copied_cache_file_never_sends_tiktoken_to_the_network(tmp_path):
    cache = tmp_path / "cache"
    cached = cached_rank_file("o200k_base", cache / "tiktoken")
    cached.parent.mkdir(parents=True)
    cached.write_bytes((RANK_FILES / "o200k_base.tiktoken").read_bytes()[:1000])  # a copy killed half-way
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE],
        cwd=ROOT,
        env={**os.environ, "SPECRUN_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
