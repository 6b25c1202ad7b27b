"""Every documented default is the effective one: the schema's `default` keywords and the defaults
docs/providers.md and docs/tasks.md state, against what a loaded spec actually holds."""

from __future__ import annotations

import json
import re

import pytest

from runner.config.defaults import SCHEMA_PATH, documented_defaults
from runner.config.spec import load_spec
from runner.providers.local.trainer import local_defaults, plan
from tests.conftest import DELETE, ROOT, write_project

SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
REMOTE = {"provider": {"name": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}}
LOCAL_TUNED = {"fine_tune.enabled": True}


def _get(doc: dict, path: tuple[str, ...]):
    for key in path:
        doc = doc[key]
    return doc


@pytest.mark.parametrize(
    ("path", "default"), documented_defaults(SCHEMA), ids=lambda v: ".".join(v) if isinstance(v, tuple) else None
)
def test_schema_default_is_the_effective_value(tmp_path, path, default):
    overrides: dict = {".".join(path): DELETE}  # the fixture may set the key under test: leave it out
    if path[0] == "provider" and path[-1] in ("concurrency", "timeout_s", "max_retries"):
        overrides.update(REMOTE)
    if path[:2] == ("fine_tune", "local"):
        overrides.update(LOCAL_TUNED)
    if path[0] == "splits" and path[-1] == "seed":  # the split definition's own default
        overrides = {"splits": {"train": {"take": "first", "n": 3}, "eval": {"take": "random", "n": 2}}}
        path = ("splits", "eval", "seed")
    spec = load_spec(write_project(tmp_path, overrides))
    if path[-1] in ("params",):  # filled further by the task-dependent max_tokens
        assert set(default) <= set(_get(spec.doc, path))
        return
    assert _holds(_get(spec.doc, path), default)


def _holds(value, default) -> bool:
    """value is the default, or (for mappings) holds every key of it with that value."""
    if isinstance(default, dict):
        return isinstance(value, dict) and all(k in value and _holds(value[k], v) for k, v in default.items())
    return value == default


def test_training_reads_its_defaults_from_the_schema():
    assert plan({}, 100).local == local_defaults()
    assert (
        local_defaults()["lora_rank"]
        == SCHEMA["properties"]["fine_tune"]["properties"]["local"]["properties"]["lora_rank"]["default"]
    )


def test_dependent_defaults(tmp_path):
    local = load_spec(write_project(tmp_path))
    assert (local.evaluation["method"], local.evaluation["calibration"]) == ("score", "auto")
    assert local.provider["model"] == "gemma-3-270m" and "concurrency" not in local.provider
    remote = load_spec(write_project(tmp_path, REMOTE))
    assert (remote.evaluation["method"], remote.evaluation["calibration"]) == ("generate", "none")
    assert remote.provider["params"]["max_tokens"] == 16


def test_task_dependent_defaults_win_over_generic_ones(tmp_path):
    """A spec that leaves them out gets the task's defaults (issue 24: extraction answers were cut at 16 tokens)."""
    from tests.test_extraction import write_ner_project

    extraction = load_spec(write_ner_project(tmp_path))
    assert extraction.provider["params"]["max_tokens"] == 128  # a JSON answer is longer than a label
    assert extraction.data["text_fields"] == ["text"]
    assert extraction.evaluation["method"] == "generate" and extraction.evaluation["constrained"] is False
    assert extraction.evaluation["calibration"] == "none"
    remote = load_spec(write_ner_project(tmp_path, REMOTE))
    assert remote.provider["params"]["max_tokens"] == 128
    classification = load_spec(write_project(tmp_path, {"provider.params": {"temperature": 0.5}}))
    assert classification.provider["params"] == {"temperature": 0.5, "max_tokens": 16}


DOC_CLAIMS = [  # (page under docs/, pattern on it, key path in a loaded remote or local spec)
    ("providers.md", r"`concurrency` \((\d+)\)", ("provider", "concurrency")),
    ("providers.md", r"`timeout_s` \((\d+)\)", ("provider", "timeout_s")),
    ("providers.md", r"`max_retries` \((\d+)\)", ("provider", "max_retries")),
    ("tasks.md", r"`k` \((\d+)\)", ("few_shot", "k")),
]


def _doc(page: str) -> str:
    return (ROOT / "docs" / page).read_text(encoding="utf-8")


@pytest.mark.parametrize(("page", "pattern", "path"), DOC_CLAIMS)
def test_documented_defaults_match(tmp_path, page, pattern, path):
    claimed = re.search(pattern, _doc(page))
    assert claimed, f"docs/{page} no longer states {pattern}"
    spec = load_spec(write_project(tmp_path, REMOTE))
    assert str(_get(spec.doc, path)) == claimed.group(1)


def test_documented_few_shot_defaults_match(tmp_path):
    tasks = _doc("tasks.md")
    spec = load_spec(write_project(tmp_path))
    strategy = re.search(r"`strategy` \(`(\w+)` \| `(\w+)`\)", tasks).group(1)
    embedding = re.search(r"`embedding` \(`(\w+)` \| `(\w+)`\)", tasks).group(1)
    assert (spec.doc["few_shot"]["strategy"], spec.doc["few_shot"]["embedding"]) == (strategy, embedding)
