"""A task type and a provider from outside the repository: tests/plugins/toy_qa installed as a
distribution on sys.path (its own *.dist-info/entry_points.txt, groups specrun.tasks and
specrun.providers), validated and run end to end with nothing of specrun patched and no file under
runner/ knowing either."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from runner.cli import main
from runner.core.errors import InvalidInput
from runner.providers.registry import provider_class, provider_names, provider_table
from runner.tasks import task_class, task_names, task_table
from tests.conftest import ROOT

PLUGIN = Path(__file__).resolve().parent / "plugins" / "toy_qa"
PLUGIN_MODULES = ("specrun_toy_qa", "specrun_toy_qa.lookup")
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
WRONG = {"Which animal barks?": "dogs"}  # the lookup file's one mistake, half right by character


def clear_registries() -> None:
    task_table.cache_clear()
    provider_table.cache_clear()
    for module in PLUGIN_MODULES:
        sys.modules.pop(module, None)


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The plugin's package and dist-info in a folder of their own, first on sys.path; registries re-read."""
    site = tmp_path / "site"
    shutil.copytree(PLUGIN, site, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(site))
    clear_registries()
    yield site
    clear_registries()


def write_toy_project(root: Path, gates: list[str] | None = None, **overrides) -> Path:
    """Questions, their lookup answers (one wrong), a template and a spec naming the toy task and provider.
    The spec's folder is the working directory: provider.lookup is read relative to it."""
    (root / "qa.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QA))
    answers = dict(QA) | WRONG
    (root / "answers.jsonl").write_text(
        "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in answers.items())
    )
    (root / "qa.jinja").write_text("Answer in a word.\nQ: {{ text }}\nA:", encoding="utf-8")
    spec = {
        "name": "toy",
        "task": "toy_qa",
        "data": {"path": "qa.jsonl"},
        "splits": {"train": {"take": "first", "n": 3}, "eval": {"take": "rest"}},
        "prompt": {"template": "qa.jinja"},
        "provider": {"name": "toy_lookup", "lookup": "answers.jsonl"},
        "checks": {"model": "gpt-4o-mini"},
        "evaluation": {"gates": gates or ["exact_match >= 0.5", "char_f1 > baseline.char_f1 (95%)"]},
        **overrides,
    }
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run_folder(out: Path) -> Path:
    (folder,) = list((out / "toy").iterdir())
    return folder


def check_outputs(folder: Path, gates_passed: bool) -> None:
    """What a finished run of the toy spec leaves: the lookup's answers, scored, in every output."""
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert [(p["text"], p["zero_shot_answer"]) for p in predictions] == [(q, (dict(QA) | WRONG)[q]) for q, _ in QA[3:]]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"zero_shot", "baseline", "baseline_all_data"}
    assert metrics["zero_shot"]["exact_match"] == 4 / 5 and metrics["zero_shot"]["correct"] == 4
    assert metrics["zero_shot"]["char_f1"] == pytest.approx((4 + 6 / 7) / 5)  # "dogs" for "dog": F1 6/7
    assert set(metrics["zero_shot"]["ci95"]) == {"exact_match", "char_f1"}  # the task's per-example statistics
    summary = json.loads((folder / "summary.json").read_text())
    schema = json.loads((ROOT / "schemas" / "summary.schema.json").read_text(encoding="utf-8"))
    assert not list(Draft202012Validator(schema).iter_errors(summary))
    assert summary["task"] == "toy_qa" and summary["primary_metric"] == "exact_match"
    assert summary["provider"] == "toy_lookup" and summary["cost"]["eval_usd"] == 0.0
    assert summary["gates_passed"] is gates_passed and summary["breakdown"] is None
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "exact_match" in html and "dogs" in html  # the mistake the task's hook found
    suite = ET.parse(folder / "junit.xml").getroot()
    assert len(suite.findall(".//testcase")) == 2
    assert bool(suite.findall(".//failure")) is not gates_passed
    assert "4 of 5 answered exactly" in (folder / "report.md").read_text(encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["models"]["lookup"] == {"model": "lookup", "questions": len(QA)}  # the provider's describe()


def test_the_plugin_is_registered_beside_the_built_ins(toy_plugin):
    assert task_names()[-1] == "toy_qa" and task_class("toy_qa").__module__ == "specrun_toy_qa"
    assert provider_names()[-1] == "toy_lookup"
    assert provider_class("toy_lookup").__module__ == "specrun_toy_qa.lookup"
    from runner.config.schema import spec_schema

    schema = spec_schema()["properties"]
    assert "toy_qa" in schema["task"]["enum"] and "toy_lookup" in schema["provider"]["properties"]["name"]["enum"]
    assert "question_field" in schema["data"]["properties"] and "lookup" in schema["provider"]["properties"]


def test_validate_and_run_with_the_plugins_task_and_provider(toy_plugin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_toy_project(tmp_path)
    assert main(["validate", str(spec)]) == 0
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    check_outputs(run_folder(out), gates_passed=True)


def test_a_gate_the_lookup_answers_miss_fails_the_run(toy_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_toy_project(tmp_path, gates=["exact_match >= 0.9", "char_f1 > baseline.char_f1"])
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 1
    check_outputs(run_folder(out), gates_passed=False)
    failure = ET.parse(run_folder(out) / "junit.xml").getroot().find(".//failure")
    assert failure is not None and "exact_match" in ET.tostring(failure, encoding="unicode")


def test_a_missing_lookup_file_is_a_spec_error_naming_provider_lookup(toy_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_toy_project(tmp_path)
    (tmp_path / "answers.jsonl").unlink()
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "provider.lookup" in err and f"lookup file not found: {tmp_path / 'answers.jsonl'}" in err
    assert "Traceback" not in err
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    assert not out.exists()  # refused before a run folder is made


def test_a_bad_lookup_line_is_a_spec_error_naming_the_line(toy_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_toy_project(tmp_path)
    (tmp_path / "answers.jsonl").write_text('{"question": "Who wrote Hamlet?", "answer": "Shakespeare"}\n["no"]\n')
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "provider.lookup" in err and "answers.jsonl:2" in err


def test_an_unknown_provider_lists_the_known_ones_plugin_included(toy_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_toy_project(tmp_path, provider={"name": "toy_lookpu", "lookup": "answers.jsonl"})
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "provider.name" in err and "'toy_lookpu' is not one of 'local', 'openai'" in err and "'toy_lookup'" in err


def test_a_spec_key_of_the_plugin_is_checked_by_the_composed_schema(toy_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_toy_project(tmp_path, data={"path": "qa.jsonl", "question_field": ""})
    assert main(["validate", str(spec)]) == 2
    assert "data.question_field" in capsys.readouterr().err


def test_the_plugin_pip_installs_and_a_fresh_specrun_process_finds_it(tmp_path):
    """The package built from its pyproject.toml (offline: no index, no build isolation) into a folder on
    PYTHONPATH, then `python -m runner run` in a new interpreter: entry points found as any install's."""
    source, site = tmp_path / "source", tmp_path / "site"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("__pycache__", "*.dist-info", "*.md"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation"]
    built = subprocess.run([*pip, "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    spec = write_toy_project(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]),
        "SPECRUN_CACHE": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(spec), "--out", str(tmp_path / "runs")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    check_outputs(run_folder(tmp_path / "runs"), gates_passed=True)


def test_the_test_installs_declare_what_pyproject_declares():
    """The hand-written dist-info the in-process tests put on sys.path says what a pip install would."""
    declared = tomllib.loads((PLUGIN / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
    written = configparser.ConfigParser()
    written.read(PLUGIN / "specrun_toy_qa-0.1.dist-info" / "entry_points.txt", encoding="utf-8")
    assert {group: dict(written[group]) for group in written.sections()} == declared


def test_without_the_plugin_its_task_is_unknown(tmp_path, capsys):
    clear_registries()
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
        "[specrun.providers]\nlocal = bad_plugin:Nothing\nnot_a_provider = bad_plugin:Nothing\n"
    )
    (site / "bad_plugin.py").write_text("Nothing = object\n")
    monkeypatch.syspath_prepend(str(site))
    clear_registries()
    try:
        assert task_class("classification").__module__ == "runner.tasks.classification"
        with pytest.raises(InvalidInput, match="is not a specrun Task class"):
            task_class("not_a_task")
        assert provider_class("local").__module__ == "runner.providers.local.provider"
        with pytest.raises(InvalidInput, match="is not a specrun Provider class"):
            provider_class("not_a_provider")
    finally:
        clear_registries()
        sys.modules.pop("bad_plugin", None)


# --- docs/writing-a-task-type.md and docs/writing-a-provider.md show the plugin's own code and files


def code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", page.read_text(encoding="utf-8"), flags=re.M | re.S)


@pytest.mark.parametrize(
    ("page", "module"), [("writing-a-task-type.md", "__init__.py"), ("writing-a-provider.md", "lookup.py")]
)
def test_the_docs_show_the_plugins_code_exactly_and_all_of_it(page, module):
    """Each Python block is a piece of the module (methods shown dedented, as a formatter leaves them), in
    order; together they are the whole module, blank lines aside."""
    source = [line for line in (PLUGIN / "specrun_toy_qa" / module).read_text().splitlines() if line.strip()]
    at = 0
    for block in code_blocks(ROOT / "docs" / page, "python"):
        lines = [line for line in block.splitlines() if line.strip()]
        for indent in ("", "    "):
            piece = [indent + line for line in lines]
            if source[at : at + len(piece)] == piece:
                at += len(piece)
                break
        else:
            pytest.fail(f"docs/{page}: this block is not the next piece of {module}:\n{block[:300]}")
    assert at == len(source), f"docs/{page} leaves out {module} from: {source[at]!r}"


def test_the_docs_show_the_packages_files():
    task_page, provider_page = ROOT / "docs" / "writing-a-task-type.md", ROOT / "docs" / "writing-a-provider.md"
    assert code_blocks(task_page, "toml") == [(PLUGIN / "pyproject.toml").read_text()]
    assert all(block in (PLUGIN / "pyproject.toml").read_text() for block in code_blocks(provider_page, "toml"))
    assert (PLUGIN / "example" / "qa.jinja").read_text() in code_blocks(task_page, "jinja")
    assert (PLUGIN / "example" / "toy_qa.yaml").read_text() in code_blocks(task_page, "yaml")
    rows = (PLUGIN / "example" / "qa.jsonl").read_text().splitlines(keepends=True)
    assert "".join(rows[:2]) in code_blocks(task_page, "json")
    answers = (PLUGIN / "example" / "answers.jsonl").read_text().splitlines(keepends=True)
    assert "".join(answers[-2:]) in code_blocks(provider_page, "json")


def test_the_docs_example_validates_and_runs_as_the_docs_say(toy_plugin, tmp_path, monkeypatch, capsys):
    shutil.copytree(PLUGIN / "example", tmp_path / "example")
    monkeypatch.chdir(tmp_path / "example")
    assert main(["validate", "toy_qa.yaml"]) == 0
    lookup = ["--set", "provider.name=toy_lookup", "--set", "provider.lookup=answers.jsonl"]
    assert main(["run", "toy_qa.yaml", *lookup, "--out", "runs"]) == 0
    assert main(["validate", "toy_qa.yaml", "--set", "provider.lookup=nowhere.jsonl", *lookup[:2]]) == 2
    assert "--set provider.lookup: provider.lookup" in capsys.readouterr().err
    spec = Path("toy_qa.yaml")
    spec.write_text(spec.read_text().replace("{path: qa.jsonl}", '{path: qa.jsonl, question_field: ""}'))
    assert main(["validate", "toy_qa.yaml"]) == 2
    assert "toy_qa.yaml:3: data.question_field" in capsys.readouterr().err


def test_a_providers_file_is_read_beside_the_spec_and_hashed_with_it(toy_plugin, tmp_path, monkeypatch):
    """provider.lookup is one of the provider's path_keys: relative to the spec (not the working
    directory), and its bytes are part of the spec hash, so an edited lookup file is a new run."""
    from runner.config.spec import load_spec

    spec = write_toy_project(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: the relative path still means the spec's folder
    first = load_spec(spec)
    assert first.provider["lookup"] == str(tmp_path / "answers.jsonl")
    assert first.provider["lookup"] in first.files()
    before = first.hash()
    with (tmp_path / "answers.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"question": "Which colour is grass?", "answer": "green"}) + "\n")
    assert load_spec(spec).hash() != before
