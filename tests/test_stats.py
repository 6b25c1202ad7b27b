"""Bootstrap intervals (runner/stats.py), the tasks' per-example statistics, and gates that use them."""

from __future__ import annotations

import numpy as np
import pytest

from runner import stats
from runner.spec import load_spec
from runner.tasks import Example, make_task
from runner.tasks.extraction.answer import Entity
from tests.conftest import write_project
from tests.test_extraction import write_ner_project


def accuracy(totals: np.ndarray) -> dict[str, np.ndarray]:
    """A one-metric aggregate over [n, correct] stats."""
    return {"accuracy": totals[..., 1] / totals[..., 0]}


def correct_stats(correct: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(correct)), correct])


# Per-example statistics: aggregating all of them is exactly the task's score


def classification_case(tmp_path, seed: int, n: int = 200):
    task = make_task(load_spec(write_project(tmp_path)).doc)
    labels = list(task.labels)
    rng = np.random.default_rng(seed)
    examples = [Example(str(i), "t", labels[rng.integers(len(labels))], {}) for i in range(n)]
    choices = [*labels, None]  # None: an invalid answer
    predicted = [e.gold if rng.random() < 0.5 else choices[rng.integers(len(choices))] for e in examples]
    return task, examples, predicted


def extraction_case(tmp_path, seed: int, n: int = 120):
    task = make_task(load_spec(write_ner_project(tmp_path)).doc)
    types = list(task.types)
    rng = np.random.default_rng(seed)
    examples, predicted = [], []
    for i in range(n):
        # the last type is never gold, only guessed: macro-F1 must leave it out, as entity_metrics does
        gold = tuple(sorted({Entity(s, s + 2, types[rng.integers(len(types) - 1)], "xx") for s in rng.integers(0, 8, 2)}))
        spans = [[e.type, e.start, e.end] for e in gold if rng.random() < 0.6]
        spans += [[types[rng.integers(len(types))], int(s), int(s) + 1] for s in rng.integers(0, 8, rng.integers(0, 2))]
        invalid = rng.random() < 0.1
        predicted.append({
            "spans": [] if invalid else spans, "invalid": bool(invalid),
            "hallucinated": ["某"] * int(rng.integers(0, 2)), "unknown_types": [], "n_strings": len(spans) + 1,
        })  # fmt: skip
        examples.append(Example(str(i), "x" * 10, gold, {}))
    return task, examples, predicted


@pytest.mark.parametrize("case", [classification_case, extraction_case])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregating_every_example_gives_the_tasks_score(tmp_path, case, seed):
    task, examples, predicted = case(tmp_path, seed)
    example_stats = task.example_stats(examples, predicted)
    assert example_stats.shape[0] == len(examples)
    scored = task.score(examples, predicted)
    aggregated = task.aggregate(example_stats.sum(axis=0))
    for metric in task.metrics:
        assert aggregated[metric] == pytest.approx(scored[metric], abs=1e-12), metric


def test_aggregate_of_a_batch_of_totals_is_one_value_per_total(tmp_path):
    task, examples, predicted = classification_case(tmp_path, 3)
    example_stats = task.example_stats(examples, predicted)
    totals = np.stack([example_stats[:50].sum(axis=0), example_stats.sum(axis=0)])
    batch = task.aggregate(totals)
    assert batch["accuracy"].shape == (2,)
    assert batch["macro_f1"][1] == pytest.approx(task.score(examples, predicted)["macro_f1"])
    assert batch["accuracy"][0] == pytest.approx(task.score(examples[:50], predicted[:50])["accuracy"])


# Intervals


def test_intervals_are_reproducible_with_a_seed_and_change_with_another():
    example_stats = correct_stats(np.random.default_rng(7).random(300) < 0.4)
    first = stats.ci95(example_stats, accuracy, ("accuracy",), seed=11)
    assert first == stats.ci95(example_stats, accuracy, ("accuracy",), seed=11)
    assert first != stats.ci95(example_stats, accuracy, ("accuracy",), seed=12)
    low, high = first["accuracy"]
    assert low < example_stats[:, 1].mean() < high


def test_resamples_are_the_same_indices_whatever_the_row():
    drawn = np.concatenate(list(stats.multiplicities(40, resamples=250, seed=3)))
    again = np.concatenate(list(stats.multiplicities(40, resamples=250, seed=3)))
    assert drawn.shape == (250, 40) and (drawn.sum(axis=1) == 40).all()
    assert (drawn == again).all()


def test_the_95_interval_covers_the_true_accuracy_in_most_synthetic_datasets():
    """200 datasets of 150 examples each with true accuracy 0.7: a 95% interval should miss it ~5% of the time."""
    rng = np.random.default_rng(2026)
    covered = 0
    trials = 200
    for trial in range(trials):
        example_stats = correct_stats(rng.random(150) < 0.7)
        low, high = stats.ci95(example_stats, accuracy, ("accuracy",), resamples=400, seed=trial)["accuracy"]
        covered += low <= 0.7 <= high
    assert 0.9 * trials <= covered <= trials - 1  # covers it nearly always, but it is an interval, not a certainty


def test_the_interval_narrows_with_more_examples():
    rng = np.random.default_rng(5)
    widths = []
    for n in (50, 2000):
        low, high = stats.ci95(correct_stats(rng.random(n) < 0.5), accuracy, ("accuracy",))["accuracy"]
        widths.append(high - low)
    assert widths[1] < widths[0] / 3


def test_no_examples_no_interval():
    assert stats.ci95(np.zeros((0, 2)), accuracy, ("accuracy",)) == {}


# Paired differences


def test_paired_difference_is_tighter_than_unpaired_rows_would_suggest():
    """Two rows that agree on most examples: the paired interval of their difference is narrow and above 0."""
    rng = np.random.default_rng(1)
    base = rng.random(400) < 0.5
    better = base | (rng.random(400) < 0.1)  # right everywhere base is, and on ~5% more
    diffs = stats.paired_difference(correct_stats(better), correct_stats(base), accuracy, "accuracy")
    low, high = stats.interval(diffs)
    assert 0 < low < high < 0.12
    assert stats.holds(diffs, ">", 0.95) and not stats.holds(diffs, "<", 0.95)


def test_a_difference_inside_the_noise_does_not_hold():
    rng = np.random.default_rng(4)
    one, other = rng.random(100) < 0.5, rng.random(100) < 0.52
    diffs = stats.paired_difference(correct_stats(other), correct_stats(one), accuracy, "accuracy")
    low, high = stats.interval(diffs)
    assert low < 0 < high
    assert not stats.holds(diffs, ">", 0.95) and not stats.holds(diffs, "<", 0.95)


def test_paired_rows_must_cover_the_same_examples():
    with pytest.raises(ValueError, match="same examples"):
        stats.paired_difference(correct_stats(np.ones(5)), correct_stats(np.ones(6)), accuracy, "accuracy")
