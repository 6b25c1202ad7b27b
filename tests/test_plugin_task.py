"""A task type from outside the repository: tests/plugins/toy_qa installed as a distribution on sys.path
(its own *.dist-info/entry_points.txt, group specrun.tasks), validated and run end to end without a
file under runner/ knowing it."""

from __future__ import annotations

import json
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from runner.cli import main
from runner.core.errors import InvalidInput
from runner.providers import Completion, Provider
from runner.tasks import task_class, task_names, task_table
from tests.conftest import ROOT

PLUGIN = Path(__file__).resolve().parent / "plugins" / "toy_qa"
QA = [
    ("What is the capital of France?", "Paris"),
    ("How many legs has a spider?", "8"),
    ("Which planet is red?", "Mars"),
    ("What colour is the sky?", "blue"),
    ("Who wrote Hamlet?", "Shakespeare"),
    ("What is 2 + 2?", "4"),
    ("What is frozen water?", "ice"),
    ("Which animal barks?", "dog"),
]
WRONG = {"Which animal barks?": "a cat"}  # the fake model's one mistake


class LookupProvider(Provider):
    """Answers each question from the table (one wrong on purpose); loads nothing."""

    name, model = "local", "lookup-test"

    @classmethod
    def open(cls, config, cache=None):
        return cls()

    def describe(self):
        return {"model": self.model}

    def chat(self, conversations, params, progress=None, guides=None, on_answer=None):
        answers = dict(QA) | WRONG
        found = []
        for index, conversation in enumerate(conversations):
            question = conversation[-1]["content"].split("Q: ", 1)[1].split("\n", 1)[0]
            found.append(Completion(answers[question]))
            if on_answer:
                on_answer(index, found[-1])
        return found


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The plugin's package and dist-info in a folder of their own, first on sys.path; registries re-read."""
    site = tmp_path / "site"
    shutil.copytree(PLUGIN, site)
    monkeypatch.syspath_prepend(str(site))
    task_table.cache_clear()
    yield site
    task_table.cache_clear()
    sys.modules.pop("specrun_toy_qa", None)


def write_toy_project(root: Path, **overrides) -> Path:
    (root / "qa.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QA))
    (root / "qa.jinja").write_text("Answer in a word.\nQ: {{ text }}\nA:", encoding="utf-8")
    spec = {
        "name": "toy",
        "task": "toy_qa",
        "data": {"path": "qa.jsonl"},
        "splits": {"train": {"take": "first", "n": 3}, "eval": {"take": "rest"}},
        "prompt": {"template": "qa.jinja"},
        "checks": {"model": "gpt-4o-mini"},
        "evaluation": {"gates": ["exact_match >= 0.5", "char_f1 > baseline.char_f1"]},
        **overrides,
    }
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_the_plugin_is_registered_beside_the_built_ins(toy_plugin):
    assert task_names()[-1] == "toy_qa" and task_class("toy_qa").__module__ == "specrun_toy_qa"
    from runner.config.schema import spec_schema

    assert "toy_qa" in spec_schema()["properties"]["task"]["enum"]
    assert "question_field" in spec_schema()["properties"]["data"]["properties"]


def test_validate_and_run_a_spec_of_the_plugins_task(toy_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("runner.providers.registry.open_provider", lambda config, cache=None: LookupProvider())
    spec = write_toy_project(tmp_path)
    assert main(["validate", str(spec)]) == 0
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    (folder,) = list((out / "toy").iterdir())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"zero_shot", "baseline", "baseline_all_data"}
    assert metrics["zero_shot"]["exact_match"] == 4 / 5 and metrics["zero_shot"]["correct"] == 4
    summary = json.loads((folder / "summary.json").read_text())
    schema = json.loads((ROOT / "schemas" / "summary.schema.json").read_text(encoding="utf-8"))
    assert not list(Draft202012Validator(schema).iter_errors(summary))
    assert summary["task"] == "toy_qa" and summary["primary_metric"] == "exact_match"
    assert summary["gates_passed"] is True and summary["breakdown"] is None
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "exact_match" in html and "a cat" in html  # the mistake the plugin found
    suite = ET.parse(folder / "junit.xml").getroot()
    assert len(suite.findall(".//testcase")) == 2 and not suite.findall(".//failure")
    assert "4 of 5 answered exactly" in (folder / "report.md").read_text(encoding="utf-8")


def test_a_spec_key_of_the_plugin_is_checked_by_the_composed_schema(toy_plugin, tmp_path, capsys):
    spec = write_toy_project(tmp_path, data={"path": "qa.jsonl", "question_field": ""})
    assert main(["validate", str(spec)]) == 2
    assert "data.question_field" in capsys.readouterr().err


def test_without_the_plugin_its_task_is_unknown(tmp_path, capsys):
    task_table.cache_clear()
    spec = write_toy_project(tmp_path)
    assert main(["validate", str(spec)]) == 2
    assert "'toy_qa' is not one of 'classification', 'extraction'" in capsys.readouterr().err


def test_a_plugin_cannot_replace_a_built_in_nor_register_what_is_not_a_task(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "bad_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "bad_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bad-plugin\nVersion: 0.1\n"
    )
    (site / "bad_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[specrun.tasks]\nclassification = bad_plugin:Nothing\nnot_a_task = bad_plugin:Nothing\n"
    )
    (site / "bad_plugin.py").write_text("Nothing = object\n")
    monkeypatch.syspath_prepend(str(site))
    task_table.cache_clear()
    try:
        assert task_class("classification").__module__ == "runner.tasks.classification"
        with pytest.raises(InvalidInput, match="is not a specrun Task class"):
            task_class("not_a_task")
    finally:
        task_table.cache_clear()
        sys.modules.pop("bad_plugin", None)
