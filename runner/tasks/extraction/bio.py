"""CoNLL / BIO tagged data in and out: the way most NER corpora ship (MSRA, People's Daily, Weibo NER,
Resume NER, CoNLL-2003).

In: a sentence (runner/data/dataset.py reads the columns, one token per line, a blank line between
sentences) becomes its text and entity spans. Tags may be BIO (= IOB2), BIOES or BMES; the scheme is
named by `data.conll.scheme` or read from the tags. A malformed sequence (an I- with no B-, an entity
BIOES never closes) is exit 2 naming file:line, unless `data.conll.lenient` reads it as conlleval and
seqeval's default mode do (an I- without its B- starts an entity).

Out: each evaluated row's predictions as conlleval's layout, token, gold tag, predicted tag, both IOB2
(whatever scheme the data came in), so a team's seqeval or conlleval script reads them unchanged.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core.errors import InvalidInput

SCHEMES = {"BIO": "BI", "IOB2": "BI", "BIOES": "BIES", "BMES": "BMES"}  # scheme -> its prefixes (O aside)
DOCS_HINT = "data.conll.scheme"


def split_tag(tag: str) -> tuple[str, str]:
    """('B', 'PER') from 'B-PER'; ('O', '') for O; ('', tag) for a tag with no prefix."""
    if tag == "O":
        return "O", ""
    prefix, dash, entity_type = tag.partition("-")
    if not dash or len(prefix) != 1 or not entity_type:
        return "", tag
    return prefix, entity_type


def schemes_fitting(tags: list[str]) -> set[str]:
    """The schemes these tags can be read in: B-/I- alone are BIO, E-/S- say BIOES or BMES, M- says BMES.
    Every scheme fits a sentence of O tags; the empty set means the tags mix schemes. Prefixes no scheme
    has are left for `decode` to name."""
    prefixes = {split_tag(tag)[0] for tag in tags} & set("BIMES")
    if not prefixes:
        return {"BIO", "BIOES", "BMES"}
    fitting = {"BIO"} if prefixes <= set("BI") else set()
    if prefixes <= set("BIES") and prefixes & set("ES"):
        fitting.add("BIOES")
    if prefixes <= set("BMES") and prefixes & set("MES"):
        fitting.add("BMES")
    return fitting


def decode(tags: list[str], scheme: str, lenient: bool, where: Callable[[int], str]) -> list[tuple[str, int, int]]:
    """(type, first token, last token + 1) for each entity; InvalidInput naming the tag's line.

    Strict: every entity opens with B- (or is one S- token) and, in BIOES/BMES, closes with E-.
    Lenient: conlleval's reading, each tag that cannot continue the open entity starts a new one.
    """
    allowed = SCHEMES[scheme]
    spans: list[tuple[str, int, int]] = []
    open_type, open_at = None, 0

    def close(end: int) -> None:
        nonlocal open_type
        if open_type is not None:
            spans.append((open_type, open_at, end))
            open_type = None

    def unclosed(index: int) -> InvalidInput:
        return InvalidInput(
            f"the {open_type} entity opened by line {where(open_at).rsplit(':', 1)[1]} is never closed by "
            f"E-{open_type} ({scheme}); set data.conll.lenient: true to read it as ending there",
            where=where(index),
        )

    for index, tag in enumerate(tags):
        prefix, entity_type = split_tag(tag)
        if prefix != "O" and (not prefix or prefix not in allowed):
            raise InvalidInput(
                f"tag {tag!r} is not O or {'/'.join(allowed)}-<type> ({scheme}); name the scheme in {DOCS_HINT} "
                f"({', '.join(SCHEMES)})",
                where=where(index),
            )
        ends_here = scheme != "BIO" and scheme != "IOB2" and open_type is not None
        if prefix == "O" or prefix in "BS":
            if ends_here and not lenient:
                raise unclosed(index)
            close(index)
            if prefix in "BS":
                open_type, open_at = entity_type, index
            if prefix == "S":
                close(index + 1)
            continue
        # I/M/E: continues the open entity of its type, or is malformed
        if open_type != entity_type:
            if not lenient:
                opened = f"B-{entity_type} before it" if open_type is None else f"B-{entity_type}: {open_type} is open"
                raise InvalidInput(
                    f"{tag} with no {opened}; IOB1 data (CoNLL-2003's original release) and other repairs read "
                    "with data.conll.lenient: true",
                    where=where(index),
                )
            close(index)
            open_type, open_at = entity_type, index
        if prefix == "E":
            close(index + 1)
    if open_type is not None and scheme not in ("BIO", "IOB2") and not lenient:
        raise unclosed(len(tags) - 1)
    close(len(tags))
    return spans


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def join_tokens(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The sentence's text and each token's [start, end) in it.

    Character-level data (every token one character: Chinese corpora) joins with nothing; token-level
    data joins with a space, except next to a Chinese character (segmented Chinese has no spaces).
    """
    char_level = all(len(token) == 1 for token in tokens)
    parts, offsets, position = [], [], 0
    for index, token in enumerate(tokens):
        if index and not char_level and not (_wide(tokens[index - 1][-1]) or _wide(token[0])):
            parts.append(" ")
            position += 1
        parts.append(token)
        offsets.append((position, position + len(token)))
        position += len(token)
    return "".join(parts), offsets


