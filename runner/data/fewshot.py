"""Few-shot examples for each eval item: `random` (seeded) or `similar` (nearest by cosine).

The pool is the train split. `similar` embeds the pool once: either char 1-2-gram TF-IDF
(instant, no model) or the local LLM's mean-pooled upper-layer hidden states with the mean
vector subtracted (`llm`: slower, cached on disk by model and text). bench/fewshot_retrieval.py
measures which retrieves better for TNEWS; the default is the winner.
"""

from __future__ import annotations

import hashlib
import math
import random
import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from runner import cache_root
from runner.tasks import Embed, Example


def choose_shots(
    config: dict[str, Any],
    pool: list[Example],
    items: list[Example],
    embed: Embed | None,
    stratum: Callable[[Example], str] = lambda example: "",
) -> dict[str, list[Example]]:
    """{eval example id: its k examples from the pool}, most similar first for `similar`.

    `balance` caps examples per stratum (the label, for classification)."""
    k = min(config["k"], len(pool))
    take = partial(_take, pool=pool, k=k, balance=config["balance"], stratum=stratum)
    if config["strategy"] == "random":
        return {item.id: take(_random_order(len(pool), config, item.id)) for item in items}
    pool_vectors, item_vectors = (embed or tfidf_vectors)([e.text for e in pool], [e.text for e in items])
    similarity = item_vectors @ pool_vectors.T
    if hasattr(similarity, "toarray"):  # TF-IDF stays sparse: only items × pool is ever dense
        similarity = similarity.toarray()
    shots = {}
    for row, item in enumerate(items):
        order = np.argsort(-similarity[row], kind="stable")
        shots[item.id] = take(order)
    return shots


def _random_order(n: int, config: dict[str, Any], item_id: str) -> list[int]:
    rng = random.Random(f"{config['seed']}:{item_id}")  # the same shots for an item on every run
    order = list(range(n))
    rng.shuffle(order)
    return order


def _take(order, pool: list[Example], k: int, balance: bool, stratum: Callable[[Example], str]) -> list[Example]:
    """The first k in `order`; balanced: at most ceil(k / strata in pool) per stratum."""
    if not balance:
        return [pool[i] for i in order[:k]]
    cap = math.ceil(k / len({stratum(e) for e in pool}))
    chosen, per_label = [], {}
    for i in order:
        label = stratum(pool[i])
        if per_label.get(label, 0) < cap:
            chosen.append(pool[i])
            per_label[label] = per_label.get(label, 0) + 1
            if len(chosen) == k:
                break
    return chosen


def tfidf_vectors(pool: list[str], items: list[str]) -> tuple[Any, Any]:
    """L2-normalised char 1-2-gram TF-IDF, fitted on the pool, as sparse matrices.

    Dense, the pool's matrix is pool lines × every character bigram seen: 2,000 TNEWS lines made
    ~1 GB and took 12 s before the first prompt was scored; on a pool of long reviews, minutes.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
    pool_vectors = vectorizer.fit_transform(pool)
    return pool_vectors, vectorizer.transform(items)


class EmbeddingCache:
    """float32 vectors in SQLite, keyed by (model, text)."""

    def __init__(self, model: str):
        self.model = model
        path = cache_root() / "embeddings.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB)")

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model}\0{text}".encode()).hexdigest()

    def get_many(self, texts: list[str]) -> dict[str, np.ndarray]:
        found = {}
        keys = {self.key(t): t for t in texts}
        items = list(keys)
        for start in range(0, len(items), 500):
            batch = items[start : start + 500]
            rows = self.db.execute(
                f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(batch))})", batch
            )
            found.update((keys[key], np.frombuffer(blob, dtype=np.float32)) for key, blob in rows)
        return found

    def put_many(self, vectors: dict[str, np.ndarray]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
            [(self.key(text), vector.astype(np.float32).tobytes()) for text, vector in vectors.items()],
        )
        self.db.commit()


def llm_embedder(provider, progress: Callable[[int], None] | None = None) -> Embed:
    """Cached mean-pooled upper-layer states of a local model, centred on the reference texts' mean
    and L2-normalised: an item's vector depends on the pool (or train split) and itself, never on
    the other items being embedded, the way TF-IDF is fitted on the pool alone."""
    cache = EmbeddingCache(f"{provider.identity.get('sha256', provider.model)}:upper-mean-nobos")

    def vectors(texts: list[str]) -> np.ndarray:
        known = cache.get_many(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if progress and len(known):
            progress(len(texts) - len(missing))
        for start in range(0, len(missing), 32):
            batch = missing[start : start + 32]
            fresh = dict(zip(batch, provider.embed(batch), strict=True))
            cache.put_many(fresh)
            known.update(fresh)
            if progress:
                progress(len(batch))
        return np.stack([known[t] for t in texts]).astype(np.float64)

    def embed(reference: list[str], others: list[str]) -> tuple[np.ndarray, np.ndarray]:
        matrix = vectors(reference + others)
        matrix -= matrix[: len(reference)].mean(axis=0, keepdims=True)  # the shared direction says nothing about topic
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)
        return matrix[: len(reference)], matrix[len(reference) :]

    return embed
