"""Few-shot retrieval keeps TF-IDF sparse, and chooses the same shots as the dense computation did."""

from __future__ import annotations

import numpy as np
import scipy.sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from runner.config.spec import load_spec
from runner.data.dataset import spec_examples, take
from runner.data.fewshot import choose_shots, tfidf_vectors
from tests.conftest import ROOT


def test_tfidf_vectors_stay_sparse():
    """Dense, a pool's matrix is lines × every character bigram: ~1 GB for 2,000 TNEWS lines."""
    pool_vectors, item_vectors = tfidf_vectors(["苹果发布新款手机芯片", "央行下调存款准备金率"], ["小米手机"])
    assert scipy.sparse.issparse(pool_vectors) and scipy.sparse.issparse(item_vectors)


def test_similar_shots_are_those_the_dense_vectors_chose():
    """On real TNEWS lines (600 in the pool, 60 items), each item's k shots are exactly the old ones, in order."""
    spec = load_spec(ROOT / "specs" / "tnews.yaml")
    examples, _ = spec_examples(spec)
    items = take(examples, {"take": "random", "n": 60, "seed": 7})
    chosen = {e.id for e in items}
    pool = [e for e in examples if e.id not in chosen][:600]
    config = {"k": 4, "strategy": "similar", "embedding": "tfidf", "balance": False, "seed": 0}
    shots = choose_shots(config, pool, items, None)

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True).fit([e.text for e in pool])
    dense_pool = vectorizer.transform([e.text for e in pool]).toarray()
    dense_items = vectorizer.transform([e.text for e in items]).toarray()
    similarity = dense_items @ dense_pool.T
    for row, item in enumerate(items):
        order = np.argsort(-similarity[row], kind="stable")
        assert [e.id for e in shots[item.id]] == [pool[i].id for i in order[:4]]
