"""Which embedding retrieves the right TNEWS topic: kNN accuracy of `similar` few-shot retrieval.

Run by hand:  .venv/bin/python -m bench.fewshot_retrieval
For 200 eval lines (the spec's eval split, first 200) against pools of 100 and of 2,000 lines
drawn from outside the eval split: the share of lines whose 5 nearest pool lines vote for the
right topic (majority, ties to the nearest), and whose nearest line has it. Writes
bench/results/fewshot_retrieval.json.
"""

from __future__ import annotations

import random
import time
from collections import Counter

from bench import save_result
from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.data.dataset import make_splits
from runner.data.fewshot import choose_shots, llm_embedder
from runner.providers.local.provider import LocalProvider


def vote(labels: list[str]) -> str:
    counts = Counter(labels)
    return max(labels, key=lambda label: (counts[label], -labels.index(label)))


def main() -> None:
    spec = load_spec(PROJECT_ROOT / "specs" / "tnews.yaml")
    splits = make_splits(spec)
    items = splits.eval[:200]
    others = splits.outside_eval()
    provider = LocalProvider("gemma-3-270m", batch_size=16)
    rows = []
    for pool_size in (100, 2000):
        pool = random.Random(0).sample(others, pool_size)
        for embedding, embed in (("tfidf", None), ("llm", llm_embedder(provider))):
            started = time.perf_counter()
            shots = choose_shots({"k": 5, "strategy": "similar", "balance": False, "seed": 0}, pool, items, embed)
            seconds = time.perf_counter() - started
            knn = sum(vote([s.gold for s in shots[i.id]]) == i.gold for i in items) / len(items)
            top1 = sum(shots[i.id][0].gold == i.gold for i in items) / len(items)
            rows.append(
                {"pool": pool_size, "embedding": embedding, "knn5": knn, "top1": top1, "seconds": round(seconds, 1)}
            )
            print(rows[-1], flush=True)
    save_result("fewshot_retrieval", rows)


if __name__ == "__main__":
    main()
