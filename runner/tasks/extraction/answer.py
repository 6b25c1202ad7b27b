"""The extraction answer: one canonical JSON object {type name: [entity strings]}.

`render` writes it (training targets, few-shot examples); `parse` reads what a model wrote,
tolerating code fences, trailing prose, single quotes and full-width punctuation; `locate` maps
the strings back to character spans; `AnswerGuide` tells a decoder which continuations keep the
answer well formed with every entity a substring of the text (constrained decoding).
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from runner.tasks.classification.normalize import fold


@dataclass(frozen=True, order=True)
class Entity:
    start: int
    end: int  # exclusive
    type: str  # the dataset's type (a key of spec.entities)
    text: str


def render(entities: list[Entity] | tuple[Entity, ...], names: dict[str, str]) -> str:
    """Types in spec order, only those present; each string once, in order of first occurrence."""
    found: dict[str, list[str]] = {}
    for entity in sorted(entities):
        strings = found.setdefault(entity.type, [])
        if entity.text not in strings:
            strings.append(entity.text)
    return json.dumps({names[t]: found[t] for t in names if t in found}, ensure_ascii=False)


@dataclass
class Parsed:
    entities: dict[str, list[str]]  # dataset type -> strings, as the model wrote them
    unknown_types: list[str]  # keys that name no extracted type (dropped)


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_FULL_WIDTH = str.maketrans({"：": ":", "，": ",", "“": '"', "”": '"', "‘": "'", "’": "'", "｛": "{", "｝": "}",
                             "【": "[", "】": "]", "［": "[", "］": "]"})  # fmt: skip


def name_key(name: str) -> str:
    """How a type's key or display name is compared with the keys an answer writes (one rule for both):
    case and width folded, invisible characters dropped, edge spaces stripped."""
    return fold("".join(char for char in name if unicodedata.category(char) != "Cf")).strip()


def parse(answer: str, names: dict[str, str]) -> Parsed | None:
    """The entities an answer names, or None when no JSON object can be read from it.

    Whatever a model or a file can write is read or refused (None), never raised: a value of the
    wrong kind (a dict or list where a string belongs) is skipped, nesting too deep for the parser
    counts as unreadable.
    """
    if not isinstance(answer, str):
        return None
    fenced = _FENCE.search(answer)
    text = fenced.group(1) if fenced else answer
    obj = _first_object(text)
    if obj is None:
        obj = _first_object(text.translate(_FULL_WIDTH))
    if not isinstance(obj, dict):
        return None
    by_name = {name_key(name): entity_type for entity_type, name in names.items()}
    by_name.update({name_key(entity_type): entity_type for entity_type in names})
    entities: dict[str, list[str]] = {}
    unknown = []
    for key, value in obj.items():
        entity_type = by_name.get(name_key(str(key)))
        if entity_type is None:
            unknown.append(str(key))
            continue
        values = value if isinstance(value, list) else [value]
        strings = entities.setdefault(entity_type, [])
        seen = set(strings)
        for item in values:
            if isinstance(item, str) and item.strip() and item.strip() not in seen:
                seen.add(item.strip())
                strings.append(item.strip())
    return Parsed(entities=entities, unknown_types=unknown)


#: Candidate {...} spans tried per answer, and characters read looking for their closing braces in
#: all: each try reads to its closing brace, so an answer made of thousands of nested unreadable
#: objects would otherwise take quadratic time. Past either bound the answer counts as unreadable.
MAX_CANDIDATES = 32
MAX_SCANNED = 1_000_000


def _first_object(text: str) -> Any:
    """The first {...} in text that parses as JSON (or a Python literal: single quotes), else None."""
    start = text.find("{")
    budget = MAX_SCANNED
    for _ in range(MAX_CANDIDATES):
        if start == -1:
            break
        end = _matching_brace(text, start, budget)
        if end is None:
            return None
        budget -= end - start + 1
        candidate = text[start : end + 1]
        for attempt in (candidate, re.sub(r",\s*([}\]])", r"\1", candidate)):
            try:
                return json.loads(attempt)
            except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
                pass
            try:
                return ast.literal_eval(attempt)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: {{...}}
                pass
        start = text.find("{", start + 1)
    return None


def _matching_brace(text: str, start: int, limit: int | None = None) -> int | None:
    """The index of the "}" closing the "{" at start (quotes respected), None if there is none within limit chars."""
    depth, quote, escaped = 0, None, False
    stop = len(text) if limit is None else min(len(text), start + max(limit, 0))
    for index in range(start, stop):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def locate(parsed: dict[str, list[str]], text: str) -> tuple[set[tuple[str, int, int]], list[str]]:
    """Spans (type, start, end exclusive) of every named string, and the strings not in the text.

    A string is mapped to each of its occurrences, except those inside an occurrence of a longer
    named string (「银行」 inside a named 「浙商银行」 is not a second entity).
    """
    occurrences: list[tuple[str, int, int]] = []
    hallucinated = []
    starts = _starts({string for strings in parsed.values() for string in strings if string}, text)
    for entity_type, strings in parsed.items():
        for string in strings:
            found = starts.get(string, [])
            if not found:
                hallucinated.append(string)
            occurrences += [(entity_type, start, start + len(string)) for start in found]
    # One sweep in (start, longest first) order: a span lies inside a longer one exactly when an
    # earlier start reaches at least as far, or a span with its start reaches further. Sorting keeps
    # this O(n log n); comparing every pair took minutes for a 1-character answer in a long text.
    spans = set()
    reach_before = -1  # the furthest end of the spans that start before the current start
    group_start, group_reach = None, -1
    for entity_type, start, end in sorted(occurrences, key=lambda o: (o[1], -o[2])):
        if start != group_start:
            reach_before = max(reach_before, group_reach)
            group_start, group_reach = start, end  # the first of a start group is its longest
        if reach_before >= end or group_reach > end:
            continue
        spans.add((entity_type, start, end))
    return spans, hallucinated


#: Strings of one length above which one pass over the text (a set lookup per position) is cheaper
#: than one regex search per string: thousands of strings in a long text took seconds each way.
_SLIDE_FROM = 12


def _starts(strings: set[str], text: str) -> dict[str, list[int]]:
    """Each string's non-overlapping occurrences, left to right (what re.finditer finds), by start.

    Cost is bounded by the text's length times the number of distinct string lengths (at most
    about the square root of twice the answer's length), not times the number of strings.
    """
    by_length: dict[int, set[str]] = {}
    for string in strings:
        by_length.setdefault(len(string), set()).add(string)
    found: dict[str, list[int]] = {}
    for length, group in by_length.items():
        if len(group) < _SLIDE_FROM:
            for string in group:
                found[string] = [m.start() for m in re.finditer(re.escape(string), text)]
            continue
        free_from: dict[str, int] = {}  # a string's next occurrence may not overlap its last
        for index in range(len(text) - length + 1):
            piece = text[index : index + length]
            if piece in group and index >= free_from.get(piece, 0):
                found.setdefault(piece, []).append(index)
                free_from[piece] = index + length
    return found


class AnswerGuide:
    """A prefix checker for constrained decoding of `{"名": ["实体", ...], ...}`.

    States are small tuples, so a decoder keeps one per row and asks `advance(state, piece)` for each
    candidate token's text: None means the piece would break the answer. Keys are the extracted
    types' display names, each at most once; strings are non-empty substrings of the input text.
    """

    START = ("start",)

    def __init__(self, text: str, type_names: list[str], strict: bool = True):
        self.text = text
        self.names = type_names
        self.strict = strict  # False: free generation, only stopped once an object is complete
        # A key opens a list that needs one string from the text: with no character a string may
        # hold (an empty text), the only valid answer is {}, so no key may start.
        self.can_name = any(char not in '\\\n"' for char in text)

    def advance(self, state: tuple | None, piece: str) -> tuple | None:
        if not self.strict:
            return ("free", (state[1] if state and len(state) > 1 else "") + piece)
        for char in piece:
            if state is None:
                return None
            state = self._step(state, char)
        return state

    def done(self, state: tuple | None) -> bool:
        if state is None:
            return False
        if state[0] == "free":
            text = state[1]
            start = text.find("{")
            return (start != -1 and _matching_brace(text, start) is not None) or (start == -1 and "\n" in text.strip())
        return state[0] == "end"

    def _step(self, state: tuple, char: str) -> tuple | None:
        """One character of the canonical form json.dumps writes: `{"名": ["甲", "乙"], "名2": ["丙"]}`.

        Lists are never empty and a string is named once in the whole answer (a span has one type).
        """
        kind, keys, strings = state[0], state[1] if len(state) > 1 else (), state[2] if len(state) > 2 else ()
        if kind == "start":
            return ("object", (), ()) if char == "{" else None
        if kind == "object":  # after "{" or after a list's "]"
            if char == "}":
                return ("end",)
            if char == "," and keys:
                return ("space_before_key", keys, strings)
            return ("key", keys, strings, "") if char == '"' and not keys and self.can_name else None
        if kind == "space_before_key":
            return ("quote_key", keys, strings) if char == " " else None
        if kind == "quote_key":
            return ("key", keys, strings, "") if char == '"' else None
        if kind == "key":
            key = state[3]
            if char == '"':
                return ("colon", (*keys, key), strings) if key in self.names and key not in keys else None
            candidate = key + char
            fits = any(name.startswith(candidate) for name in self.names if name not in keys)
            return ("key", keys, strings, candidate) if fits else None
        if kind == "colon":
            return ("space_before_list", keys, strings) if char == ":" else None
        if kind == "space_before_list":
            return ("list_open", keys, strings) if char == " " else None
        if kind == "list_open":
            return ("quote_string", keys, strings) if char == "[" else None
        if kind == "quote_string":
            return ("string", keys, strings, "") if char == '"' else None
        if kind == "string":
            value = state[3]
            if char == '"':
                return ("after_string", keys, (*strings, value)) if value and value not in strings else None
            candidate = value + char
            return ("string", keys, strings, candidate) if candidate in self.text and char not in '\\\n"' else None
        if kind == "after_string":
            if char == "]":
                return ("object", keys, strings)
            return ("space_before_string", keys, strings) if char == "," else None
        if kind == "space_before_string":
            return ("quote_string", keys, strings) if char == " " else None
        return None  # "end": nothing may follow
