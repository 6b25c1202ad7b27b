"""Entity-level metrics, strict on (type, span), with the counts behind every figure.

A prediction is {"spans": [[type, start, end], ...], "invalid": bool, "hallucinated": [...],
"unknown_types": [...]}; gold is a list of [type, start, end, text]. Errors are sorted into the
four kinds a reader acts on: missed, spurious, wrong type (right span), wrong boundary (same type,
overlapping span).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_metrics(
    gold: list[list[Any]], predicted: list[dict[str, Any]], types: list[str], texts: list[str] | None = None
) -> dict[str, Any]:
    counts = {t: Counter() for t in types}
    errors: dict[str, Counter] = {t: Counter() for t in types}
    examples: dict[str, dict[str, list[str]]] = {t: {} for t in types}
    n_invalid = n_hallucinated = n_predicted_strings = n_unknown = 0
    for index, (gold_spans, prediction) in enumerate(zip(gold, predicted, strict=True)):
        truth = {(t, s, e) for t, s, e, *_ in gold_spans}
        guess = {tuple(span) for span in prediction["spans"]}
        n_invalid += bool(prediction.get("invalid"))
        n_hallucinated += len(prediction.get("hallucinated", []))
        n_unknown += len(prediction.get("unknown_types", []))
        n_predicted_strings += prediction.get("n_strings", len(guess))
        text = texts[index] if texts else ""
        for span in truth | guess:
            entity_type = span[0]
            if entity_type not in counts:
                continue
            if span in truth and span in guess:
                counts[entity_type]["tp"] += 1
            elif span in guess:
                counts[entity_type]["fp"] += 1
            else:
                counts[entity_type]["fn"] += 1
        for kind, entity_type, detail in _classify(truth, guess, text):
            errors[entity_type][kind] += 1
            shown = examples[entity_type].setdefault(kind, [])
            if len(shown) < 3:
                shown.append(detail)
    per_type = {}
    for entity_type in types:
        c = counts[entity_type]
        precision, recall, f1 = _f1(c["tp"], c["fp"], c["fn"])
        per_type[entity_type] = {
            "precision": precision, "recall": recall, "f1": f1,
            "support": c["tp"] + c["fn"], "tp": c["tp"], "fp": c["fp"], "fn": c["fn"],
            "errors": dict(errors[entity_type]), "error_examples": examples[entity_type],
        }  # fmt: skip
    tp, fp, fn = (sum(c[k] for c in counts.values()) for k in ("tp", "fp", "fn"))
    precision, recall, f1 = _f1(tp, fp, fn)
    supported = [m["f1"] for m in per_type.values() if m["support"]]
    n = len(gold)
    return {
        "n": n,
        "entity_precision": precision,
        "entity_recall": recall,
        "entity_f1": f1,
        "macro_f1": sum(supported) / len(supported) if supported else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "invalid": n_invalid,
        "invalid_rate": n_invalid / n if n else 0.0,
        "hallucinated": n_hallucinated,
        "hallucination_rate": n_hallucinated / n_predicted_strings if n_predicted_strings else 0.0,
        "unknown_types": n_unknown,
        "per_type": per_type,
    }


def entity_stats(gold: list[list[Any]], predicted: list[dict[str, Any]], types: list[str]) -> np.ndarray:
    """Per example: [1, invalid, hallucinated, predicted strings, TP per type…, FP per type…, FN per type…],
    counted exactly as `entity_metrics` counts them (see `entity_aggregate`)."""
    index = {t: i for i, t in enumerate(types)}
    m = len(types)
    stats = np.zeros((len(gold), 4 + 3 * m))
    for row, (gold_spans, prediction) in enumerate(zip(gold, predicted, strict=True)):
        truth = {(t, s, e) for t, s, e, *_ in gold_spans}
        guess = {tuple(span) for span in prediction["spans"]}
        stats[row, :4] = (
            1, bool(prediction.get("invalid")), len(prediction.get("hallucinated", [])),
            prediction.get("n_strings", len(guess)),
        )  # fmt: skip
        for span in truth | guess:
            if span[0] not in index:
                continue
            kind = 0 if span in truth and span in guess else (1 if span in guess else 2)
            stats[row, 4 + kind * m + index[span[0]]] += 1
    return stats


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    top, bottom = np.asarray(top, dtype=float), np.asarray(bottom, dtype=float)
    return np.divide(top, bottom, out=np.zeros(np.broadcast(top, bottom).shape), where=bottom > 0)


def _f1_arrays(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_f1` over arrays, the same arithmetic, so aggregating every example gives `entity_metrics`' figures."""
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def entity_aggregate(totals: np.ndarray, n_types: int) -> dict[str, Any]:
    """entity P/R/F1 (micro), macro_f1 over types with support, invalid and hallucination rates from summed stats."""
    totals = np.asarray(totals, dtype=float)
    n, invalid, hallucinated, strings = (totals[..., i] for i in range(4))
    tp, fp, fn = (totals[..., 4 + i * n_types : 4 + (i + 1) * n_types] for i in range(3))
    precision, recall, f1 = _f1_arrays(tp.sum(axis=-1), fp.sum(axis=-1), fn.sum(axis=-1))
    per_type_f1 = _f1_arrays(tp, fp, fn)[2]
    supported = (tp + fn) > 0
    found = {
        "entity_precision": precision,
        "entity_recall": recall,
        "entity_f1": f1,
        "macro_f1": _ratio((per_type_f1 * supported).sum(axis=-1), supported.sum(axis=-1)),
        "invalid_rate": _ratio(invalid, n),
        "hallucination_rate": _ratio(hallucinated, strings),
    }
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in found.items()}


def _classify(truth: set, guess: set, text: str) -> list[tuple[str, str, str]]:
    """(kind, type, example) for each error: wrong_type and wrong_boundary first, then missed, spurious."""
    found = []
    unmatched_truth = truth - guess
    unmatched_guess = guess - truth
    for span in sorted(unmatched_guess):
        entity_type, start, end = span
        same_span = next((g for g in unmatched_truth if g[1] == start and g[2] == end), None)
        if same_span is not None:
            found.append(("wrong_type", same_span[0], f"{text[start:end]} ({same_span[0]} → {entity_type})"))
            unmatched_truth.discard(same_span)
            continue
        overlap = next((g for g in unmatched_truth if g[0] == entity_type and g[1] < end and start < g[2]), None)
        if overlap is not None:
            found.append(("wrong_boundary", entity_type, f"{text[overlap[1] : overlap[2]]} → {text[start:end]}"))
            unmatched_truth.discard(overlap)
            continue
        found.append(("spurious", entity_type, text[start:end]))
    for entity_type, start, end in sorted(unmatched_truth):
        found.append(("missed", entity_type, text[start:end]))
    return found
