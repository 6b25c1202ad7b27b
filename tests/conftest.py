"""Shared fixtures: a tiny classification project written into tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

# Tests never touch the network: the model comes from a PyPI package, tiktoken files from runner/resources/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent

ROWS = [
    {"sentence": "苹果发布新款手机芯片", "label_desc": "news_tech"},
    {"sentence": "央行下调存款准备金率", "label_desc": "news_finance"},
    {"sentence": "国足两球小胜对手", "label_desc": "news_sports"},
    {"sentence": "新能源汽车销量创新高", "label_desc": "news_tech"},
    {"sentence": "股市今日大涨", "label_desc": "news_finance"},
    {"sentence": "篮球联赛总决赛开打", "label_desc": "news_sports"},
    {"sentence": "人工智能改变医疗", "label_desc": "news_tech"},
    {"sentence": "银行理财收益下降", "label_desc": "news_finance"},
    {"sentence": "马拉松比赛周末举行", "label_desc": "news_sports"},
    {"sentence": "某股票停牌", "label_desc": "news_stock"},
]


def write_project(root: Path, spec_overrides: dict | None = None, rows: list[dict] | None = None) -> Path:
    """A dataset, a template and a spec under root; returns the spec path."""
    (root / "data.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in (rows or ROWS)), encoding="utf-8"
    )
    (root / "prompt.jinja").write_text("分类：{{ labels | join('、') }}\n文本：{{ text }}\n类别：", encoding="utf-8")
    spec = {
        "name": "tiny",
        "task": "classification",
        "data": {
            "path": "data.jsonl",
            "text_fields": ["sentence"],
            "label_field": "label_desc",
            "exclude_labels": ["news_stock"],
        },
        "labels": {"news_tech": "科技", "news_finance": "金融", "news_sports": "体育"},
        "splits": {"train": {"take": "first", "n": 3}, "eval": {"take": "rest"}},
        "prompt": {"template": "prompt.jinja"},
        "checks": {"model": "gpt-4o-mini"},
    }
    if not any(row.get("label_desc") == "news_stock" for row in rows or ROWS):
        del spec["data"]["exclude_labels"]  # excluding a label no row has is a spec error
    set_keys(spec, spec_overrides)
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


DELETE = object()


def set_keys(spec: dict, overrides: dict | None) -> None:
    """Set dotted keys (`provider.params`) in a spec dict, making parents as needed; DELETE removes one."""
    for key, value in (overrides or {}).items():
        target = spec
        *parents, last = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = value


def make_tiny_gemma(folder: Path, **config) -> Path:
    """A 2-layer, 32-wide random gemma with the embedded model's real tokenizer: fast to train and load."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from runner.providers.local.provider import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("gemma-3-270m")[0]))
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    settings = {**shape, "num_key_value_heads": 1, "head_dim": 16, **config}
    torch.manual_seed(0)
    Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=len(tokenizer), **settings)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path)


CANARY = "sk-canary-5f1d0c9e7b2a"  # the API key every loopback test uses; tests scan outputs for it


@pytest.fixture
def api(monkeypatch, tmp_path):
    """tests/fake_api.py on 127.0.0.1 with the canary key; cache and registry inside tmp_path, fast backoff."""
    from tests.fake_api import FakeAPI

    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("ZHIPUAI_API_KEY", CANARY)
    monkeypatch.setenv("SPECRUN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPECRUN_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr("runner.providers.api.retry.BACKOFF_BASE_S", 0.01)
    server = FakeAPI(api_key=CANARY, slow_seconds=1.5).start()
    yield server
    server.stop()
