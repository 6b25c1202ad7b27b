"""report.html, summary.json and junit.xml: schema-valid, parsed back, escaped, and seen in a real browser."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from runner.cli import main
from runner.core.errors import RuntimeFailure
from runner.core.runfolder import RunFolder
from runner.outputs import write_outputs
from runner.outputs.evidence import loss_curve
from runner.outputs.junit import failure_message
from runner.outputs.summary import SCHEMA_VERSION
from runner.providers import Completion, Provider
from runner.tasks import make_task
from runner.tasks.classification.metrics import classification_metrics
from runner.tasks.classification.report import calibration_of, classification_mistakes
from runner.tasks.extraction.metrics import entity_metrics
from tests.conftest import ROOT, write_project

SCHEMA = json.loads((ROOT / "schemas" / "summary.schema.json").read_text(encoding="utf-8"))
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'

LABELS = {
    "news_tech": "科技", "news_finance": "金融", "news_sports": "体育", "news_culture": "文化",
    "news_travel": "旅游", "news_edu": "教育", "news_game": "游戏", "news_house": "房产",
}  # fmt: skip


def _manifest(spec: dict, status: str = "succeeded", n_eval: int = 0) -> dict:
    """A manifest shaped as pipeline._manifest writes it, with what the stages add."""
    return {
        "name": spec["name"],
        "run_id": "20261130-120000",
        "status": status,
        "started": "2026-11-30T12:00:00+00:00",
        "finished": "2026-11-30T12:03:10+00:00",
        "wall_seconds": 190.4,
        "spec_path": "/specs/x.yaml",
        "spec_hash": "ab" * 32,
        "identity": {},
        "limit": None,
        "seeds": {},
        "data": {"path": "data.json", "files": {"data.json": "0" * 64}, "rows": 1000, "excluded": 3,
                 "train": 100, "validation": 0, "eval": n_eval, "baseline_all_data_train": 900},
        "spec": spec,
        "environment": {"git_commit": "abc1234", "packages": {}},
        "models": {},
        "stage_seconds": {"zero_shot": 61.2, "fine_tuned": 58.0, "baseline": 1.3},
    }  # fmt: skip


def _spec(task: str, **extra) -> dict:
    spec = {
        "name": "synthetic",
        "description": "A synthetic run for the output writers",
        "task": task,
        "data": {"path": "data.json", "text_fields": ["sentence"], "label_field": "label", "exclude_labels": []},
        "provider": {"name": "local", "model": "gemma-3-270m", "params": {}},
        "evaluation": {"modes": ["zero_shot", "fine_tuned"], "method": "score", "calibration": "mean",
                       "constrained": False, "baseline": True,
                       "gates": ["accuracy >= 0.5", "fine_tuned.accuracy > baseline.accuracy"]},
        "splits": {"train": {"take": "first", "n": 100}, "eval": {"take": "rest"}},
    }  # fmt: skip
    spec.update(extra)
    return spec


def with_ci(metrics: dict, names: tuple[str, ...]) -> dict:
    metrics["ci95"] = {m: [max(0.0, metrics[m] - 0.04), min(1.0, metrics[m] + 0.04)] for m in names}
    return metrics


def classification_run(folder: Path, texts: list[str] | None = None, labels: dict | None = None) -> tuple:
    """A finished classification run folder: label scores, predictions, metrics with ci95, gates, a fine-tune."""
    labels = labels or LABELS
    names = list(labels)
    rng = np.random.default_rng(0)
    n = 160
    gold = [names[i % len(names)] for i in range(n)]
    texts = texts or [f"第{i}条新闻标题" for i in range(n)]
    spec = _spec("classification", labels=labels)
    spec["provider"]["name"] = "openai_compatible"  # label scores bought from an API: usage has a price
    task = make_task(spec)
    run = RunFolder(folder)
    records, rows = (
        [],
        {"zero_shot": [], "zero_shot_uncalibrated": [], "fine_tuned": [], "baseline": [], "baseline_all_data": []},
    )
    for mode, skill in (("zero_shot", 1.2), ("fine_tuned", 2.5)):
        scores = rng.normal(size=(n, len(names))) + skill * np.eye(len(names))[[names.index(g) for g in gold]]
        scores[:, 0] += 0.8  # a prior calibration removes
        calibrated = scores - scores.mean(axis=0, keepdims=True)
        rows[mode] = [names[i] for i in calibrated.argmax(axis=1)]
        if mode == "zero_shot":
            rows["zero_shot_uncalibrated"] = [names[i] for i in scores.argmax(axis=1)]
        for i in range(n):
            if len(records) <= i:
                records.append({"id": str(i), "text": texts[i % len(texts)], "gold": gold[i]})
            records[i][f"{mode}_scores"] = dict(zip(names, scores[i].round(4).tolist(), strict=True))
    rows["baseline"] = [g if rng.random() < 0.45 else names[0] for g in gold]
    rows["baseline_all_data"] = [g if rng.random() < 0.6 else None for g in gold]
    for row, predicted in rows.items():
        for record, value in zip(records, predicted, strict=True):
            record[row] = value
    metrics = {row: with_ci(classification_metrics(gold, p, names), task.metrics) for row, p in rows.items()}
    run.write_jsonl("predictions.jsonl", records)
    run.write_json("metrics.json", metrics)
    events = [{"id": f"e{s}", "created_at": 0, "message": f"Step {s}", "data": {"step": s, "train_loss": 3.0 / (1 + s / 10)}}
              for s in range(10, 130, 10)]  # fmt: skip
    run.append_jsonl("finetune_events.jsonl", events)
    checkpoints = [{"id": f"c{s}", "step": s, "metrics": {"step": s, "train_loss": 3.2 / (1 + s / 10), "valid_loss": 2.0 / (1 + s / 20) + 0.6}}
                   for s in (40, 80, 120)]  # fmt: skip
    run.write_json(
        "finetune.json",
        {"job_id": "ftjob-1", "status": "succeeded", "trained_tokens": 51234, "checkpoints": checkpoints},
    )
    manifest = _manifest(spec, n_eval=n)
    manifest["fine_tune"] = {"job_id": "ftjob-1", "training_file": "file-1", "base_model": "gemma-3-270m",
                             "fine_tuned_model": "gemma-3-270m-synthetic-1"}  # fmt: skip
    manifest["usage"] = {
        "zero_shot": {
            "requests": n,
            "from_cache": 20,
            "prompt_tokens": 9000,
            "completion_tokens": 160,
            "estimated_usd": 0.0014,
        }
    }
    checks = {"n_valid": 100, "n_examples": 100, "encoding": "o200k_base", "model": "gpt-4o-mini", "n_epochs": 3,
              "billed_tokens_per_epoch": 4321, "billed_tokens": 12963, "n_over_limit": 0, "max_training_tokens": 65536,
              "cost": {"training_usd": 0.0389, "price_per_million": 3.0, "prices_as_of": "2026-06-01"}}  # fmt: skip
    gates = [
        {"gate": "accuracy >= 0.5", "left": metrics["zero_shot"]["accuracy"], "right": 0.5,
         "passed": metrics["zero_shot"]["accuracy"] >= 0.5},
        {"gate": "fine_tuned.accuracy > baseline.accuracy", "left": metrics["fine_tuned"]["accuracy"],
         "right": metrics["baseline"]["accuracy"], "passed": True, "difference": metrics["fine_tuned"]["accuracy"] - metrics["baseline"]["accuracy"],
         "difference_ci95": [0.05, 0.2]},
    ]  # fmt: skip
    written = write_outputs(run, manifest, metrics, gates, checks, task, say=pytest.fail)
    return run, written, metrics, gates


def extraction_run(folder: Path) -> tuple:
    entities = {"name": "人名", "address": "地址", "company": "公司"}
    spec = _spec(
        "extraction", entities=entities, data={"path": "ner.json", "text_fields": ["text"], "ignore_types": []}
    )
    spec["evaluation"].update(modes=["zero_shot"], method="generate", gates=["entity_f1 >= 0.9"])
    task = make_task(spec)
    texts = ["叶老桂在浙商银行工作", "张三去了北京", f"李四在上海{HOSTILE}", "今天天气很好"]
    gold = [[["name", 0, 3, "叶老桂"], ["company", 4, 8, "浙商银行"]], [["name", 0, 2, "张三"], ["address", 4, 6, "北京"]],
            [["name", 0, 2, "李四"], ["address", 3, 5, "上海"]], []]  # fmt: skip
    predicted = [
        {"spans": [["name", 0, 3], ["company", 4, 8]], "invalid": False, "hallucinated": [], "unknown_types": []},
        {"spans": [["name", 0, 2]], "invalid": False, "hallucinated": ["王五"], "unknown_types": [], "n_strings": 2},
        {"spans": [["address", 0, 2], ["address", 3, 5]], "invalid": False, "hallucinated": [], "unknown_types": []},
        {"spans": [], "invalid": True, "hallucinated": [], "unknown_types": []},
    ]
    baseline = [
        {"spans": [list(s[:3]) for s in g], "invalid": False, "hallucinated": [], "unknown_types": []} for g in gold
    ]
    metrics = {
        "zero_shot": entity_metrics(gold, predicted, list(entities), texts),
        "baseline": entity_metrics(gold, baseline, list(entities), texts),
    }
    run = RunFolder(folder)
    records = [
        {"id": str(i), "text": t, "gold": g, "zero_shot": p, "zero_shot_answer": HOSTILE, "baseline": b}
        for i, (t, g, p, b) in enumerate(zip(texts, gold, predicted, baseline, strict=True))
    ]
    run.write_jsonl("predictions.jsonl", records)
    gates = [{"gate": "entity_f1 >= 0.9", "left": metrics["zero_shot"]["entity_f1"], "right": 0.9, "passed": False}]
    written = write_outputs(run, _manifest(spec, n_eval=4), metrics, gates, None, task, say=pytest.fail)
    return run, written, metrics, gates


def summary_of(run: RunFolder) -> dict:
    summary = json.loads(run.file("summary.json").read_text(encoding="utf-8"))
    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(summary), key=str)
    assert not errors, "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    return summary


def test_the_schema_is_valid_and_documents_every_field():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["properties"]["schema_version"]["const"] == SCHEMA_VERSION

    def undocumented(node, path="$"):
        """Named fields (anything under a `properties`) without a description, at any depth."""
        if isinstance(node, dict):
            for name, field in (node.get("properties") or {}).items():
                if "description" not in field:
                    yield f"{path}.{name}"
            for key, child in node.items():
                yield from undocumented(child, f"{path}.{key}")

    assert list(undocumented(SCHEMA)) == []
    assert len(list(undocumented({"properties": {"x": {"type": "string"}}}))) == 1


def test_classification_summary_matches_its_schema_and_the_metrics(tmp_path):
    run, written, metrics, gates = classification_run(tmp_path / "run")
    assert written == ["summary.json", "junit.xml", "report.html"]
    summary = summary_of(run)
    assert summary["schema_version"] == SCHEMA_VERSION and summary["status"] == "succeeded"
    assert summary["task"] == "classification" and summary["primary_metric"] == "accuracy"
    assert [r["name"] for r in summary["rows"]] == list(metrics)
    zero_shot = summary["rows"][0]
    assert zero_shot["metrics"]["accuracy"] == metrics["zero_shot"]["accuracy"]
    assert zero_shot["ci95"]["accuracy"] == metrics["zero_shot"]["ci95"]["accuracy"]
    assert "per_class" not in zero_shot["metrics"] and "confusion" not in zero_shot["metrics"]
    assert summary["breakdown"]["kind"] == "per_class" and set(summary["breakdown"]["items"]) == set(LABELS)
    assert summary["verdict"] and "**" not in summary["verdict"]
    assert [g["op"] for g in summary["gates"]] == [">=", ">"]
    assert summary["gates"][1]["difference_ci95"] == [0.05, 0.2]
    assert summary["gates_passed"] == all(g["passed"] for g in gates)
    assert summary["cost"]["eval_usd"] == 0.0014 and summary["cost"]["training_usd_estimate"] == 0.0389
    assert summary["fine_tune"]["fine_tuned_model"] == "gemma-3-270m-synthetic-1"
    assert summary["fine_tune"]["final_valid_loss"] == pytest.approx(2.0 / 7 + 0.6)
    assert {"summary.json", "junit.xml", "report.html", "predictions.jsonl", "metrics.json"} <= set(summary["files"])


def test_extraction_summary_matches_its_schema(tmp_path):
    run, written, *_ = extraction_run(tmp_path / "run")
    assert written == ["summary.json", "junit.xml", "report.html"]
    summary = summary_of(run)
    assert summary["task"] == "extraction" and summary["primary_metric"] == "entity_f1"
    assert summary["breakdown"]["kind"] == "per_type" and list(summary["breakdown"]["items"]) == [
        "name",
        "address",
        "company",
    ]
    assert summary["rows"][0]["ci95"] == {}  # absent ci95 tolerated
    assert summary["gates_passed"] is False and summary["fine_tune"] is None and summary["usage"] == {}
    assert summary["cost"]["eval_usd"] == 0.0  # the local model: nothing bought


def test_a_failed_run_gets_a_summary_a_page_and_an_error_case(tmp_path):
    spec = _spec("classification", labels=LABELS)
    manifest = _manifest(spec, status="failed")
    manifest["error"] = f"provider answered 500 {HOSTILE}"
    run = RunFolder(tmp_path / "run")
    written = write_outputs(run, manifest, {}, [], None, make_task(spec), say=pytest.fail)
    assert written == ["summary.json", "junit.xml", "report.html"]
    summary = summary_of(run)
    assert summary["status"] == "failed" and summary["rows"] == [] and summary["gates_passed"] is None
    suite = ET.parse(run.file("junit.xml")).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("errors"), suite.get("skipped"), suite.get("failures")) == (
        "3",
        "1",
        "2",
        "0",
    )
    cases = suite.findall("testcase")
    assert cases[0].get("name") == "run" and HOSTILE in cases[0].find("error").get("message")
    assert [c.get("name") for c in cases[1:]] == spec["evaluation"]["gates"]
    assert all(c.find("skipped") is not None for c in cases[1:])
    page = run.file("report.html").read_text(encoding="utf-8")
    assert "Why the run stopped" in page and HOSTILE not in page and "&lt;script&gt;" in page


def test_junit_stays_well_formed_with_characters_xml_cannot_hold(tmp_path):
    """A gate the parser accepts may end in a vertical tab; an error may quote a server's control bytes."""
    spec = _spec("classification", labels=LABELS)
    spec["evaluation"]["gates"] = ["accuracy >= 0.4\x0b"]
    manifest = _manifest(spec, status="failed")
    manifest["error"] = "provider answered 500: \x00\x1b[31mboom\x07 \ufffe ]]>"
    run = RunFolder(tmp_path / "run")
    write_outputs(run, manifest, {}, [], None, make_task(spec), say=pytest.fail)
    cases = ET.parse(run.file("junit.xml")).getroot().find("testsuite").findall("testcase")
    assert cases[0].find("error").text == "provider answered 500: \\x00\\x1b[31mboom\\x07 \ufffd ]]>"
    assert cases[1].get("name") == "accuracy >= 0.4\\x0b"


