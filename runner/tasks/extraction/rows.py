"""Reading an extraction row's entities, in each format a dataset may use (the task reads, init counts)."""

from __future__ import annotations

from typing import Any

from runner.core.errors import InvalidInput


def detect_format(row: dict[str, Any], where: str) -> str:
    if isinstance(row.get("label"), dict):
        return "cluener"
    if isinstance(row.get("entities"), list):
        return "entities"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "text" in row and "label" not in row and "entities" not in row:
        return "cluener"  # CLUENER rows with no entities may omit label
    raise InvalidInput(
        "cannot tell the row's format: expected CLUENER {text, label}, {text, entities} or {prompt, completion}",
        where=where,
    )


def cluener_entities(row: dict[str, Any], where: str) -> list[tuple[str, str, int, int]]:
    label = row.get("label") or {}
    if not isinstance(label, dict):
        raise InvalidInput("CLUENER label must be {type: {entity: [[start, end], ...]}}", where=where)
    found = []
    for entity_type, mentions in label.items():
        if not isinstance(mentions, dict):
            raise InvalidInput(f"label.{entity_type} must map entity text to spans", where=where)
        for string, spans in mentions.items():
            if not isinstance(spans, list) or not all(_is_span(span) for span in spans):
                raise InvalidInput(f"label.{entity_type}.{string}: spans must be [[start, end_inclusive], ...]",
                                   where=where)  # fmt: skip
            found += [(entity_type, string, start, end + 1) for start, end in spans]
    return found


def listed_entities(row: dict[str, Any], where: str) -> list[tuple[str, str, int, int]]:
    found = []
    for index, entity in enumerate(row.get("entities") or []):
        if not (isinstance(entity, dict) and isinstance(entity.get("type"), str) and isinstance(entity.get("text"), str)
                and _is_span([entity.get("start"), entity.get("end")])):  # fmt: skip
            raise InvalidInput(
                f"entities[{index}] must be {{type, text, start, end}} with integer offsets", where=where
            )
        found.append((entity["type"], entity["text"], entity["start"], entity["end"]))
    return found


def _is_span(span: Any) -> bool:
    return (
        isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in span)
    )
