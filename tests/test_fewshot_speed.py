"""Few-shot retrieval keeps TF-IDF sparse, and chooses the same shots as the dense computation did."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from runner.config.spec import load_spec
from runner.data.dataset import spec_examples, take
from runner.data.fewshot import choose_shots, tfidf_vectors
from tests.conftest import ROOT, make_tiny_gemma


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


@pytest.mark.model
def test_long_prompts_with_one_token_answers_pack_and_score_as_alone(tmp_path, monkeypatch):
    """Past the sliding window, prompts were scored one length at a time even when no answer has a second
    token to see the padding; they now pack, with the scores each prompt gets alone."""
    from runner.providers.local import model as local_model
    from runner.providers.local.provider import LocalProvider

    provider = LocalProvider(str(make_tiny_gemma(tmp_path / "tiny", sliding_window=8)), batch_size=4)
    answers = ["科", "金", "娱"]
    assert all(len(provider.tokenizer.encode(a, add_special_tokens=False)) == 1 for a in answers)
    conversations = [
        [{"role": "user", "content": "分类：科、金、娱\n文本：" + "新闻" * n + "\n类别："}] for n in (3, 5, 8, 11)
    ]
    batches = []
    original = local_model._token_batches
    monkeypatch.setattr(local_model, "_token_batches", lambda *a, **k: batches.append(original(*a, **k)) or batches[-1])
    together = provider.score(conversations, answers)
    assert len(batches[0]) < len(conversations)  # packed, not one batch per prompt length
    alone = np.vstack([provider.score([c], answers) for c in conversations])
    assert together == pytest.approx(alone, abs=1e-4)
