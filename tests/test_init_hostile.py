"""Issue 21 class 6 and issue 24's init items: whatever `specrun init` writes, `validate` accepts as written;
what it cannot turn into a valid spec is exit 2 naming the flag or the row, and nothing is left behind."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli import main
from tests.conftest import ROOT


def run(*args: object) -> int:
    try:
        return main([str(arg) for arg in args])
    except SystemExit as error:  # argparse's own refusal
        return int(error.code or 0)


def written(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix in (".yaml", ".jinja"))


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("text", "label")) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


TWO_CLASSES = [["a fine day", "sun"], ["rain again", "rain"], ["bright and warm", "sun"], ["wet and grey", "rain"]]


# --- refused: exit 2 naming the row or the flag, nothing written ------------------------------------


def test_a_csv_row_with_more_fields_than_the_header_is_exit_2_naming_it(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\nhello world,a\nbye, for now,b\nhi,a\n", encoding="utf-8")
    assert run("init", data, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "d.csv:3: row 2 has 1 more field(s) than the header" in err and "Traceback" not in err
    assert written(tmp_path) == []


def test_a_csv_row_with_fewer_fields_is_exit_2_naming_it(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("id,text,label\n1,hello world,a\n2,bye\n3,hi,b\n", encoding="utf-8")
    assert run("init", data, "--out", tmp_path / "out") == 2
    assert "d.csv:3: row 2 has fewer fields than the header" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["--out", "DATA_FILE"])
def test_a_symlink_loop_is_exit_2_naming_the_flag(tmp_path, capsys, which):
    data = write_csv(tmp_path / "d.csv", TWO_CLASSES)
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    args = (data, "--out", tmp_path / "loop_a" / "specs") if which == "--out" else (tmp_path / "loop_a",)
    assert run("init", *args) == 2
    err = capsys.readouterr().err
    assert f"{which} " in err and "symlink loop" in err and "Traceback" not in err


def test_a_one_row_file_is_exit_2(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", [["only one", "x"]])
    assert run("init", data, "--label-field", "label", "--out", tmp_path) == 2
    assert "one label only" in capsys.readouterr().err
    data = write_csv(tmp_path / "e.csv", [["only one", "x"], ["", "y"]])
    assert run("init", data, "--label-field", "label", "--out", tmp_path) == 2
    assert "1 of 2 rows have text in 'text': a first run needs two" in capsys.readouterr().err
    assert written(tmp_path) == []


def test_a_hundred_thousand_labels_are_exit_2_naming_the_flag(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", [[f"text {i}", f"label {i}"] for i in range(100_000)])
    assert run("init", data, "--label-field", "label", "--out", tmp_path) == 2
    assert "--label-field 'label' holds 100000 distinct values" in capsys.readouterr().err
    assert written(tmp_path) == []


@pytest.mark.parametrize("invisible", ["\u200b", "\u200f\u202e", " \u2060 ", "\u00ad"])
def test_an_invisible_label_is_exit_2_naming_its_row(tmp_path, capsys, invisible):
    data = write_csv(tmp_path / "d.csv", [*TWO_CLASSES, ["what is this", invisible]])
    assert run("init", data, "--label-field", "label", "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "row 5: label" in err and "no visible text" in err
    assert written(tmp_path) == []


@pytest.mark.parametrize("word", ["\u200b", "sun\u200b", "\u202esun", "a\u2028b", "\t"])
def test_validate_refuses_an_invisible_or_broken_label_word(tmp_path, capsys, word):
    data = write_csv(tmp_path / "d.csv", TWO_CLASSES)
    assert run("init", data, "--out", tmp_path) == 0
    spec_path = tmp_path / "d.yaml"
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    spec["labels"]["sun"] = word
    spec_path.write_text(yaml.safe_dump(spec, allow_unicode=False), encoding="utf-8")
    capsys.readouterr()
    assert run("validate", spec_path) == 2
    assert "labels.sun" in capsys.readouterr().err


def test_a_failed_check_keeps_what_force_would_have_overwritten(tmp_path, monkeypatch, capsys):
    """The last line of defence: a spec validate would refuse is never left behind, and --force loses nothing."""
    data = write_csv(tmp_path / "d.csv", TWO_CLASSES)
    (tmp_path / "d.yaml").write_text("# mine\n", encoding="utf-8")
    from runner.core.errors import InvalidInput

    def refuse(spec):
        raise InvalidInput("refused for the test")

    monkeypatch.setattr("runner.commands.init.prepare", refuse)
    assert run("init", data, "--out", tmp_path, "--force") == 2
    assert "init wrote no spec, as validate would refuse it: refused for the test" in capsys.readouterr().err
    assert (tmp_path / "d.yaml").read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_path / "templates" / "d.jinja").exists()


def test_the_label_as_the_text_is_refused_by_init_and_validate(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", TWO_CLASSES)
    assert run("init", data, "--text-field", "label", "--label-field", "label", "--out", tmp_path) == 2
    assert "--text-field and --label-field are both 'label'" in capsys.readouterr().err
    assert run("init", data, "--out", tmp_path) == 0
    spec_path = tmp_path / "d.yaml"
    spec_path.write_text(spec_path.read_text(encoding="utf-8").replace("[text]", "[text, label]"), encoding="utf-8")
    capsys.readouterr()
    assert run("validate", spec_path) == 2
    assert "is both the label field and a text field" in capsys.readouterr().err


# --- turned into a valid spec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (["good\nnews", "bad\r\nnews"], ["good news", "bad news"]),  # line breaks: one line
        (["news_ ", "news_x"], ["news_", "x"]),  # only spaces after the prefix: the label itself
        (["sun\u200b", "rain"], ["sun", "rain"]),  # an invisible character inside a word: dropped
        (["  wide   gap ", "x"], ["wide gap", "x"]),
    ],
)
def test_labels_a_model_cannot_answer_get_words_it_can(tmp_path, labels, words):
    rows = [{"text": f"row {i} of {label}", "label": label} for i in range(3) for label in labels]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    assert run("init", data, "--out", tmp_path) == 0
    spec = yaml.safe_load((tmp_path / "d.yaml").read_text(encoding="utf-8"))
    assert spec["labels"] == dict(zip(labels, words, strict=True))
    assert run("validate", tmp_path / "d.yaml") == 0


def test_blank_texts_are_said_and_dropped(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", [*TWO_CLASSES, ["", "sun"], ["   ", "rain"]])
    assert run("init", data, "--out", tmp_path) == 0
    err = capsys.readouterr().err
    assert "6 rows" in err and "2 row(s) without text (row 5, 6): validate and run drop them" in err
    assert "# rows 5, 6 have no text: runs drop them" in (tmp_path / "d.yaml").read_text(encoding="utf-8")
    assert run("validate", tmp_path / "d.yaml") == 0
    assert "2 train, 0 validation, 2 eval" in capsys.readouterr().err  # 4 rows with text, split in two


def test_the_header_commands_work_from_where_init_ran(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "my reviews.csv", TWO_CLASSES)
    monkeypatch.chdir(tmp_path)
    assert run("init", "data/my reviews.csv", "--out", "specs") == 0
    text = (tmp_path / "specs" / "my_reviews.yaml").read_text(encoding="utf-8")
    validate = re.search(r"^#\s+specrun validate (.+?)\s{2,}", text, re.MULTILINE)
    assert validate and validate.group(1) == "specs/my_reviews.yaml"
    assert "specrun run specs/my_reviews.yaml --limit 20" in text
    assert "next: specrun validate specs/my_reviews.yaml" in capsys.readouterr().err
    assert run("validate", validate.group(1)) == 0


def test_numeric_labels_get_words_from_the_data(tmp_path, capsys):
    good = ["房间干净，服务不错", "位置好，早餐不错", "前台热情，不错的酒店", "环境不错，下次再来", "性价比高，不错"]
    bad = ["房间太差，隔音差", "服务差，不会再来", "卫生很差，失望", "设施陈旧，差评", "早餐差，前台冷漠"]
    data = write_csv(tmp_path / "hotel.csv", [[t, "1"] for t in good] + [[t, "0"] for t in bad], ("review", "label"))
    assert run("init", data, "--out", tmp_path) == 0
    assert "label '1' -> '不错': suggested: most distinctive in its rows" in capsys.readouterr().err
    spec = yaml.safe_load((tmp_path / "hotel.yaml").read_text(encoding="utf-8"))
    assert spec["labels"] == {"1": "不错", "0": "差"}
    assert run("validate", tmp_path / "hotel.yaml") == 0


def test_numeric_labels_with_nothing_distinctive_say_what_to_write(tmp_path):
    data = write_csv(tmp_path / "d.csv", [["same words here", "1"], ["same words here", "0"]] * 3)
    assert run("init", data, "--out", tmp_path) == 0
    text = (tmp_path / "d.yaml").read_text(encoding="utf-8")
    assert "no word stands out in its rows: write what 1 means, e.g. 1: positive" in text
    assert yaml.safe_load(text)["labels"] == {"1": "1", "0": "0"}


def test_entity_types_get_display_names(tmp_path):
    assert run("init", ROOT / "data" / "cluener" / "train.json", "--out", tmp_path) == 0
    spec = yaml.safe_load((tmp_path / "cluener_train.yaml").read_text(encoding="utf-8"))
    assert spec["entities"]["name"] == "人名" and spec["entities"]["scene"] == "景点"
    text = "张老师在北京见到了李明"
    spans = [("PER.NOM", 1, 3), ("GPE.NAM", 4, 6), ("PER.NAM", 9, 11), ("XYZ", 0, 1)]
    entities = [{"type": t, "text": text[start:end], "start": start, "end": end} for t, start, end in spans]
    rows = [{"text": text, "entities": entities}] * 4
    data = tmp_path / "weibo.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    assert run("init", data, "--out", tmp_path) == 0
    spec = yaml.safe_load((tmp_path / "weibo.yaml").read_text(encoding="utf-8"))
    assert spec["entities"] == {"PER.NOM": "人名泛指", "GPE.NAM": "行政区", "PER.NAM": "人名", "XYZ": "XYZ"}
    assert run("validate", tmp_path / "weibo.yaml") == 0


# --- the round trip, over generated files ------------------------------------------------------------

HOSTILE = "\u200b\u200f\u202e\u2060\ufeff\n\r\t  \u3000\u2028\u0085ＡＢ１a b,\"'#:-[]{}中文é"
hostile_text = st.text(
    alphabet=st.one_of(st.sampled_from(HOSTILE), st.characters(exclude_categories=("Cs",))), max_size=12
)
KNOWN_BAD = ["pos", "neg", "1", "0", "news_ ", "news_x", "a\nb", "\u200b", " x ", "x\u200b", "Ｘ", "\u2028"]
label_pool = st.lists(st.one_of(st.sampled_from(KNOWN_BAD), hostile_text), min_size=1, max_size=4)


@st.composite
def datasets(draw) -> tuple[str, list[dict]]:
    labels = draw(label_pool)
    n = draw(st.integers(1, 8))
    labels = labels + [labels[0]] * 2  # the first label more often: files with repeats, not all distinct
    rows = [{"text": draw(hostile_text), "label": draw(st.sampled_from(labels))} for _ in range(n)]
    return draw(st.sampled_from(["csv", "json", "jsonl"])), rows


def write_rows(path: Path, fmt: str, rows: list[dict]) -> None:
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@settings(deadline=None, max_examples=60, suppress_health_check=list(HealthCheck))
@given(datasets())
def test_init_then_validate_round_trip(tmp_path_factory, dataset):
    """init exits 0 and validate accepts its spec unedited, or init exits 2 with one line and writes nothing."""
    fmt, rows = dataset
    folder = tmp_path_factory.mktemp("rt")
    data = folder / f"d.{fmt}"
    write_rows(data, fmt, rows)
    capture = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(capture), contextlib.redirect_stdout(capture):
        code = run("init", data, "--out", folder / "out", "--task", "classification", "--label-field", "label",
                   "--text-field", "text")  # fmt: skip
        if code == 0:
            assert run("validate", folder / "out" / "d.yaml") == 0, capture.getvalue()
    assert code in (0, 2), capture.getvalue()
    assert "Traceback" not in capture.getvalue()
    if code == 2:
        assert written(folder) == [], capture.getvalue()
