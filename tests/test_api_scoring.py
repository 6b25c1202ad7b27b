"""Label scoring through APIs (issue 11): completions echo + logprobs, chat top_logprobs, and ZhipuAI's refusal.

The real openai SDK talks to tests/fake_api.py on 127.0.0.1. Its default "model" (keyword_logprobs,
keyword_top_logprobs) knows the topic of each test headline, so a working scorer gets every label
right; the agreement test swaps in a real (tiny, random) gemma and compares with the local scorer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runner.cli import main
from runner.core.errors import RuntimeFailure
from runner.providers.api.client import ChatAPIProvider
from runner.providers.api.scoring import (
    CHAT,
    COMPLETIONS,
    FLOOR_MARGIN,
    first_token_keys,
    label_logprob,
    label_scores,
    prompt_text,
)
from runner.providers.registry import open_provider
from tests.conftest import make_tiny_gemma, write_project
from tests.fake_api import FAULTS, FakeAPI
from tests.test_remote import CANARY, rows

LABELS = ["科技", "金融", "体育"]


def scoring_project(
    root: Path, api: FakeAPI, name: str = "openai_compatible", labels: dict[str, str] | None = None, **provider
) -> Path:
    url = api.zhipuai_url if name == "zhipuai" else api.openai_url
    overrides = {
        "provider": {
            "name": name,
            "model": "gpt-4o-mini",
            "base_url": url,
            "timeout_s": 1,
            "concurrency": 4,
            **provider,
        },
        "evaluation.method": "score",
        "evaluation.baseline": False,
        "splits": {"train": {"take": "first", "n": 3}, "eval": {"take": "rest"}},
    }
    if labels:
        overrides["labels"] = labels
    return write_project(root, overrides, rows=rows(3))


def run(spec: Path, out: Path, *extra: str) -> int:
    return main(["run", str(spec), "--out", str(out), *extra])


def newest(out: Path) -> Path:
    return sorted((out / "tiny").iterdir())[-1]


def read(folder: Path, name: str):
    return json.loads((folder / name).read_text(encoding="utf-8"))


def provider(api: FakeAPI, cache=None, **config) -> ChatAPIProvider:
    base = {"name": "openai_compatible", "model": "m", "base_url": api.openai_url, "timeout_s": 1, "max_retries": 6}
    return open_provider({**base, **config}, cache)


def conversations(n: int) -> list[list[dict[str, str]]]:
    texts = [row["sentence"] for row in rows(4)][3 : 3 + n]  # (国足…对手 is left out: 手 is also a tech keyword)
    return [[{"role": "user", "content": f"分类：科技、金融、体育\n文本：{text}\n类别："}] for text in texts]


# --- finding the label's tokens ----------------------------------------------------------------------


def test_label_tokens_are_found_by_text_offset():
    # prompt "ab:" (3 chars), label "XY", then one generated token "!" that must not count
    tokens, offsets, logprobs = ["a", "b:", "XY", "!"], [0, 1, 3, 5], [None, -1.0, -0.5, -9.0]
    assert label_logprob(tokens, offsets, logprobs, 3, 2) == (-0.5, 1)
    # a character split over two byte tokens: the first piece has zero width (llama-cpp-python's offsets)
    tokens, offsets, logprobs = ["a", "b:", "", "X", "Y", "!"], [0, 1, 3, 3, 4, 5], [None, -1.0, -0.2, -0.3, -0.4, -9]
    assert label_logprob(tokens, offsets, logprobs, 3, 2) == (pytest.approx(-0.9), 3)
    # a tokenizer that glues the prompt's trailing space to the label: "Answer: " + "Yes" -> "Answer:", " Yes"
    tokens, offsets, logprobs = ["Answer", ":", " Yes", "!"], [0, 6, 7, 11], [None, -1.0, -0.7, -9.0]
    assert label_logprob(tokens, offsets, logprobs, 8, 3) == (-0.7, 1)


def test_offsets_that_never_reach_the_label_are_an_error():
    with pytest.raises(RuntimeFailure, match="place no token on the label"):
        label_logprob(["a", "b"], [0, 1], [None, -1.0], 2, 2)


# --- chat: first-token distribution --------------------------------------------------------------------


def test_chat_scores_by_exact_first_token_with_a_floor_for_unlisted_labels():
    how, keys = first_token_keys(["科技", "金融", "房产"], "openai", "gpt-4o-mini")
    assert how == "first token (o200k_base)" and keys[2] == "房".encode()  # 房产 is two o200k tokens
    top = [["金融", -0.1, list("金融".encode())], ["房", -2.0, list("房".encode())], ["科", -3.0, None]]
    # 科 is not 科技's first token (科技 is one token), so 科技 gets the floor
    assert label_scores(top, ["科技", "金融", "房产"], keys, exact=True) == [-3.0 - FLOOR_MARGIN, -0.1, -2.0]


def test_chat_on_an_unknown_tokenizer_sums_the_tokens_consistent_with_each_label():
    how, keys = first_token_keys(["科技", "金融"], "openai_compatible", "any")
    assert how.startswith("first character") and keys == ["科", "金"]
    top = [[" 科", -1.0, None], ["科技", -1.0, None], ["科学", -0.5, None], ["▁金融业", -3.0, None]]
    scores = label_scores(top, ["科技", "金融"], keys, exact=False)
    assert scores[0] == pytest.approx(-1.0 + np.log(2))  # " 科" and "科技", not "科学"
    assert scores[1] == -3.0  # "金融业" starts with the label


# --- validation: exit 2 before anything is sent ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "provider_extra", "labels", "message"),
    [
        ("zhipuai", {}, None, "ZhipuAI's chat API returns none"),
        ("openai", {"scoring": "completions"}, None, "openai scores labels only through chat logprobs"),
        ("openai", {}, {"news_tech": "房产", "news_finance": "房价", "news_sports": "体育"}, "share their first token"),
        (
            "openai_compatible",
            {"scoring": "chat"},
            {"news_tech": "体育", "news_finance": "体操", "news_sports": "金融"},
            "share their first character",
        ),
        ("openai_compatible", {"scoring": "chat", "prompts_per_request": 4}, None, "prompts_per_request applies only"),
    ],
)
def test_what_cannot_be_scored_is_refused_at_validation(api, tmp_path, capsys, name, provider_extra, labels, message):
    spec = scoring_project(tmp_path, api, name, labels, **provider_extra)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert api.requests == []


def test_scoring_keys_without_method_score_are_a_spec_error(api, tmp_path, capsys):
    spec = write_project(
        tmp_path,
        {
            "provider": {"name": "openai", "model": "gpt-4o-mini", "scoring": "chat"},
            "evaluation.method": "generate",
            "evaluation.calibration": "none",
        },
    )
    assert main(["validate", str(spec)]) == 2
    assert "provider.scoring applies only to method: score" in capsys.readouterr().err


def test_openai_chat_labels_that_share_only_a_first_character_are_accepted(api, tmp_path):
    """体育 and 体操 share 体 but not their first o200k token: the exact check accepts what the character rule cannot."""
    spec = scoring_project(
        tmp_path, api, "openai", {"news_tech": "体操", "news_finance": "金融", "news_sports": "体育"}
    )
    assert main(["validate", str(spec)]) == 0


# --- completions end to end ----------------------------------------------------------------------------


def test_completions_scoring_end_to_end_with_calibration_cache_and_manifest(api, tmp_path):
    spec = scoring_project(tmp_path, api)
    assert run(spec, tmp_path / "runs") == 0
    folder = newest(tmp_path / "runs")
    metrics = read(folder, "metrics.json")
    assert metrics["zero_shot"]["accuracy"] == 1.0 and metrics["zero_shot_uncalibrated"]["accuracy"] == 1.0
    n_eval = len((folder / "zero_shot.score.jsonl").read_text(encoding="utf-8").splitlines())
    assert n_eval == 6 and len(api.completion_requests) == 6 * 3  # one request per (example, label)
    request = api.completion_requests[0]
    assert request["echo"] is True and request["max_tokens"] == 1 and request["logprobs"] == 1
    assert (
        request["temperature"] == 0 and request["prompt"][:-2].endswith("类别：") and request["prompt"][-2:] in LABELS
    )
    assert (read(folder, "manifest.json")["models"]["gpt-4o-mini"]["scoring"]) == COMPLETIONS
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    scores = predictions[0]["zero_shot_scores"]
    assert sorted(scores.values())[-1] == pytest.approx(-0.2)  # the topic: two characters at 0.1 nats each
    assert "zero_shot_uncalibrated" in (folder / "report.md").read_text(encoding="utf-8")
    assert CANARY not in "".join(p.read_text(encoding="utf-8", errors="replace") for p in folder.iterdir())
    asked = len(api.completion_requests)
    assert run(spec, tmp_path / "runs2") == 0  # a new run folder, same answers: all from the cache
    assert len(api.completion_requests) == asked


def test_prompt_lists_batch_several_labels_in_one_request(api, tmp_path):
    spec = scoring_project(tmp_path, api, prompts_per_request=5)
    assert run(spec, tmp_path / "runs") == 0
    assert read(newest(tmp_path / "runs"), "metrics.json")["zero_shot"]["accuracy"] == 1.0
    sizes = [len(r["prompt"]) if isinstance(r["prompt"], list) else 1 for r in api.completion_requests]
    assert sorted(sizes) == [3, 5, 5, 5]  # 6 lines × 3 labels in lists of 5 (they arrive in any order)
    assert read(newest(tmp_path / "runs"), "manifest.json")["models"]["gpt-4o-mini"]["prompts_per_request"] == 5


def test_a_server_that_takes_one_prompt_fails_with_advice(api, tmp_path, capsys):
    api.max_prompts_per_request = 1  # llama-cpp-python's server: 500 on a list
    spec = scoring_project(tmp_path, api, prompts_per_request=4, max_retries=1)
    assert run(spec, tmp_path / "runs") == 3
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "prompts_per_request: 1" in err and "Traceback" not in err


def test_a_server_without_echo_logprobs_fails_clearly(api, tmp_path, capsys):
    api.completion_logprobs = lambda text: None  # a server that ignores logprobs with echo
    spec = scoring_project(tmp_path, api)
    assert run(spec, tmp_path / "runs") == 3
    err = capsys.readouterr().err
    assert "no token log-probabilities" in err and "Traceback" not in err


def test_completions_scores_survive_faults_and_a_failed_stage_resumes_from_the_cache(api, tmp_path):
    clean = provider(api).score(conversations(9), LABELS)
    assert (clean.argmax(1) == np.array([0, 1, 2] * 3)).all()
    api.fault_rate, api.fault_kinds = 0.3, FAULTS
    noisy = provider(api, concurrency=8).score(conversations(9), LABELS)
    assert len(set(api.faults_injected)) >= 3  # several kinds of fault, all retried away
    np.testing.assert_allclose(noisy, clean, atol=1e-6)

    from runner.core.cache import ResponseCache

    api.fault_rate = 0.0
    real = api.completion_logprobs
    broken = conversations(9)[4][0]["content"] + "金融"
    api.completion_logprobs = lambda text: None if text == broken else real(text)
    cache = ResponseCache(tmp_path / "responses.sqlite")
    with pytest.raises(RuntimeFailure, match="no token log-probabilities"):
        provider(api, cache, concurrency=2).score(conversations(9), LABELS)
    api.completion_logprobs = real
    asked = len(api.completion_requests)
    again = provider(api, cache, concurrency=2).score(conversations(9), LABELS)
    np.testing.assert_allclose(again, clean, atol=1e-6)
    assert 1 <= len(api.completion_requests) - asked < 27  # only what the failed stage had not bought


# --- chat end to end -------------------------------------------------------------------------------------


def test_openai_chat_scoring_end_to_end(api, tmp_path):
    spec = scoring_project(tmp_path, api, "openai")
    assert run(spec, tmp_path / "runs") == 0
    folder = newest(tmp_path / "runs")
    assert read(folder, "metrics.json")["zero_shot"]["accuracy"] == 1.0
    request = api.chat_requests[0]
    assert request["logprobs"] is True and request["top_logprobs"] == 20 and request["max_tokens"] == 1
    model = read(folder, "manifest.json")["models"]["gpt-4o-mini"]
    assert model["scoring"] == CHAT and model["label_match"] == "first token (o200k_base)"
    assert len(api.chat_requests) == 6 and not api.completion_requests


def test_a_chat_model_without_logprobs_fails_clearly(api, tmp_path, capsys):
    api.chat_top_logprobs = lambda messages, model, n: []
    spec = scoring_project(tmp_path, api, "openai_compatible", scoring="chat")
    assert run(spec, tmp_path / "runs") == 3
    err = capsys.readouterr().err
    assert "returned no top_logprobs" in err and "scoring: completions" in err and "Traceback" not in err


def test_chat_scores_survive_faults(api):
    clean = provider(api, scoring="chat").score(conversations(9), LABELS)
    api.fault_rate, api.fault_kinds = 0.3, FAULTS
    noisy = provider(api, scoring="chat", concurrency=8).score(conversations(9), LABELS)
    assert api.faults_injected
    np.testing.assert_allclose(noisy, clean)
    assert (clean.argmax(1) == np.array([0, 1, 2] * 3)).all()


# --- the API path and the embedded scorer agree ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_local(tmp_path_factory):
    from runner.providers.local.provider import LocalProvider

    folder = make_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma-api"), initializer_range=0.5)
    return LocalProvider(str(folder), batch_size=4)


def gemma_server(local) -> object:
    """An echoing completions server backed by the local provider's own weights.

    Like llama-cpp-python's server it tokenizes prompt + label as one string (with BOS, which it
    does not echo), answers the first echoed token's log-probability with None, and reports
    text_offset as the length of the decoded tokens before each one. One unpadded forward pass per
    string, full LM head: an independent computation of what LocalProvider.score gets from its
    batched, left-padded, KV-cached pass that reads labels' first tokens off the shared prompt.
    """
    import torch

    tokenizer = local.tokenizer

    def compute(text: str) -> tuple[list[str], list[int], list[float | None]]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        with torch.inference_mode():
            logits = local.lm(input_ids=torch.tensor([ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens, offsets, values = [], [], []
        for position in range(1, len(ids)):
            tokens.append(tokenizer.decode(ids[position : position + 1]))
            offsets.append(len(tokenizer.decode(ids[1:position])))
            values.append(None if position == 1 else float(logprobs[position - 1, ids[position]]))
        return tokens, offsets, values

    return compute


@pytest.mark.model  # needs the embedded model's tokenizer (converted once, then cached)
def test_completions_scores_agree_with_the_local_scorer_on_the_same_model(api, tiny_local):
    """Measured: the two differ by at most 0.02 nats, against a 12–15 nat spread between labels."""
    api.completion_logprobs = gemma_server(tiny_local)
    answers = ["科技", "金融", "体育", "房产", "娱乐"]
    prompts = conversations(6)
    assert any(len(tiny_local.tokenizer.encode(a, add_special_tokens=False)) > 1 for a in answers), (
        "needs a multi-token label"
    )
    assert prompt_text(prompts[0]) == tiny_local.prompt_text(prompts[0])  # the same text is continued
    local = tiny_local.score(prompts, answers)
    remote = provider(api, prompts_per_request=5, timeout_s=120, concurrency=1).score(prompts, answers)
    np.testing.assert_allclose(remote, local, atol=0.2)  # bf16 with and without padding, as in test_local_model
    assert (remote.argmax(1) == local.argmax(1)).all()
    calibrated = lambda s: (s - s.mean(0)).argmax(1)  # noqa: E731
    assert (calibrated(remote) == calibrated(local)).all()
    assert np.ptp(local, axis=1).min() > 0.5  # the labels really differ, so agreement means something
