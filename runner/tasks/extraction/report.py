"""Extraction's part of the report and page: constrained rows in words, its mistakes (in eval order)."""

from __future__ import annotations

from typing import Any

from runner.providers.registry import capability
from runner.tasks.common import Mistake, MistakeSet, model_of, text_or_none


def row_description(row: str, manifest: dict[str, Any]) -> str | None:
    """A mode's row decoded under the answer guide says so; anything else is the generic description."""
    spec = manifest["spec"]
    if spec["evaluation"].get("constrained") and capability(spec["provider"]["name"], "can_guide", False):
        return f"{model_of(row, manifest)} · {spec['evaluation']['method']} · constrained"
    return None


def extraction_mistakes(
    records: list[dict[str, Any]], row: str, names: dict[str, str], limit: int = 8
) -> MistakeSet | None:
    """Examples whose predicted (type, span) set differs from the gold one, in eval order."""
    if not records or row not in records[0]:
        return None
    wrong, shown = 0, []
    for record in records:
        prediction = record.get(row) or {}
        gold = {(t, s, e) for t, s, e, *_ in record.get("gold") or []}
        guess = {tuple(span) for span in prediction.get("spans") or []}
        if gold == guess and not prediction.get("invalid"):
            continue
        wrong += 1
        if len(shown) < limit:
            text = str(record.get("text", ""))
            shown.append(
                Mistake(
                    text=text,
                    gold=_entities(sorted(gold, key=lambda s: s[1]), text, names),
                    predicted="(unreadable answer)"
                    if prediction.get("invalid")
                    else _entities(sorted(guess, key=lambda s: s[1]), text, names),
                    answer=text_or_none(record.get(f"{row}_answer")),
                )
            )
    return MistakeSet(row, "the first ones in eval order", wrong, shown)


def _entities(spans: list[tuple], text: str, names: dict[str, str]) -> str:
    return "; ".join(f"{names.get(t, t)}: {text[s:e]}" for t, s, e in spans) or "(none)"
