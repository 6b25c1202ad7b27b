"""The classical rival every report shows: char 1-2-gram TF-IDF + logistic regression.

Trained on the same train split the LLM is fine-tuned on, so the reader sees what the LLM adds.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from runner.tasks import Example


def baseline_predictions(train: list[Example], evaluation: list[Example]) -> list[str]:
    labels = {example.gold for example in train}
    if len(labels) < 2 or not _has_text(train):  # logistic regression needs two classes and some text
        return [_most_common(train)] * len(evaluation) if train else [None] * len(evaluation)
    model = _tfidf_model().fit([example.text for example in train], [example.gold for example in train])
    return list(model.predict([example.text for example in evaluation]))


def baseline_probabilities(train: list[Example], targets: list[list[Example]], labels: list[str]) -> list[np.ndarray]:
    """The baseline's class probabilities for each list in `targets`, columns in `labels` order.

    A label the train split never shows gets probability 0 (the ensemble clips it to 1e-9).
    """
    seen = sorted({example.gold for example in train})
    model = None
    if len(seen) >= 2 and _has_text(
        train
    ):  # logistic regression needs two classes; otherwise the one seen gets probability 1
        model = _tfidf_model().fit([example.text for example in train], [example.gold for example in train])
    found = list(model.classes_) if model is not None else [_most_common(train)] if train else []
    tables = []
    for examples in targets:
        texts = [example.text for example in examples]
        proba = model.predict_proba(texts) if model is not None else np.ones((len(examples), 1))
        table = np.zeros((len(examples), len(labels)))
        for column, label in enumerate(labels):
            if label in found:
                table[:, column] = proba[:, found.index(label)]
        tables.append(table)
    return tables


def probe_predictions(train: np.ndarray, train_gold: list[str], evaluation: np.ndarray) -> list[str]:
    """A linear probe: logistic regression on the LLM's pooled hidden states (standardised)."""
    if len(set(train_gold)) < 2 or not np.isfinite(train).all() or not np.isfinite(evaluation).all():
        # one class, or hidden states holding NaN/inf (which the solver refuses): the majority label
        return [max(set(train_gold), key=train_gold.count) if train_gold else None] * len(evaluation)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
    return list(model.fit(train, train_gold).predict(evaluation))


def _has_text(examples: list[Example]) -> bool:
    """Whether TF-IDF will find any character to count: with none it raises "empty vocabulary"."""
    return any(example.text for example in examples)


def _most_common(examples: list[Example]) -> str:
    golds = [example.gold for example in examples]
    return max(sorted(set(golds)), key=golds.count)


def _tfidf_model():
    return make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=10.0),
    )
