"""specrun check --out DIR writes DIR/checks.json; --json prints it, alone, on stdout (CI reads the figures)."""

from __future__ import annotations

import json

from runner.cli import main
from tests.conftest import write_project

CHAT = {"messages": [{"role": "user", "content": "今天天气如何？"}, {"role": "assistant", "content": "晴"}]}


def write_chat(path, rows=(CHAT, CHAT)):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_out_writes_checks_json_into_a_new_folder(tmp_path, capsys):
    data = write_chat(tmp_path / "train.jsonl")
    out = tmp_path / "ci" / "checks"
    assert main(["check", str(data), "--out", str(out)]) == 0
    checks = json.loads((out / "checks.json").read_text(encoding="utf-8"))
    assert checks["n_examples"] == 2 and checks["n_valid"] == 2 and checks["file"] == str(data)
    assert str(out / "checks.json") in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["checks.json"]  # no partial file left behind


def test_json_prints_only_the_checks_on_stdout(tmp_path, capsys):
    data = write_chat(tmp_path / "train.jsonl", [CHAT, {"messages": [{"role": "user", "content": "hi"}]}])
    assert main(["check", str(data), "--json"]) == 2  # a format error still gates
    captured = capsys.readouterr()
    checks = json.loads(captured.out)  # the whole of stdout is one JSON document
    assert checks["format_errors"]["example_missing_assistant_message"] == {"count": 1, "lines": [2]}
    assert "well-formed" in captured.err  # the human lines stay on stderr


def test_without_out_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_chat(tmp_path / "train.jsonl")
    assert main(["check", str(data)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_an_out_that_is_a_file_or_under_a_file_is_exit_3_in_one_line(tmp_path, capsys):
    data = write_chat(tmp_path / "train.jsonl")
    blocker = tmp_path / "blocker"
    blocker.write_text("x", encoding="utf-8")
    for out in (blocker, blocker / "sub"):
        assert main(["check", str(data), "--out", str(out), "--json"]) == 3
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1 and f"--out {out}" in captured.err


def test_a_spec_checks_into_a_run_folder_under_out_and_prints_the_same_json(tmp_path, capsys):
    spec = write_project(tmp_path)
    out = tmp_path / "runs"
    assert main(["check", str(spec), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (written,) = out.glob("tiny/*/checks.json")
    assert json.loads(written.read_text(encoding="utf-8")) == printed
    assert printed["n_valid"] == 3  # the spec's train split, as chat


def test_a_path_that_looks_like_rich_markup_is_printed_as_it_is(tmp_path, capsys):
    """`checks: o[/]/checks.json` went to rich as markup: a MarkupError traceback after the file was written."""
    folder = tmp_path / "q[" / "q[/]"
    folder.mkdir(parents=True)
    data = write_chat(folder / "train.jsonl")
    out = tmp_path / "o[" / "o[/]"
    assert main(["check", str(data), "--out", str(out)]) == 0
    assert f"checks: {out / 'checks.json'}" in capsys.readouterr().err
