"""Classification's part of the report and page: its rows in words, its mistakes (most confident first)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from runner.tasks.common import Mistake, MistakeSet, label_text, model_of, text_or_none


def row_description(row: str, manifest: dict[str, Any], baseline_name: str) -> str:
    """ensemble and probe rows by what was chosen for them; a mode's row by its model, method and calibration."""
    choices = manifest.get("choices") or {}
    if row == "ensemble" and "ensemble" in choices:
        chosen = choices["ensemble"]
        return f"{chosen['mode']} × {chosen['llm_weight']:g} + {baseline_name} × {1 - chosen['llm_weight']:g} (weight chosen on validation)"
    if row == "probe":
        return f"logistic regression on the LLM's hidden states, {manifest['data']['train']} train lines"
    evaluation = manifest["spec"]["evaluation"]
    how = evaluation["method"]
    if evaluation["method"] == "score":
        calibration = (choices.get(row, {}).get("calibration") or {}).get("chosen", evaluation["calibration"])
        how += " · raw" if row.endswith("_uncalibrated") or calibration == "none" else f" · {calibration}-calibrated"
    return f"{model_of(row, manifest)} · {how}"


def majority(metrics: dict[str, Any], names: dict[str, str]) -> tuple[str, float] | None:
    """The eval split's most frequent gold label (per-class support) and the share it holds, which is
    the accuracy of always answering it; None when the row has no per-class counts."""
    per_class = metrics.get("per_class")
    found = per_class.items() if isinstance(per_class, dict) else []
    support = {label: c["support"] for label, c in found if isinstance(c, dict) and isinstance(c.get("support"), int)}
    total = metrics.get("n") if isinstance(metrics.get("n"), int) else sum(support.values())
    if not support or not total:
        return None
    label = max(support, key=lambda key: support[key])
    return f"always answering the most frequent label {label_text(label, names)}", support[label] / total


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
            gold=label_text(r.get("gold"), names),
            predicted=label_text(r.get(row), names),
            answer=text_or_none(r.get(f"{mode}_answer")),
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
                gold=label_text(record.get("gold"), names),
                predicted=label_text(record.get(row), names),
                confidence=float(p[labels.index(record[row])]),
                gold_probability=float(p[labels.index(record["gold"])]) if record.get("gold") in labels else None,
            )
        )
    mistakes.sort(key=lambda m: -(m.confidence or 0.0))
    how = "most confident first: the model's probability for its answer, a softmax over the labels' scores"
    calibrated = {"mean": " (mean-calibrated)", "bias": " (with the fitted per-label bias)"}.get(method, " (raw)")
    return MistakeSet(row, how + calibrated, len(wrong), mistakes[:limit])
