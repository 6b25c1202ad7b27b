"""Bootstrap intervals for every metric, and paired bootstrap of a difference between two rows.

Tasks give per-example statistics (`Task.example_stats`: one row of counts per example) and an
aggregation of their column sums (`Task.aggregate`), as lm-evaluation-harness does. A resample
is then a vector of per-example multiplicities, and every resample's totals are one matrix
product: exact for ratio metrics such as macro-F1 and entity F1, whose counts (TP/FP/FN) must be
summed before dividing, and cheap enough to run for every metric of every row.

Every row of a run is resampled with the same example indices (the same seed), so comparing two
rows is a paired bootstrap with no extra work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

# One home for these defaults; the manifest records them (`bootstrap_settings`).
RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
CHUNK = 100  # resamples per matrix product: bounds memory at CHUNK × n multiplicities

Aggregate = Callable[[np.ndarray], dict[str, Any]]  # totals (..., k) -> {metric: value(s)}


def bootstrap_settings() -> dict[str, Any]:
    """What a reader needs to reproduce the intervals."""
    return {"method": "percentile", "resamples": RESAMPLES, "seed": SEED, "confidence": CONFIDENCE}


def multiplicities(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """Each resample as counts per example (chunks of shape (≤CHUNK, n)), drawn from one seeded generator.

    The same (n, resamples, seed) always gives the same resamples, whichever rows they are applied to.
    """
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        size = min(CHUNK, resamples - done)
        indices = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size) * n)[:, None]
        yield np.bincount((indices + offsets).ravel(), minlength=size * n).reshape(size, n)
        done += size


def resampled_metrics(
    stats: np.ndarray, aggregate: Aggregate, metrics: tuple[str, ...], resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, np.ndarray]:
    """Every metric over every resample: {metric: array of shape (resamples,)}."""
    stats = np.asarray(stats, dtype=float)
    if len(stats) == 0:
        return {metric: np.zeros(0) for metric in metrics}
    chunks: dict[str, list[np.ndarray]] = {metric: [] for metric in metrics}
    for counts in multiplicities(len(stats), resamples, seed):
        found = aggregate(counts @ stats)
        for metric in metrics:
            chunks[metric].append(np.broadcast_to(np.asarray(found[metric], dtype=float), (len(counts),)))
    return {metric: np.concatenate(values) for metric, values in chunks.items()}


def interval(values: np.ndarray, confidence: float = CONFIDENCE) -> list[float] | None:
    """Two-sided percentile interval; None when there is nothing to resample."""
    if len(values) == 0:
        return None
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return [round(float(low), 6), round(float(high), 6)]


def ci95(
    stats: np.ndarray, aggregate: Aggregate, metrics: tuple[str, ...], resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, list[float]]:
    """{metric: [low, high]}: the 95% percentile bootstrap interval of every metric of one row."""
    resampled = resampled_metrics(stats, aggregate, metrics, resamples, seed)
    found = {metric: interval(values) for metric, values in resampled.items()}
    return {metric: bounds for metric, bounds in found.items() if bounds is not None}


def paired_difference(
    left: np.ndarray,
    right: np.ndarray | None,
    aggregate: Aggregate,
    metric: str,
    right_metric: str | None = None,
    offset: float = 0.0,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> np.ndarray:
    """left.metric − (right.right_metric + offset) on each resample, both rows on the same example indices.

    `right` None compares with the constant `offset` (a gate's number threshold).
    """
    ahead = resampled_metrics(left, aggregate, (metric,), resamples, seed)[metric]
    if right is None:
        return ahead - offset
    if len(right) != len(left):
        raise ValueError(f"paired rows need the same examples ({len(left)} vs {len(right)})")
    right_metric = right_metric or metric
    behind = resampled_metrics(right, aggregate, (right_metric,), resamples, seed)[right_metric]
    return ahead - behind - offset


def fewest_examples(confidence: float) -> int:
    """The smallest sample that can show a one-sided difference at `confidence`.

    The percentile bootstrap claims too much on a handful of examples (4 of 4 going one way gives
    every resample the same sign, "100%"); an exact sign test on n examples all favouring one side
    still leaves chance a 2^-n probability, so fewer than this many can never support the claim.
    """
    return math.ceil(math.log(1 - confidence) / math.log(0.5) - 1e-9)


def holds(differences: np.ndarray, op: str, confidence: float) -> bool:
    """Whether `difference op 0` holds with one-sided `confidence` (e.g. `>`: its lower bound is above 0)."""
    if len(differences) == 0:
        return False
    if op in (">", ">="):
        bound = float(np.percentile(differences, 100 * (1 - confidence)))
        return bound > 0 if op == ">" else bound >= 0
    if op in ("<", "<="):
        bound = float(np.percentile(differences, 100 * confidence))
        return bound < 0 if op == "<" else bound <= 0
    raise ValueError(f"no one-sided test for {op!r}")
