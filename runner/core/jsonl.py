"""One JSONL reader for every file specrun reads line by line (data, chat files, the run folder).

Why one: `str.splitlines()` also splits on U+2028, U+2029, U+0085 and other separators that
JSON allows raw inside strings, so it cut valid rows in two. JSONL lines end at "\\n" only.
Every failure (bytes that are not UTF-8, text that is not JSON, nesting too deep for the
parser, integers too long to convert) becomes one `InvalidInput` naming file:line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner.core.errors import InvalidInput

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def decode_utf8(raw: bytes, where: str) -> str:
    """The text of `raw`; bytes that are not UTF-8 are an error naming the line they are on.

    A UTF-8 byte-order mark at the start is dropped (some editors write one; JSON forbids it).
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise InvalidInput(
            f"not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); save the file as UTF-8",
            where=f"{where}:{line}",
        ) from None


def read_text(path: str | Path, what: str = "file") -> str:
    """A whole file as UTF-8 text, with one clear `InvalidInput` when it is missing or not UTF-8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{what} not found", where=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput(f"{what} is a directory, not a file", where=str(path)) from None
    except OSError as error:
        raise InvalidInput(f"cannot read {what}: {error.strerror or error}", where=str(path)) from None
    return decode_utf8(raw, str(path))


class DuplicateKey(Exception):
    """An object names one key twice: json keeps the last silently, which hides a broken row."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook that refuses a key given twice in one object."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return obj


def parse_json(text: str, path: str | Path, line: int | None = None) -> Any:
    """json.loads, with every way it can fail on hostile input turned into `InvalidInput`.

    `line`: the file line `text` is (one JSONL line); without it `text` is the whole file, and
    malformed JSON is placed at its own line. Besides malformed JSON: nesting deeper than the
    parser's recursion limit raises RecursionError, and integers with more digits than Python
    converts raise ValueError.
    """
    where = f"{path}:{line}" if line else str(path)
    try:
        value = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as error:
        at = f"{path}:{(line or 1) + error.lineno - 1}"
        raise InvalidInput(f"not valid JSON ({error.msg}, column {error.colno})", where=at) from None
    except DuplicateKey as error:
        raise InvalidInput(f"the key {error.args[0]!r} appears twice in one object", where=where) from None
    except RecursionError:
        raise InvalidInput("JSON nested too deeply to read", where=where) from None
    except ValueError as error:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise InvalidInput(f"JSON value cannot be read: {error}", where=where) from None
    if (escape := lone_surrogate(text, value)) is not None:
        lines_before = text.count("\n", 0, escape)
        at = f"{path}:{(line or 1) + lines_before}"
        message = "a \\uD800-\\uDFFF escape without its pair (a lone surrogate): not Unicode text, nothing can write it"
        raise InvalidInput(message, where=at)
    return value


def lone_surrogate(text: str, value: Any) -> int | None:
    """Where in JSON `text` its first \\uD800-\\uDFFF escape is, when `value` (parsed from it) holds a
    lone surrogate, which no UTF-8 file can hold; None when it holds none (pairs are emoji and fine)."""
    escape = _SURROGATE_ESCAPE.search(text)
    if escape is None:
        return None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return escape.start()
    return None


def dumps(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """JSON that every reader accepts, for every file specrun writes (json.dumps alone is not that).

    json.dumps writes NaN and Infinity (not JSON) and, with ensure_ascii=False, lone surrogates
    that no UTF-8 file can hold. A non-finite number becomes null (what it measures is unknown);
    a value holding a lone surrogate is written with \\u escapes, so nothing is lost or garbled.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, indent=indent, sort_keys=sort_keys)
    except ValueError:  # a NaN or an Infinity somewhere (a circular value raises the same: let it)
        value = _finite(value)
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, indent=indent, sort_keys=sort_keys)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, allow_nan=False, indent=indent, sort_keys=sort_keys)
    return text


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, containers rebuilt, the rest as is."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def split_lines(text: str) -> list[str]:
    """Lines of JSONL text, split on "\\n" only (a trailing "\\r" is left for json to ignore)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_jsonl(path: str | Path, *, torn_tail_ok: bool = False) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed value) for every non-blank line of a JSONL file.

    With `torn_tail_ok` (the run folder's own files), a last line that has no newline and is
    not valid JSON is what a kill in the middle of an append leaves: it is dropped and
    everything before it kept. Any other bad line is an `InvalidInput` naming file:line.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if torn_tail_ok and raw and not raw.endswith(b"\n"):
        tail = raw.rpartition(b"\n")[2]
        try:
            tail.decode("utf-8")
        except UnicodeDecodeError:  # the kill cut a multi-byte character: that line is torn anyway
            raw = raw[: len(raw) - len(tail)]
    text = decode_utf8(raw, str(path))
    lines = split_lines(text)
    complete = text.endswith("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = parse_json(line, path, number)
        except InvalidInput:
            if torn_tail_ok and number == len(lines) and not complete:
                return
            raise
        yield number, value


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput("file not found", where=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput("is a directory, not a JSONL file", where=str(path)) from None
    except OSError as error:
        raise InvalidInput(f"cannot read: {error.strerror or error}", where=str(path)) from None


def repair_tail(path: Path) -> None:
    """Make an appendable file end on a line boundary, so the next append starts on a new line.

    A kill during an append can leave a last line without its newline: if that line is
    complete JSON it gets its newline, otherwise (a torn fragment) it is cut off. Without
    this, the next row would be glued onto the fragment and both would be lost.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        # Find the start of the last line without reading a big file whole.
        start, block = size, 1 << 16
        while start > 0:
            begin = max(0, start - block)
            handle.seek(begin)
            chunk = handle.read(start - begin)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                start = begin + newline + 1
                break
            start = begin
        handle.seek(start)
        tail = handle.read()
        try:
            json.loads(tail.decode("utf-8"))
            whole = True
        except (UnicodeDecodeError, ValueError, RecursionError):
            whole = False
        if whole:
            handle.seek(size)
            handle.write(b"\n")
        else:
            handle.truncate(start)
