"""The pipeline and CLI end to end, with a small stand-in for the model where the model is not the point."""

import json
import re
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest

from runner.cli import main
from runner.providers import Completion, Provider
from tests.conftest import ROOT, write_project
from tests.fake_api import TOPICS as KEYWORDS


class KeywordProvider(Provider):
    """Scores a label by keyword hits; records what it was asked, and can be told to crash."""

    name, model = "local", "keyword-test"
    calls: ClassVar[list[str]] = []
    crash_after: int | None = None

    def describe(self):
        return {"model": self.model}

    def _check_crash(self, n):
        KeywordProvider.calls.extend(["x"] * n)
        if self.crash_after is not None and len(self.calls) > self.crash_after:
            raise KeyboardInterrupt

    def score(self, conversations, answers, progress=None):
        self._check_crash(len(conversations))
        text = [c[-1]["content"].rsplit("文本：", 1)[1] for c in conversations]
        return np.array([[sum(ch in t for ch in KEYWORDS[a]) for a in answers] for t in text], dtype=float)

    def chat(self, conversations, params, progress=None, guides=None, on_answer=None):
        scores = self.score(conversations, list(KEYWORDS))
        return [Completion(f"这条新闻属于{list(KEYWORDS)[int(row.argmax())]}类别") for row in scores]


@pytest.fixture
def fake_model(monkeypatch):
    KeywordProvider.calls, KeywordProvider.crash_after = [], None
    monkeypatch.setattr("runner.providers.registry.open_provider", lambda config, cache=None: KeywordProvider())
    return KeywordProvider


def run_folder(out):
    (folder,) = list((out / "tiny").iterdir())
    return folder


def test_run_writes_the_whole_run_folder(tmp_path, fake_model):
    spec = write_project(tmp_path, {"evaluation.gates": ["accuracy >= 0.5"]})
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    folder = run_folder(tmp_path / "runs")
    names = {p.name for p in folder.iterdir()}
    assert {"spec.yaml", "manifest.json", "train.jsonl", "checks.json", "predictions.jsonl", "metrics.json"} <= names
    assert "report.md" in names
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert manifest["data"] == {**manifest["data"], "rows": 10, "excluded": 1, "train": 3, "eval": 6}
    assert manifest["models"] == {"gemma-3-270m": {"model": "keyword-test"}}
    assert manifest["environment"]["packages"]["torch"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"zero_shot", "zero_shot_uncalibrated", "baseline", "baseline_all_data"}
    assert metrics["zero_shot_uncalibrated"]["accuracy"] == 1.0
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and set(predictions[0]) >= {"id", "gold", "zero_shot", "baseline", "zero_shot_scores"}
    train = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert len(train) == 3
    assert train[0] == {
        "messages": [
            {"role": "user", "content": "分类：科技、金融、体育\n文本：苹果发布新款手机芯片\n类别："},
            {"role": "assistant", "content": "科技"},
        ]
    }
    assert json.loads((folder / "checks.json").read_text())["n_valid"] == 3
    report = (folder / "report.md").read_text()
    assert "## Results (6 eval examples)" in report and "accuracy >= 0.5" in report
    assert (
        "The best LLM row, zero_shot (100.0% accuracy), beats the best TF-IDF+LR baseline, baseline (66.7%)" in report
    )


def test_failed_gate_exits_1_and_says_so(tmp_path, fake_model):
    spec = write_project(tmp_path, {"evaluation.gates": ["zero_shot_uncalibrated.accuracy < baseline.accuracy"]})
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 1
    assert "**FAIL**" in (run_folder(tmp_path / "runs") / "report.md").read_text()


