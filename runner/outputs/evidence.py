"""What the page shows beyond the metrics, read back from the run folder: losses and mistakes.

Losses: the fine-tune stage appends every job event to finetune_events.jsonl (the local trainer
reports every step's train loss in an event every 10 steps, cloud jobs as their API does) and keeps checkpoints,
with train and validation loss, in finetune.json. Mistakes: predictions.jsonl holds, per eval
example, the gold answer, each row's prediction, and the raw label scores (`<mode>_scores`) or
answers (`<mode>_answer`) behind them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LossCurve:
    train: list[tuple[int, float]] = field(default_factory=list)  # (step, that one step's loss) from job events
    checkpoint_train: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last)
    valid: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)

    def __bool__(self) -> bool:
        return bool(self.train or self.checkpoint_train or self.valid)


def _point(step: Any, loss: Any) -> tuple[int, float] | None:
    try:
        step, loss = int(step), float(loss)
    except (TypeError, ValueError):
        return None
    return (step, loss) if math.isfinite(loss) else None


def loss_curve(events: list[dict[str, Any]], state: dict[str, Any] | None) -> LossCurve:
    """Train loss by step from events (a step reported twice keeps its last value), checkpoint losses."""
    curve = LossCurve()
    train: dict[int, float] = {}
    valid: dict[int, float] = {}
    for event in events:
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(data, dict):
            continue
        if str(event.get("message", "")).startswith("Checkpoint "):
            continue  # the local trainer's checkpoint events repeat finetune.json's checkpoint means
        if point := _point(data.get("step"), data.get("train_loss")):
            train[point[0]] = point[1]
            every = data.get("step_losses")  # the local trainer: every step's loss since its previous event
            if isinstance(every, list) and len(every) <= point[0]:
                for offset, loss in enumerate(reversed(every)):
                    if found := _point(point[0] - offset, loss):
                        train[found[0]] = found[1]
        if point := _point(data.get("step"), data.get("valid_loss")):  # OpenAI's metrics events carry it
            valid[point[0]] = point[1]
    for checkpoint in (state or {}).get("checkpoints") or []:
        found = (checkpoint.get("metrics") if isinstance(checkpoint, dict) else None) or {}
        step = found.get("step", checkpoint.get("step") if isinstance(checkpoint, dict) else None)
        if point := _point(step, found.get("train_loss")):
            curve.checkpoint_train.append(point)
        if point := _point(step, found.get("valid_loss")):
            valid[point[0]] = point[1]
    curve.train, curve.valid = sorted(train.items()), sorted(valid.items())
    curve.checkpoint_train.sort()
    return curve


@dataclass
class Mistake:
    text: str
    gold: str
    predicted: str
    confidence: float | None = None  # the model's probability for its (wrong) answer, among the labels
    gold_probability: float | None = None
    answer: str | None = None  # the raw generated answer, when there was one


@dataclass
class MistakeSet:
    row: str
    how: str  # a sentence saying how these were chosen
    total: int
    shown: list[Mistake]


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibration_of(manifest: dict[str, Any], mode: str) -> tuple[str, dict[str, float]]:
    """How a mode's label scores were calibrated: the choice the task recorded in the manifest
    (`choices`, when calibration was chosen or fitted on validation), else the spec's setting."""
    chosen = ((manifest.get("choices") or {}).get(mode) or {}).get("calibration") or {}
    if chosen.get("chosen"):
        return str(chosen["chosen"]), dict(chosen.get("bias") or {})
    setting = manifest["spec"]["evaluation"].get("calibration", "none")
    return ("mean" if setting == "auto" else str(setting)), {}


def calibrate(scores: np.ndarray, labels: list[str], method: str, bias: dict[str, float]) -> np.ndarray:
    if method == "mean":
        return scores - scores.mean(axis=0, keepdims=True)
    if method == "bias":
        return scores + np.array([float(bias.get(label, 0.0)) for label in labels])
    return scores


def classification_mistakes(
    records: list[dict[str, Any]],
    row: str,
    names: dict[str, str],
    calibration: tuple[str, dict[str, float]] = ("none", {}),
    limit: int = 8,
) -> MistakeSet | None:
    """The row's wrong answers; with label scores, the most confident first (softmax over the labels'
    scores, calibrated the way the row's prediction was), else the first ones in eval order.

    The confidence is shown only when the recalibrated scores give back every prediction the row
    made: a page never shows a probability for an answer the model did not give that way."""
    if not records or row not in records[0]:
        return None
    wrong = [r for r in records if r.get(row) != r.get("gold")]
    mode = row.removesuffix("_uncalibrated")
    key = f"{mode}_scores"
    if all(isinstance(r.get(key), dict) for r in records):
        labels = list(records[0][key])
        method, bias = ("none", {}) if row.endswith("_uncalibrated") else calibration
        scores = np.array([[float(r[key].get(label, -math.inf)) for label in labels] for r in records])
        scores = calibrate(scores, labels, method, bias)
        if [labels[i] for i in scores.argmax(axis=1)] == [r.get(row) for r in records]:
            return _by_confidence(records, wrong, row, names, labels, _softmax(scores), method, limit)
    shown = [
        Mistake(
            text=str(r.get("text", "")),
            gold=_label(r.get("gold"), names),
            predicted=_label(r.get(row), names),
            answer=_text_or_none(r.get(f"{mode}_answer")),
        )
        for r in wrong[:limit]
    ]
    return MistakeSet(row, "the first ones in eval order (no label scores behind these answers)", len(wrong), shown)


def _by_confidence(
    records: list[dict[str, Any]],
    wrong: list[dict[str, Any]],
    row: str,
    names: dict[str, str],
    labels: list[str],
    probabilities: np.ndarray,
    method: str,
    limit: int,
) -> MistakeSet:
    index = {id(r): i for i, r in enumerate(records)}
    mistakes = []
    for record in wrong:
        p = probabilities[index[id(record)]]
        mistakes.append(
            Mistake(
                text=str(record.get("text", "")),
                gold=_label(record.get("gold"), names),
                predicted=_label(record.get(row), names),
                confidence=float(p[labels.index(record[row])]),
                gold_probability=float(p[labels.index(record["gold"])]) if record.get("gold") in labels else None,
            )
        )
    mistakes.sort(key=lambda m: -(m.confidence or 0.0))
    how = "most confident first: the model's probability for its answer, a softmax over the labels' scores"
    calibrated = {"mean": " (mean-calibrated)", "bias": " (with the fitted per-label bias)"}.get(method, " (raw)")
    return MistakeSet(row, how + calibrated, len(wrong), mistakes[:limit])


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
                    answer=_text_or_none(record.get(f"{row}_answer")),
                )
            )
    return MistakeSet(row, "the first ones in eval order", wrong, shown)


def _entities(spans: list[tuple], text: str, names: dict[str, str]) -> str:
    return "; ".join(f"{names.get(t, t)}: {text[s:e]}" for t, s, e in spans) or "(none)"


def _label(label: Any, names: dict[str, str]) -> str:
    if label is None:
        return "(invalid answer)"
    return f"{label} ({names[label]})" if label in names and names[label] != label else str(label)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
