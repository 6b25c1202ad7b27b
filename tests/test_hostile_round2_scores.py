"""Issue 21, class 3: a hostile server's scores (NaN, ±Infinity, -1e309, bytes that are no bytes).

A non-finite or malformed score is a malformed answer: retried, then exit 3 naming the prompt;
never cached as good, so a rerun against a healed server asks again and scores right. Whatever
happens, every file in the run folder is standard JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from runner.core.cache import ResponseCache
from runner.core.jsonl import dumps
from tests.fake_api import BYTES_FAULTS, NUMBER_FAULTS
from tests.test_api_scoring import newest, read, run, scoring_project

CASES = [("completions", fault) for fault in NUMBER_FAULTS] + [
    ("chat", fault) for fault in (*NUMBER_FAULTS, *BYTES_FAULTS)
]


def _refuse(constant: str) -> None:
    raise ValueError(f"non-standard JSON constant {constant}")


def assert_standard_json(folder: Path) -> None:
    """Every .json/.jsonl file under folder parses with NaN/Infinity refused."""
    checked = 0
    for path in folder.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse)
            checked += 1
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").split("\n"):
                if line.strip():
                    json.loads(line, parse_constant=_refuse)
            checked += 1
    assert checked


def cached_responses(root: Path) -> list[str]:
    cache = ResponseCache(root / "cache" / "responses.sqlite") if (root / "cache").is_dir() else None
    if cache is None:
        return []
    cache.flush()
    return [response for (response,) in cache._db.execute("SELECT response FROM responses")]


@pytest.mark.parametrize(("scoring", "fault"), CASES)
def test_a_malformed_score_every_time_is_exit_3_naming_the_prompt_and_never_cached(
    api, tmp_path, capsys, scoring, fault
):
    api.score_fault = fault
    spec = scoring_project(tmp_path, api, scoring=scoring, max_retries=2)
    assert run(spec, tmp_path / "runs") == 3
    err = capsys.readouterr().err
    assert "malformed answer" in err and "prompt" in err and "Traceback" not in err
    folder = newest(tmp_path / "runs")
    assert not (folder / "metrics.json").exists() and read(folder, "manifest.json")["status"] == "failed"
    assert_standard_json(folder)
    for response in cached_responses(tmp_path):
        json.loads(response, parse_constant=_refuse)
    api.score_fault = None  # the server heals: nothing bad was cached, so the rerun asks again and scores right
    assert run(spec, tmp_path / "runs") == 0
    folder = newest(tmp_path / "runs")
    assert read(folder, "metrics.json")["zero_shot"]["accuracy"] == 1.0
    assert_standard_json(folder)


@pytest.mark.parametrize(("scoring", "fault"), [("completions", "nan"), ("chat", "-1e309"), ("chat", "bytes:999")])
def test_a_malformed_score_once_is_retried_and_the_run_scores_right(api, tmp_path, scoring, fault):
    api.score_fault, api.score_fault_times = fault, 1
    spec = scoring_project(tmp_path, api, scoring=scoring, concurrency=1)
    assert run(spec, tmp_path / "runs") == 0
    assert api.score_faults_sent == 1
    folder = newest(tmp_path / "runs")
    assert read(folder, "metrics.json")["zero_shot"]["accuracy"] == 1.0
    assert_standard_json(folder)


def test_openai_chat_scoring_with_exact_token_bytes_refuses_bad_bytes(api, tmp_path, capsys):
    api.score_fault = "bytes:str"
    spec = scoring_project(tmp_path, api, "openai", max_retries=1)
    assert run(spec, tmp_path / "runs") == 3
    assert "bytes" in capsys.readouterr().err


def test_scores_cached_by_an_older_specrun_as_nan_are_asked_again(api, tmp_path):
    """A cache written before this fix may hold NaN (json.dumps wrote it): such a hit is a miss."""
    spec = scoring_project(tmp_path, api, scoring="chat")
    assert run(spec, tmp_path / "runs") == 0
    asked = len(api.chat_requests)
    cache = ResponseCache(tmp_path / "cache" / "responses.sqlite")
    cache.flush()
    with cache._lock:
        cache._db.execute("UPDATE responses SET response = replace(response, '-0.05', 'NaN')")
        cache._db.commit()
    assert run(spec, tmp_path / "runs2") == 0
    assert len(api.chat_requests) > asked
    assert read(newest(tmp_path / "runs2"), "metrics.json")["zero_shot"]["accuracy"] == 1.0


def test_the_writers_helper_writes_no_nan_and_no_lone_surrogate():
    text = dumps({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": "x\ud800y"})
    value = json.loads(text, parse_constant=_refuse)
    assert value == {"a": None, "b": [None, None, 1.5], "c": "x\ud800y"}
    text.encode("utf-8")


def test_a_top_logprobs_token_holding_half_a_character_is_no_label_and_no_crash():
    from runner.providers.api.scoring import label_scores

    top = [["\ud800", -0.1, None], ["科", -1.0, None]]
    scores = label_scores(top, ["科技", "体育"], ["科".encode(), "体".encode()], True)
    assert scores[0] == -1.0 and scores[1] < -1.0