def test_report_says_plainly_when_llm_loses_to_baseline(tmp_path, fake_model, monkeypatch):
    spec = write_project(tmp_path, {"evaluation.calibration": "none"})
    monkeypatch.setattr(
        fake_model, "score", lambda self, conversations, answers, progress=None: np.zeros((len(conversations), 3))
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    report = (run_folder(tmp_path / "runs") / "report.md").read_text()
    assert "The LLM does not beat the classical baseline" in report


def test_generate_method_normalises_answers(tmp_path, fake_model):
    spec = write_project(tmp_path, {"evaluation.method": "generate", "evaluation.calibration": "none"})
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    folder = run_folder(tmp_path / "runs")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["zero_shot"]["accuracy"] == 1.0 and metrics["zero_shot"]["invalid"] == 0
    first = json.loads((folder / "predictions.jsonl").read_text().splitlines()[0])
    assert first["zero_shot_answer"].startswith("这条新闻属于")


def test_interrupted_run_resumes_without_recomputing(tmp_path, fake_model, monkeypatch):
    monkeypatch.setattr("runner.pipeline.evaluate.CHUNK", 2)
    spec = write_project(tmp_path)
    out = tmp_path / "runs"
    fake_model.crash_after = 4  # dies while scoring the third chunk of two
    assert main(["run", str(spec), "--out", str(out)]) == 130
    folder = run_folder(out)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert len((folder / "zero_shot.score.jsonl").read_text().splitlines()) == 4
    fake_model.calls, fake_model.crash_after = [], None
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert run_folder(out) == folder  # same folder, resumed
    assert len(fake_model.calls) == 2  # only the two missing examples were scored
    assert json.loads((folder / "manifest.json").read_text())["status"] == "succeeded"
    # A finished run is not resumed: the next run is a new folder, and a changed spec never reuses one.
    assert main(["run", str(spec), "--out", str(out), "--limit", "3"]) == 0
    assert len(list((out / "tiny").iterdir())) == 2


def test_dry_run_and_single_stages_load_no_model(tmp_path, monkeypatch):
    def refuse(config, cache=None):
        raise AssertionError("no model may be loaded")

    monkeypatch.setattr("runner.providers.registry.open_provider", refuse)
    spec = write_project(tmp_path)
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--dry-run", "--out", str(out)]) == 0
    assert main(["prep", str(spec), "--out", str(out)]) == 0
    assert main(["check", str(spec), "--out", str(out)]) == 0
    assert main(["validate", str(spec)]) == 0
    folders = sorted((out / "tiny").iterdir())
    assert len(folders) == 3
    assert all((folder / "train.jsonl").is_file() for folder in folders)
    assert all(json.loads((f / "manifest.json").read_text())["status"] == "succeeded" for f in folders)
    assert not any((folder / "predictions.jsonl").exists() for folder in folders)


def test_bad_data_fails_before_any_model_or_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        "runner.providers.registry.open_provider", lambda config, cache=None: pytest.fail("model loaded")
    )
    rows = [{"sentence": "a", "label_desc": "news_tech"}, {"sentence": "b", "label_desc": "news_weather"}]
    spec = write_project(tmp_path, rows=rows)
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()
    err = capsys.readouterr().err
    assert "data.jsonl:2: label 'news_weather'" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    spec = write_project(tmp_path, {"provider.model": 3})
    result = subprocess.run(
        [sys.executable, "-m", "runner", "validate", str(spec)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "provider.model" in result.stderr and "3 is not of type 'string'" in result.stderr


def test_dry_run_prices_label_scoring_by_label(tmp_path, capsys):
    """Completions scoring sends prompt + label once per label: the estimate counts every one."""
    provider = {"name": "openai_compatible", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"}

    def prompt_tokens(method: str) -> int:
        spec = write_project(
            tmp_path, {"provider": provider, "evaluation.method": method, "evaluation.calibration": "none"}
        )
        assert main(["run", str(spec), "--dry-run", "--out", str(tmp_path / "runs")]) == 0
        return int(re.search(r"would send (\d+) prompt tokens", capsys.readouterr().err).group(1))

    generated, scored = prompt_tokens("generate"), prompt_tokens("score")
    assert scored > 3 * generated  # three labels, each after its own copy of the prompt
