"""The classical rival every report shows: char 1-2-gram TF-IDF + logistic regression.

Trained on the same train split the LLM is fine-tuned on, so the reader sees what the LLM adds.
"""

from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from runner.tasks import Example


def baseline_predictions(train: list[Example], evaluation: list[Example]) -> list[str]:
    labels = {example.gold for example in train}
    if len(labels) < 2:  # logistic regression needs two classes; predict the only one seen
        return [train[0].gold] * len(evaluation)
    model = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=10.0),
    )
    model.fit([example.text for example in train], [example.gold for example in train])
    return list(model.predict([example.text for example in evaluation]))
