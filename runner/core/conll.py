"""CoNLL columns: one token per line with its tags, a blank line between sentences (what the tags mean
is the task's: runner/tasks/extraction/bio.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runner.core.errors import InvalidInput


def conll_sentences(text: str, path: Path) -> list[tuple[int, Any]]:
    """CoNLL columns, one token per line and a blank line between sentences: (first line, {"columns": one
    list of fields per token, "lines": each token's line}) per sentence. Fields are split on spaces and
    tabs only (an ideographic space is a token); a -DOCSTART- line separates documents and is no token.
    Every line has as many fields as the first (at least a token and its tag), or exit 2 names it."""
    rows: list[tuple[int, Any]] = []
    columns: list[list[str]] = []
    lines: list[int] = []
    width, width_line = 0, 0
    for number, line in enumerate([*text.split("\n"), ""], 1):
        fields = [field for field in re.split(r"[ \t]+", line.strip(" \t\r")) if field]
        if fields and fields[0] != "-DOCSTART-":
            if not width:
                width, width_line = len(fields), number
                if width < 2:
                    raise InvalidInput("a CoNLL line holds a token and its tag, separated by a space or tab",
                                       where=f"{path}:{number}")  # fmt: skip
            if len(fields) != width:
                raise InvalidInput(f"{len(fields)} columns here, {width} on line {width_line}",
                                   where=f"{path}:{number}")  # fmt: skip
            columns.append(fields)
            lines.append(number)
        elif columns:
            rows.append((lines[0], {"columns": columns, "lines": lines}))
            columns, lines = [], []
    return rows