def test_junit_has_one_case_per_gate_and_failures_carry_the_numbers(tmp_path):
    run, _, metrics, gates = extraction_run(tmp_path / "run")
    root = ET.parse(run.file("junit.xml")).getroot()
    suite = root.find("testsuite")
    assert suite.get("name") == "specrun.synthetic" and (suite.get("tests"), suite.get("failures")) == ("1", "1")
    (case,) = suite.findall("testcase")
    assert case.get("name") == "entity_f1 >= 0.9"
    message = case.find("failure").get("message")
    assert message == f"entity_f1 >= 0.9: {metrics['zero_shot']['entity_f1']:.4f} >= 0.9000 is false"
    properties = {p.get("name"): p.get("value") for p in case.find("properties")}
    assert properties == {"left": str(gates[0]["left"]), "op": ">=", "right": "0.9", "passed": "False"}


def test_junit_passing_gates_and_a_run_without_gates(tmp_path):
    run, _, _, gates = classification_run(tmp_path / "run")
    suite = ET.parse(run.file("junit.xml")).getroot().find("testsuite")
    assert int(suite.get("tests")) == len(gates) == len(suite.findall("testcase"))
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failed == [g["gate"] for g in gates if not g["passed"]]
    spec = _spec("classification", labels=LABELS)
    spec["evaluation"]["gates"] = []
    empty = RunFolder(tmp_path / "empty")
    write_outputs(empty, _manifest(spec), {}, [], None, make_task(spec), say=pytest.fail)
    suite = ET.parse(empty.file("junit.xml")).getroot().find("testsuite")
    assert [c.get("name") for c in suite.findall("testcase")] == ["run succeeded"] and suite.get("failures") == "0"