def tokens_of(record: dict[str, Any], text: str) -> list[tuple[int, int]] | None:
    """The token offsets of an example read from CoNLL (its record's tokens join into its text); None
    for any other row, even one with a `tokens` field of its own."""
    tokens = record.get("tokens")
    if not (isinstance(tokens, list) and tokens and all(isinstance(token, str) for token in tokens)):
        return None
    joined, offsets = join_tokens(tokens)
    return offsets if joined == text else None


def bio_tags(spans: list[list[Any]] | list[tuple[Any, ...]], offsets: list[tuple[int, int]]) -> list[str]:
    """IOB2 tags for character spans [type, start, end]: each span covers the tokens it overlaps.

    BIO cannot hold overlapping entities: the earliest, then longest, wins, and a span overlapping one
    already tagged is left out (predictions.jsonl keeps every span; the metrics count them all).
    """
    tags = ["O"] * len(offsets)
    starts, ends = [a for a, _ in offsets], [b for _, b in offsets]
    for entity_type, start, end in sorted(((s[0], s[1], s[2]) for s in spans), key=lambda s: (s[1], -s[2], s[0])):
        covered = range(bisect.bisect_right(ends, start), bisect.bisect_left(starts, end))  # tokens overlapping it
        if covered and all(tags[i] == "O" for i in covered):
            tags[covered[0]] = f"B-{entity_type}"
            for i in covered[1:]:
                tags[i] = f"I-{entity_type}"
    return tags


def conll_text(sentences: list[tuple[list[str], list[str], list[str]]]) -> str:
    """conlleval's layout: 'token gold predicted' per line, a blank line after each sentence."""
    return "".join(
        "".join(f"{token} {gold} {predicted}\n" for token, gold, predicted in zip(*sentence, strict=True)) + "\n"
        for sentence in sentences
    )


TAG = re.compile(r"O|[BIMES]-\S+")


def looks_like_conll(path: Path) -> bool:
    """Whether the file's first lines are CoNLL columns whose last one is BIO-style tags (for init, which
    reads a file with another suffix as CSV or TSV first)."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            head = [line for line in (handle.readline() for _ in range(200)) if line.strip(" \t\r\n")]
    except OSError:
        return False
    rows = [re.split(r"[ \t]+", line.strip(" \t\r\n")) for line in head if not line.startswith("-DOCSTART-")]
    return (
        bool(rows)
        and len({len(row) for row in rows}) == 1
        and len(rows[0]) >= 2
        and all(TAG.fullmatch(row[-1]) for row in rows)
    )


@dataclass
class Found:
    """What init read from a CoNLL file: sentences, mentions per type, the scheme, whether it needs lenient."""

    n_sentences: int
    counts: Counter
    texts: list[str]
    scheme: str
    lenient: bool


def survey(path: Path, rows: list[tuple[int, Any]]) -> Found:
    """The file's sentences read as a run reads them, the tag column the last: strictly when they allow it,
    else as conlleval would (init then writes lenient: true); an unknown tag is still exit 2."""
    tags = [[fields[-1] for fields in row["columns"]] for _, row in rows]
    fitting = {"BIO", "BIOES", "BMES"}
    for (line, _), sentence in zip(rows, tags, strict=True):
        if not (fitting := fitting & schemes_fitting(sentence)):
            raise InvalidInput(
                "these tags fit no one scheme (BIO, BIOES, BMES) with the sentences before them; fix them, or "
                "write the spec by hand naming data.conll.scheme",
                where=f"{path}:{line}",
            )
    scheme = min(fitting)
    for lenient in (False, True):
        counts: Counter = Counter()
        try:
            for (_, row), sentence in zip(rows, tags, strict=True):
                lines = row["lines"]
                spans = decode(sentence, scheme, lenient, lambda index, lines=lines: f"{path}:{lines[index]}")
                counts.update(entity_type for entity_type, *_ in spans)
        except InvalidInput:
            if lenient:
                raise
            continue
        texts = [join_tokens([fields[0] for fields in row["columns"]])[0] for _, row in rows]
        return Found(len(rows), counts, texts, scheme, lenient)
    raise AssertionError("unreachable: the lenient pass returns or raises")
