"""OpenAI and ZhipuAI providers through their real SDKs, against tests/fake_api.py on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.cli import main
from runner.providers.api.retry import RateLimiter, is_retryable, retry_after
from tests.conftest import CANARY, ROOT, write_project
from tests.fake_api import FakeAPI

TEXTS = {
    "news_tech": ["苹果发布新款手机芯片", "新能源汽车销量创新高", "人工智能改变医疗", "智能手表热卖"],
    "news_finance": ["央行下调存款准备金率", "股市今日大涨", "银行理财收益下降", "基金股票齐涨"],
    "news_sports": ["国足两球小胜对手", "篮球联赛总决赛开打", "马拉松比赛周末举行", "网球公开赛开幕"],
}


def rows(n_per_label: int) -> list[dict]:
    return [
        {"sentence": f"{TEXTS[label][i % 4]}（{i}）", "label_desc": label}
        for i in range(n_per_label)
        for label in TEXTS
    ]


def remote_project(root: Path, api: FakeAPI, provider: str = "openai", n_per_label: int = 4, **extra) -> Path:
    url = api.zhipuai_url if provider == "zhipuai" else api.openai_url
    overrides = {
        "provider": {"name": provider, "model": "gpt-4o-mini", "base_url": url, "timeout_s": 1, "concurrency": 4},
        "evaluation.method": "generate",
        "evaluation.calibration": "none",
        "evaluation.baseline": False,
        "splits": {"train": {"take": "first", "n": 3}, "eval": {"take": "rest"}},
        **extra,
    }
    return write_project(root, overrides, rows=rows(n_per_label))


def folders(out: Path) -> list[Path]:
    return sorted((out / "tiny").iterdir())


def read(folder: Path, name: str):
    return json.loads((folder / name).read_text(encoding="utf-8"))


def test_openai_evaluation_end_to_end(api, tmp_path):
    spec = remote_project(tmp_path, api)
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    (folder,) = folders(tmp_path / "runs")
    metrics = read(folder, "metrics.json")
    assert metrics["zero_shot"]["accuracy"] == 1.0 and metrics["zero_shot"]["invalid"] == 0
    assert len(api.chat_requests) == 9
    assert api.chat_requests[0]["model"] == "gpt-4o-mini" and api.chat_requests[0]["temperature"] == 0
    usage = read(folder, "manifest.json")["usage"]["zero_shot"]
    assert usage["requests"] == 9 and usage["from_cache"] == 0 and usage["prompt_tokens"] > 0
    assert usage["estimated_usd"] is not None
    assert "## Usage and cost" in (folder / "report.md").read_text(encoding="utf-8")


def test_rerun_is_served_from_cache(api, tmp_path):
    spec = remote_project(tmp_path, api)
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert len(api.chat_requests) == 9  # the second run made no API call
    assert read(folders(out)[1], "manifest.json")["usage"]["zero_shot"]["from_cache"] == 9
    assert main(["run", str(spec), "--out", str(out), "--no-cache"]) == 0
    assert len(api.chat_requests) == 18


def test_faults_do_not_change_the_results(api, tmp_path):
    spec = remote_project(tmp_path, api, n_per_label=30)
    clean_out, faulty_out = tmp_path / "clean", tmp_path / "faulty"
    assert main(["run", str(spec), "--out", str(clean_out), "--no-cache"]) == 0
    api.fault_rate = 0.2
    assert main(["run", str(spec), "--out", str(faulty_out), "--no-cache"]) == 0
    assert len(api.faults_injected) >= 10 and len(set(api.faults_injected)) >= 4
    assert read(folders(clean_out)[0], "metrics.json") == read(folders(faulty_out)[0], "metrics.json")


def test_zhipuai_evaluation_through_its_sdk(api, tmp_path):
    spec = remote_project(tmp_path, api, provider="zhipuai", **{"provider.model": "glm-4-flash"})
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    assert read(folders(tmp_path / "runs")[0], "metrics.json")["zero_shot"]["accuracy"] == 1.0
    assert api.chat_requests[0]["do_sample"] is False and "temperature" not in api.chat_requests[0]
    assert set(api.authorization) == {f"Bearer {CANARY}"}


def test_missing_key_is_an_input_error(api, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY")
    assert main(["run", str(remote_project(tmp_path, api)), "--out", str(tmp_path / "runs")]) == 2
    assert "environment variable OPENAI_API_KEY is not set" in capsys.readouterr().err
    assert api.requests == []


def test_wrong_key_fails_fast_without_retrying(api, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    spec = remote_project(tmp_path, api, **{"provider.concurrency": 1})
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 3
    assert "HTTP 401" in capsys.readouterr().err
    assert len(api.requests) == 1  # not retried, and nothing more asked after it


def fine_tune_project(root: Path, api: FakeAPI, provider: str = "openai", **extra) -> Path:
    return remote_project(
        root,
        api,
        provider,
        **{
            "fine_tune": {
                "enabled": True,
                "suffix": "tiny",
                "poll_interval_s": 0.01,
                "hyperparameters": {"n_epochs": 2},
            },
            "evaluation.modes": ["zero_shot", "fine_tuned"],
            **extra,
        },
    )


def test_fine_tuning_flow_compares_base_and_tuned(api, tmp_path):
    spec = fine_tune_project(tmp_path, api)
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    (folder,) = folders(tmp_path / "runs")
    (job,) = api.jobs.values()
    assert job["hyperparameters"] == {"n_epochs": 2} and job["suffix"] == "tiny"
    assert api.files[job["training_file"]]["content"] == (folder / "train.jsonl").read_bytes()
    manifest = read(folder, "manifest.json")
    assert manifest["fine_tune"]["job_id"] == job["id"]
    assert manifest["fine_tune"]["fine_tuned_model"] == job["fine_tuned_model"]
    metrics = read(folder, "metrics.json")
    assert set(metrics) == {"zero_shot", "fine_tuned"}
    assert {r["model"] for r in api.chat_requests} == {"gpt-4o-mini", job["fine_tuned_model"]}
    events = [json.loads(line)["message"] for line in (folder / "finetune_events.jsonl").read_text().splitlines()]
    assert events[0] == "Validating training file" and events[-1] == "The job has successfully completed"
    state = read(folder, "finetune.json")
    assert [c["step"] for c in state["checkpoints"]] == [1, 2, 3]
    assert "## Fine-tuning" in (folder / "report.md").read_text(encoding="utf-8")


def test_zhipuai_fine_tuning_has_no_checkpoints(api, tmp_path):
    spec = fine_tune_project(tmp_path, api, "zhipuai")
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    state = read(folders(tmp_path / "runs")[0], "finetune.json")
    assert state["status"] == "succeeded" and state["checkpoints"] == []


@pytest.mark.parametrize(("key", "value"), [("fine_tune.seed", 1), ("fine_tune.hyperparameters.batch_size", 4)])
def test_settings_a_provider_does_not_take_are_spec_errors(api, tmp_path, capsys, key, value):
    spec = fine_tune_project(tmp_path, api, "zhipuai")
    assert main(["run", str(spec), "--set", f"{key}={value}", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"zhipuai fine-tuning does not take {key.rsplit('.', 1)[1]}" in err and key in err
    assert api.requests == []


def test_refused_fine_tuning_points_to_the_local_provider(api, tmp_path, capsys):
    api.refuse_fine_tuning = "Fine-tuning is not available for this organization"
    assert main(["run", str(fine_tune_project(tmp_path, api)), "--out", str(tmp_path / "runs")]) == 3
    err = capsys.readouterr().err
    assert "not available for this organization" in err and "2027-01-06" in err and "provider.name: local" in err


def subprocess_run(spec: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(spec), "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_no_duplicate_job_after_a_crash_between_create_and_record(api, tmp_path):
    spec = fine_tune_project(tmp_path, api)
    out = tmp_path / "runs"
    api.hold_job_create = 30  # the job exists, but its id never reaches the client
    process = subprocess_run(spec, out)
    wait_for(lambda: len(api.jobs) == 1)
    process.send_signal(signal.SIGKILL)
    output = process.communicate()[0].decode()
    (folder,) = folders(out)
    assert "job_id" not in read(folder, "finetune.json")
    api.hold_job_create = 0
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert len(api.jobs) == 1
    assert folders(out) == [folder]
    assert read(folder, "manifest.json")["fine_tune"]["job_id"] == next(iter(api.jobs))
    assert CANARY not in output


def test_killed_evaluation_resumes_with_only_the_missing_requests(api, tmp_path):
    spec = remote_project(tmp_path, api, n_per_label=20, **{"provider.concurrency": 2})
    out = tmp_path / "runs"
    api.delay = 0.03
    process = subprocess_run(spec, out)
    wait_for(lambda: len(api.chat_requests) >= 20)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    before = len(api.chat_requests)
    assert before < 57
    api.delay = 0
    assert main(["run", str(spec), "--out", str(out)]) == 0
    asked = [request["messages"][-1]["content"] for request in api.chat_requests]
    assert len(set(asked)) == 57
    assert len(asked) <= 57 + 2  # at most the requests in flight at the kill were asked twice
    (folder,) = folders(out)
    assert read(folder, "metrics.json")["zero_shot"]["n"] == 57


def test_the_api_key_is_never_written(api, tmp_path, capfd):
    spec = fine_tune_project(tmp_path, api)
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    assert main(["jobs", "list", "--base-url", api.openai_url]) == 0
    captured = capfd.readouterr()
    assert CANARY not in captured.out + captured.err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "responses.sqlite" for p in written)
    for path in written:
        assert CANARY.encode() not in path.read_bytes(), path


def test_jobs_commands(api, tmp_path, capsys):
    assert main(["run", str(fine_tune_project(tmp_path, api)), "--out", str(tmp_path / "runs")]) == 0
    job_id = next(iter(api.jobs))
    model = api.jobs[job_id]["fine_tuned_model"]
    base = ["--base-url", api.openai_url]
    capsys.readouterr()
    assert main(["jobs", "list", *base]) == 0
    assert job_id in capsys.readouterr().err
    assert main(["jobs", "events", job_id, *base]) == 0
    assert "successfully completed" in capsys.readouterr().err
    assert main(["jobs", "checkpoints", job_id, *base]) == 0
    assert "ckpt-step-3" in capsys.readouterr().err
    assert main(["jobs", "show", job_id, *base]) == 0
    assert "status: succeeded" in capsys.readouterr().err
    assert main(["jobs", "delete-model", model, *base]) == 0
    assert ("DELETE", f"/models/{model}") in api.requests
    assert main(["jobs", "show", *base]) == 2


def test_cancel_a_running_job(api, tmp_path, capsys):
    api.job_steps = 100
    job = api.create_job({"model": "gpt-4o-mini", "training_file": "file-x"}, zhipu=False)
    assert main(["jobs", "cancel", job["id"], "--base-url", api.openai_url]) == 0
    assert api.jobs[job["id"]]["status"] == "cancelled"


def test_cache_command(api, tmp_path, capsys):
    assert main(["run", str(remote_project(tmp_path, api)), "--out", str(tmp_path / "runs")]) == 0
    assert main(["cache"]) == 0
    assert "9 responses" in capsys.readouterr().err
    assert main(["cache", "clear"]) == 0
    assert "0 responses" in capsys.readouterr().err


class FakeStatusError(Exception):
    def __init__(self, status_code, headers=None):
        self.status_code = status_code
        self.response = type("Response", (), {"headers": headers or {}})()


def test_retry_classification_and_retry_after():
    assert all(is_retryable(FakeStatusError(code)) for code in (408, 409, 429, 500, 502, 503))
    assert not any(is_retryable(FakeStatusError(code)) for code in (400, 401, 403, 404, 422))
    assert retry_after(FakeStatusError(429, {"retry-after": "2"})) == 2.0
    assert retry_after(FakeStatusError(429, {"retry-after-ms": "150"})) == 0.15
    assert retry_after(FakeStatusError(503)) is None


def test_rate_limiter_spaces_requests():
    limiter = RateLimiter(requests_per_minute=600)
    assert limiter.interval == pytest.approx(0.1)
    limiter.wait()
    first = limiter._next
    limiter.wait()
    assert limiter._next == pytest.approx(first + 0.1)
