"""Classification metrics (scikit-learn), with invalid answers counted rather than hidden."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

INVALID = "<invalid>"


def classification_metrics(gold: list[str], predicted: list[str | None], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the label set, per-class P/R/F1/support, confusion matrix.

    An invalid answer (None) counts as wrong everywhere and as its own confusion column.
    """
    predicted = [INVALID if p is None else p for p in predicted]
    n_invalid = predicted.count(INVALID)
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    matrix_labels = labels + ([INVALID] if n_invalid else [])
    return {
        "n": len(gold),
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        "invalid": n_invalid,
        "invalid_rate": n_invalid / len(gold) if gold else 0.0,
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion": {
            "labels": matrix_labels,
            "matrix": confusion_matrix(gold, predicted, labels=matrix_labels).tolist(),
        },
    }


def classification_stats(gold: list[str], predicted: list[str | None], labels: list[str]) -> np.ndarray:
    """Per example: [1, correct, invalid, TP per label…, FP per label…, FN per label…] (see `classification_aggregate`)."""
    index = {label: i for i, label in enumerate(labels)}
    m = len(labels)
    stats = np.zeros((len(gold), 3 + 3 * m))
    for row, (truth, guess) in enumerate(zip(gold, predicted, strict=True)):
        stats[row, 0] = 1
        stats[row, 1] = guess == truth
        stats[row, 2] = guess is None or guess == INVALID
        if guess == truth:
            stats[row, 3 + index[truth]] = 1
            continue
        if guess in index:
            stats[row, 3 + m + index[guess]] = 1  # a false positive for the label it guessed
        if truth in index:
            stats[row, 3 + 2 * m + index[truth]] = 1  # a false negative for its own label
    return stats


def classification_aggregate(totals: np.ndarray, n_labels: int) -> dict[str, Any]:
    """accuracy, macro_f1 (over every label, sklearn's zero_division=0) and invalid_rate from summed stats."""
    totals = np.asarray(totals, dtype=float)
    n, correct, invalid = totals[..., 0], totals[..., 1], totals[..., 2]
    tp, fp, fn = (totals[..., 3 + i * n_labels : 3 + (i + 1) * n_labels] for i in range(3))
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    found = {
        "accuracy": np.divide(correct, n, out=np.zeros_like(n), where=n > 0),
        "macro_f1": f1.mean(axis=-1),
        "invalid_rate": np.divide(invalid, n, out=np.zeros_like(n), where=n > 0),
    }
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in found.items()}
