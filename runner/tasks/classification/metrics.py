"""Classification metrics (scikit-learn), with invalid answers counted rather than hidden."""

from __future__ import annotations

from typing import Any

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