def test_hostile_labels_and_texts_are_escaped_everywhere(tmp_path):
    labels = {HOSTILE: "科技<u>", "news_finance": "金融&", "news_sports": '体育"'}
    run, *_ = classification_run(tmp_path / "run", texts=[f"标题{HOSTILE}", "正常标题"], labels=labels)
    page = run.file("report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "<img" not in page.lower() and "<u>" not in page
    assert "&lt;script&gt;alert(" in page
    ET.parse(run.file("junit.xml"))  # still well-formed XML
    summary_of(run)
    extraction, *_ = extraction_run(tmp_path / "ner")
    assert "<script" not in extraction.file("report.html").read_text(encoding="utf-8").lower()


def test_the_page_is_self_contained(tmp_path):
    import matplotlib

    settings = dict(matplotlib.rcParams)
    run, *_ = classification_run(tmp_path / "run")
    assert dict(matplotlib.rcParams) == settings  # figures are styled per call, the caller's settings stand
    page = run.file("report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert page.count("<svg") == 2  # the confusion matrix and the loss curve
    assert "Mistakes · zero_shot" in page and "Mistakes · fine_tuned" in page
    extraction, *_ = extraction_run(tmp_path / "ner")
    assert extraction.file("report.html").read_text(encoding="utf-8").count("<svg") == 1  # per-type bars


def assert_self_contained(page: str) -> None:
    assert not re.search(r"<script|<link|<iframe|<object|<embed|@import", page, re.I)
    outbound = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert outbound == []


def test_labels_with_dollar_signs_are_drawn_as_written_not_as_mathtext():
    """matplotlib reads $…$ as TeX: an unknown command lost the whole confusion heatmap, and $x$ drew an italic x."""
    from runner.outputs.plots import confusion_heatmap, score_bars

    labels = ["$\\undefined{x}$", "$a$b$", "50$"]
    svg = confusion_heatmap({"labels": labels, "matrix": [[2, 0, 1], [0, 3, 0], [1, 0, 2]]}, "zero_shot")
    assert all(label in svg for label in labels)
    bars = score_bars({label: {"precision": 0.5, "recall": 0.5, "f1": 0.5} for label in labels}, "zero_shot", "class")
    assert "$\\undefined{x}$" in bars


def test_cjk_labels_are_drawn_as_written_without_glyph_warnings():
    """They were drawn as #1, #2...; the SVG keeps text as text, so the browser draws them with its CJK font."""
    import warnings

    from runner.outputs.plots import confusion_heatmap, score_bars

    labels = ["科技", "国际金融市场", "news_world", "bad\x00label"]
    matrix = [[2, 0, 1, 0], [0, 3, 0, 0], [1, 0, 2, 0], [0, 0, 0, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font" would be raised here
        svg = confusion_heatmap({"labels": labels, "matrix": matrix}, "zero_shot")
        bars = score_bars(
            {label: {"precision": 0.5, "recall": 0.5, "f1": 0.5} for label in labels}, "zero_shot", "class"
        )
    for figure in (svg, bars):
        assert ">科技</text>" in figure and ">国际金融市场</text>" in figure and ">news_world</text>" in figure
        assert ">#4</text>" in figure and "bad" not in figure  # unprintable: its row number


def test_a_plotting_failure_degrades_to_a_note(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("no plotting today")

    monkeypatch.setattr("runner.outputs.plots.confusion_heatmap", broken)
    run, written, *_ = classification_run(tmp_path / "run")
    page = run.file("report.html").read_text(encoding="utf-8")
    assert "report.html" in written and "figure not drawn: RuntimeError: no plotting today" in page


def test_unwritable_outputs_are_said_and_never_raise(tmp_path, monkeypatch):
    spec = _spec("classification", labels=LABELS)
    said = []
    monkeypatch.setattr("runner.outputs.render_junit", lambda summary: 1 / 0)
    written = write_outputs(
        RunFolder(tmp_path / "run"), _manifest(spec), {}, [], None, make_task(spec), say=said.append
    )
    assert written == ["summary.json", "report.html"] and said == [
        "junit.xml not written: ZeroDivisionError: division by zero"
    ]


class _Keyword(Provider):
    name, model = "local", "keyword-test"
    fails: BaseException | None = None

    def describe(self):
        return {"model": self.model}

    def score(self, conversations, answers, progress=None):
        if _Keyword.fails is not None:
            raise _Keyword.fails
        return np.array([[float(a in c[-1]["content"][-12:]) for a in answers] for c in conversations])

    def chat(self, conversations, params, progress=None, guides=None, on_answer=None):
        return [Completion("科技") for _ in conversations]


@pytest.mark.parametrize(
    ("fails", "code", "status", "counted"),
    [
        (None, 1, "succeeded", "failures"),
        (RuntimeFailure("the model fell over"), 3, "failed", "errors"),
        (KeyboardInterrupt(), 130, "interrupted", "errors"),
    ],
)
def test_the_pipeline_writes_them_for_finished_failed_and_interrupted_runs(
    tmp_path, monkeypatch, fails, code, status, counted
):
    _Keyword.fails = fails
    monkeypatch.setattr("runner.providers.registry.open_provider", lambda config, cache=None: _Keyword())
    spec = write_project(tmp_path, {"evaluation.gates": ["accuracy >= 0.9"]})
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == code
    (folder,) = list((tmp_path / "runs" / "tiny").iterdir())
    run = RunFolder(folder)
    assert summary_of(run)["status"] == status
    assert {"summary.json", "junit.xml", "report.html"} <= {p.name for p in folder.iterdir()}
    assert "report.html" in (folder / "report.md").read_text(encoding="utf-8")
    suite = ET.parse(folder / "junit.xml").getroot().find("testsuite")
    assert suite.get(counted) == "1"
    assert status in (folder / "report.html").read_text(encoding="utf-8")
    run.close()


# The browser: Debian's chromium, headless, offline.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def png_colours(path: Path) -> int:
    """Distinct colours in a PNG screenshot (8-bit RGB/RGBA, as chromium writes), without PIL."""
    _width, _height, channels, rows = png_pixels(path)
    pixels = b"".join(rows)
    return len({pixels[i : i + 3] for i in range(0, len(pixels), channels * 7)})  # every 7th pixel is plenty


def png_pixels(path: Path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, channels, rows of bytes) of an 8-bit RGB/RGBA PNG, without PIL."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, header = 8, [], None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    width, height, depth, colour_type, *_ = header
    assert depth == 8 and colour_type in (2, 6)
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, channels, rows


def browse(page: Path, folder: Path) -> tuple[Path, list[str], list[str]]:
    """Open `page` in headless chromium: its screenshot, its console messages, and the URLs it asked for.

    The net log tells the page's requests from the browser's own background ones (update checks,
    network time, which the flags do not all silence): a page's carry its origin as initiator
    ("null" for a file:// page), the browser's "not an origin".
    """
    screenshot, net_log = folder / "page.png", folder / "net.json"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={folder / 'profile'}", "--enable-logging=stderr", "--v=0",
        f"--log-net-log={net_log}", "--net-log-capture-mode=Default",
        f"--screenshot={screenshot}", "--window-size=1200,1600", page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(folder)})
    assert screenshot.is_file(), done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    jobs = [
        event["params"] for event in log["events"] if event["type"] == start_job and "url" in event.get("params", {})
    ]
    requests = [
        job["url"] for job in jobs
        if job.get("initiator") != "not an origin" and not job["url"].startswith(("file:", "data:"))
    ]  # fmt: skip
    return screenshot, console, requests


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)


@needs_chromium
def test_the_page_renders_in_headless_chromium_with_no_errors_and_no_requests(tmp_path):
    run, *_ = classification_run(tmp_path / "run", texts=[f"标题{HOSTILE}", "正常标题"])
    page = run.file("report.html")
    assert_self_contained(page.read_text(encoding="utf-8"))
    screenshot, console, requests = browse(page, tmp_path)
    assert png_colours(screenshot) > 50  # text, a heatmap, a loss curve: a blank or error page has a handful
    assert console == [] and requests == []
    # To look at the page: SPECRUN_KEEP_SCREENSHOT=/tmp/page.png pytest -k chromium tests/test_outputs.py
    if os.environ.get("SPECRUN_KEEP_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["SPECRUN_KEEP_SCREENSHOT"])


@needs_chromium
def test_the_browser_check_sees_console_errors_and_outbound_requests(tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text(
        '<!DOCTYPE html><p>leaky</p><img src="http://specrun-probe.invalid/x.png">'
        '<link rel="stylesheet" href="https://specrun-probe.invalid/font.css"><script>nosuchfunction()</script>',
        encoding="utf-8",
    )
    _, console, requests = browse(page, tmp_path)
    assert any("nosuchfunction" in line for line in console)
    assert set(requests) == {"http://specrun-probe.invalid/x.png", "https://specrun-probe.invalid/font.css"}


def test_png_colours_tells_a_blank_page_from_a_drawn_one(tmp_path):
    def png(name: str, pixels: list[bytes], width: int) -> Path:
        raw = b"".join(b"\x00" + pixels[y] for y in range(len(pixels)))
        body = struct.pack(">IIBBBBB", width, len(pixels), 8, 2, 0, 0, 0)

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        path = tmp_path / f"{name}.png"
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", body) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
        )
        return path

    blank = png("blank", [b"\xff\xff\xff" * 70] * 70, 70)
    drawn = png("drawn", [b"".join(bytes((x * 3, y * 3, (x * y) % 256)) for x in range(70)) for y in range(70)], 70)
    assert png_colours(blank) == 1
    assert png_colours(drawn) > 50


def test_outputs_do_not_change_the_metrics_they_read(tmp_path):
    run, _, metrics, _ = classification_run(tmp_path / "run")
    before = copy.deepcopy(metrics)
    write_outputs(run, _manifest(_spec("classification", labels=LABELS), n_eval=160), metrics, [], None,
                  make_task(_spec("classification", labels=LABELS)), say=pytest.fail)  # fmt: skip
    assert metrics == before


def test_loss_curve_reads_events_and_checkpoints_and_skips_what_is_not_a_loss():
    events = [
        {"data": {"step": 10, "train_loss": 2.0}},
        {"data": {"step": 20, "train_loss": 1.5, "valid_loss": 1.8}},
        {"data": {"step": 20, "train_loss": 1.4}},  # reported again: the last value stands
        {"data": {"step": 30, "train_loss": "nan"}},
        {"message": "Checkpoint step-000030: train_loss 1.2", "data": {"step": 30, "train_loss": 1.2}},
        {"data": {}},
        {"message": "no data"},
    ]
    state = {"checkpoints": [{"id": "c", "step": 30, "metrics": {"step": 30, "train_loss": 1.2, "valid_loss": 1.6}}]}
    curve = loss_curve(events, state)
    assert curve.train == [(10, 2.0), (20, 1.4)]
    assert curve.valid == [(20, 1.8), (30, 1.6)] and curve.checkpoint_train == [(30, 1.2)]
    assert not loss_curve([], None)
    every_step = [{"data": {"step": 3, "train_loss": 1.0, "step_losses": [3.0, 2.0, 1.0]}},
                  {"data": {"step": 5, "train_loss": 0.5, "step_losses": [0.7, 0.5]}}]  # fmt: skip
    assert loss_curve(every_step, None).train == [(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.7), (5, 0.5)]


def test_a_failure_message_carries_the_difference_and_confidence_runner_gates_added():
    gate = {"gate": "fine_tuned.accuracy > zero_shot.accuracy (95%)", "left": 0.41, "right": 0.37, "difference": 0.04,
            "difference_ci95": [-0.01, 0.09], "confidence": 0.95, "passed": False, "op": ">"}  # fmt: skip
    message = failure_message(gate)
    assert message.startswith("fine_tuned.accuracy > zero_shot.accuracy (95%): 0.4100 > 0.3700 is false; ")
    assert "-0.0100 to +0.0900" in message and "does not hold at 95% confidence" in message
    assert failure_message({"gate": "accuracy >= 0.4", "left": None, "right": 0.4, "op": ">="}) == (
        "accuracy >= 0.4: nan >= 0.4000 is false"
    )


def test_mistakes_follow_the_calibration_the_mode_used_and_never_show_a_confidence_that_disagrees():
    scores = [{"a": 0.0, "b": -0.8}, {"a": 0.0, "b": -0.5}, {"a": -2.0, "b": 0.0}]
    gold = ["b", "b", "a"]
    records = [
        {"id": str(i), "text": f"t{i}", "gold": g, "m_scores": s}
        for i, (g, s) in enumerate(zip(gold, scores, strict=True))
    ]
    for record in records:  # with a bias of +1 on b, rows 0 and 1 answer b; raw, they answer a
        record["m"] = "b" if record["m_scores"]["b"] + 1 > record["m_scores"]["a"] else "a"
        record["m_uncalibrated"] = max(record["m_scores"], key=record["m_scores"].get)
    manifest = {
        "spec": {"evaluation": {"calibration": "auto"}},
        "choices": {"m": {"calibration": {"chosen": "bias", "bias": {"a": 0.0, "b": 1.0}}}},
    }
    assert calibration_of(manifest, "m") == ("bias", {"a": 0.0, "b": 1.0})
    assert calibration_of({"spec": {"evaluation": {"calibration": "auto"}}}, "m") == ("mean", {})
    found = classification_mistakes(records, "m", {}, calibration_of(manifest, "m"))
    assert found.total == 1 and found.shown[0].text == "t2" and found.shown[0].confidence > 0.5
    assert "fitted per-label bias" in found.how
    raw = classification_mistakes(records, "m_uncalibrated", {}, calibration_of(manifest, "m"))
    assert raw.total == 3 and [m.text for m in raw.shown] == ["t2", "t0", "t1"]  # most confident first
    assert "(raw)" in raw.how
    wrong_guess = classification_mistakes(records, "m", {}, ("none", {}))  # raw scores do not give back row m
    assert wrong_guess.total == 1 and wrong_guess.shown[0].confidence is None


@pytest.mark.model  # the tiny gemma needs the embedded model's tokenizer
def test_the_local_trainer_reports_every_steps_loss_for_the_curve(tmp_path, monkeypatch):
    from rich.console import Console

    from runner.providers.local.provider import LocalProvider
    from tests.conftest import make_tiny_gemma

    monkeypatch.setenv("SPECRUN_REGISTRY", str(tmp_path / "registry"))
    chats = [[{"role": "user", "content": f"文本：{t}\n类别："}, {"role": "assistant", "content": a}]
             for t, a in [("芯片发布", "科技"), ("股市大涨", "金融"), ("手机新品", "科技"), ("银行降息", "金融")]]  # fmt: skip
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in chats)
    )
    provider = LocalProvider(str(make_tiny_gemma(tmp_path / "tiny", initializer_range=0.5)), batch_size=4)
    settings = {"n_epochs": 6, "batch_size": 2, "learning_rate_multiplier": 10, "seed": 3}
    job = provider.create_job(provider.upload(tmp_path / "train.jsonl"), settings)
    provider.drive(job.id, Console(quiet=True))
    events = [event.__dict__ for event in provider.events(job.id)]  # as finetune.py appends them to the run folder
    curve = loss_curve(events, {"checkpoints": [c.__dict__ for c in provider.checkpoints(job.id)]})
    assert [step for step, _ in curve.train] == list(range(1, 13))  # 6 epochs of 2 steps, every one
    assert [step for step, _ in curve.checkpoint_train] == [2, 4, 6, 8, 10, 12]
