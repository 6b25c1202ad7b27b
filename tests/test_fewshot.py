import json

import numpy as np
import pytest

from runner.config.spec import load_spec
from runner.core.errors import InvalidInput
from runner.data.dataset import spec_examples
from runner.data.fewshot import EmbeddingCache, choose_shots, llm_embedder
from runner.data.prompts import PromptBuilder
from runner.tasks import Example, make_task
from tests.conftest import ROOT, write_project


def ex(i: int, text: str, label: str) -> Example:
    return Example(id=f"L{i}", text=text, gold=label, record={})


POOL = [
    ex(1, "苹果发布新款手机芯片", "tech"),
    ex(2, "央行下调存款准备金率", "finance"),
    ex(3, "国足两球小胜对手", "sports"),
    ex(4, "华为手机芯片突破", "tech"),
    ex(5, "股市今日大涨", "finance"),
    ex(6, "篮球联赛总决赛", "sports"),
    ex(7, "新款笔记本电脑发布", "tech"),
]
ITEMS = [ex(20, "小米手机芯片量产", "tech"), ex(21, "篮球总决赛开打", "sports")]


def config(**overrides):
    return {"k": 2, "strategy": "similar", "embedding": "tfidf", "balance": False, "seed": 0, **overrides}


def test_similar_shots_are_the_nearest_texts():
    shots = choose_shots(config(), POOL, ITEMS, None)
    assert [e.id for e in shots["L20"]] == ["L4", "L1"]
    assert shots["L21"][0].id == "L6"


def test_random_shots_are_seeded_per_item():
    first = choose_shots(config(strategy="random", k=3), POOL, ITEMS, None)
    again = choose_shots(config(strategy="random", k=3), POOL, list(reversed(ITEMS)), None)
    assert first == again  # same item, same shots, whatever else is evaluated
    other_seed = choose_shots(config(strategy="random", k=3, seed=1), POOL, ITEMS, None)
    assert other_seed != first
    assert all(len(shots) == 3 for shots in first.values())


def test_balance_caps_examples_per_label():
    shots = choose_shots(config(k=3, balance=True), POOL, ITEMS, None, stratum=lambda e: e.gold)
    for chosen in shots.values():
        labels = [e.gold for e in chosen]
        assert len(labels) == 3 and len(set(labels)) == 3


def test_k_larger_than_pool_takes_the_pool():
    assert len(choose_shots(config(k=50), POOL, ITEMS, None)["L20"]) == len(POOL)


class CountingModel:
    model, identity = "fake", {"sha256": "fake-weights"}

    def __init__(self):
        self.embedded: list[str] = []

    def embed(self, texts):
        self.embedded.extend(texts)
        return np.array([[len(t), t.count("芯"), t.count("球")] for t in texts], dtype=np.float32)


def test_llm_embeddings_are_cached_by_model_and_text(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECRUN_CACHE", str(tmp_path))
    model = CountingModel()
    first, _ = llm_embedder(model)([e.text for e in POOL], [])
    assert len(model.embedded) == len(POOL)
    pool, new = llm_embedder(model)([e.text for e in POOL], ["新文本"])
    assert model.embedded[len(POOL) :] == ["新文本"]  # only the new text was computed
    assert first.shape == (7, 3) and np.allclose(np.linalg.norm(np.vstack([pool, new]), axis=1), 1)
    assert EmbeddingCache("other-model").get_many([POOL[0].text]) == {}


def test_tnews_template_renders_examples_before_the_item():
    spec = load_spec(ROOT / "specs" / "tnews.yaml")
    example = spec_examples(spec)[0][0]
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    shown = Example(id="L0", text="华为手机芯片突破", gold="news_tech", record={})
    content = builder.messages(example, [shown])[0]["content"]
    assert content.endswith(f"给定文本：\n华为手机芯片突破\n类别：科技\n\n给定文本：\n{example.text}\n类别：")


def test_few_shot_mode_needs_a_template_with_examples(tmp_path):
    with pytest.raises(InvalidInput, match="mode few_shot needs a template that shows `examples`"):
        load_spec(write_project(tmp_path, {"evaluation.modes": ["few_shot"]}))


def test_few_shot_mode_in_the_pipeline(tmp_path, monkeypatch):
    from runner.cli import main
    from tests.test_pipeline import KeywordProvider

    seen = []

    class Recording(KeywordProvider):
        def score(self, conversations, answers, progress=None):
            seen.extend(c[-1]["content"] for c in conversations)
            return super().score(conversations, answers, progress)

    monkeypatch.setattr("runner.providers.registry.open_provider", lambda config, cache=None: Recording())
    spec = write_project(
        tmp_path, {"evaluation.modes": ["zero_shot", "few_shot"], "few_shot": {"k": 2, "embedding": "tfidf"}}
    )
    (tmp_path / "prompt.jinja").write_text(
        "{% for e in examples %}例：{{ e.text }}→{{ e.label }}\n{% endfor %}文本：{{ text }}\n类别：", encoding="utf-8"
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    (folder,) = list((tmp_path / "runs" / "tiny").iterdir())
    shots = json.loads((folder / "few_shot.json").read_text())
    assert set(shots) == {f"L{i}" for i in range(4, 10)} and all(len(v) == 2 for v in shots.values())
    assert {"L1", "L2", "L3"} >= {i for v in shots.values() for i in v}  # shots come from the train split
    assert sum("例：" in prompt for prompt in seen) == 6  # the few-shot prompts, not the zero-shot ones
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"zero_shot", "few_shot", "few_shot_uncalibrated", "baseline"} <= set(metrics)


def test_an_items_llm_vector_depends_on_the_pool_and_itself_not_on_other_items(tmp_path, monkeypatch):
    """Centred on the pool's mean alone, as TF-IDF is fitted on the pool: a run's eval lines never
    move each other's vectors, so an item's shots do not change with what else is evaluated."""
    monkeypatch.setenv("SPECRUN_CACHE", str(tmp_path))
    embed = llm_embedder(CountingModel())
    pool = [e.text for e in POOL]
    _, alone = embed(pool, ["芯片芯片"])
    _, among = embed(pool, ["芯片芯片", "球球球球球球球球球球球球球球球球球球球球球"])
    assert np.allclose(alone[0], among[0])
