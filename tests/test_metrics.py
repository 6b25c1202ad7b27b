import pytest

from runner.tasks.classification.metrics import INVALID, classification_metrics

LABELS = ["a", "b", "c"]


def test_hand_computed_metrics():
    gold = ["a", "a", "b", "b", "c", "c"]
    predicted = ["a", "b", "b", "b", None, "c"]
    found = classification_metrics(gold, predicted, LABELS)
    assert found["accuracy"] == pytest.approx(4 / 6)
    assert found["invalid"] == 1 and found["invalid_rate"] == pytest.approx(1 / 6)
    # a: P 1, R .5, F1 2/3; b: P 2/3, R 1, F1 .8; c: P 1, R .5, F1 2/3
    assert found["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert found["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert found["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)
    assert found["confusion"]["labels"] == [*LABELS, INVALID]
    assert found["confusion"]["matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]


def test_class_never_predicted_scores_zero_not_error():
    found = classification_metrics(["a", "b"], ["a", "a"], LABELS)
    assert found["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert found["per_class"]["c"]["support"] == 0
    assert INVALID not in found["confusion"]["labels"]
