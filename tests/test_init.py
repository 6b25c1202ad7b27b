"""specrun init: a spec and template guessed from a dataset, which specrun validate accepts unchanged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jinja2
import yaml

from runner.cli import main
from tests.conftest import ROOT

AG_NEWS = [  # an AG News sample: label, title, description
    (
        "World",
        "Talks resume in Geneva",
        "Negotiators returned to the table on Monday after a week-long pause in talks.",
    ),
    ("Sports", "Late goal lifts United", "A stoppage-time header gave United a narrow win over their city rivals."),
    ("Business", "Oil prices climb", "Crude rose for a third day as supply worries outweighed signs of slower demand."),
    (
        "Sci/Tech",
        "New chip doubles speed",
        "The processor runs twice as fast while drawing less power, the maker said.",
    ),
] * 5


def write_ag_news(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "title", "description"])
        writer.writerows(AG_NEWS)
    return path


def init(*args: str) -> int:
    return main(["init", *map(str, args)])


def test_tnews_guesses_the_seed_spec_fields_and_validates(tmp_path, capsys):
    assert init(ROOT / "data" / "tnews" / "tnews.json", "--out", tmp_path) == 0
    out = capsys.readouterr().err
    assert "label field 'label_desc'" in out and "text field 'sentence'" in out
    assert "news_stock (32)" in out  # every label with its count
    spec_path = tmp_path / "tnews.yaml"
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    assert spec["data"]["label_field"] == "label_desc" and spec["data"]["text_fields"] == ["sentence"]
    assert spec["labels"]["news_tech"] == "tech"  # the shared news_ prefix is not a word the model needs
    assert len(spec["labels"]) == 15
    assert "# exclude_labels: [news_stock]" in spec_path.read_text(encoding="utf-8")  # suggested, not applied
    assert main(["validate", str(spec_path)]) == 0


def test_cluener_is_extraction_with_its_entity_types_and_validates(tmp_path, capsys):
    assert init(ROOT / "data" / "cluener" / "train.json", "--out", tmp_path) == 0
    assert "10 entity types: name (" in capsys.readouterr().err
    spec_path = tmp_path / "cluener_train.yaml"  # train.json says nothing: its folder's name goes in front
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    assert spec["task"] == "extraction" and spec["data"]["format"] == "cluener"
    assert set(spec["entities"]) == {"name", "address", "organization", "company", "government",
                                     "position", "game", "book", "movie", "scene"}  # fmt: skip
    assert main(["validate", str(spec_path)]) == 0


def test_an_ag_news_csv_outside_the_spec_folder_validates(tmp_path):
    data = write_ag_news(tmp_path / "ag_news.csv")
    specs = tmp_path / "specs"
    assert init(data, "--out", specs, "--name", "news") == 0
    spec_path = specs / "news.yaml"
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    assert spec["data"] == {"path": "../ag_news.csv", "format": "csv", "text_fields": ["description"],
                            "label_field": "label"}  # fmt: skip
    assert spec["labels"] == {"World": "World", "Sports": "Sports", "Business": "Business", "Sci/Tech": "Sci/Tech"}
    assert spec["splits"]["train"]["n"] + spec["splits"]["eval"]["n"] <= len(AG_NEWS)
    assert main(["validate", str(spec_path)]) == 0
    template = (specs / "templates" / "news.jinja").read_text(encoding="utf-8")
    prompt = jinja2.Template(template).render(labels=["World", "Sports"], examples=[], text="A headline")
    assert prompt.startswith("Classify the text into one of these categories: World, Sports.")  # the comment is silent
    assert prompt.endswith("Text: A headline\nCategory:")


def test_a_tsv_reads_as_tab_separated_with_quotes_as_text(tmp_path):
    lines = ["label\ttext"] + [f'{"pos" if i % 2 else "neg"}\t"Quoted" review number {i}, it said' for i in range(10)]
    data = tmp_path / "reviews.tsv"  # a leading " is text in TSV, not a CSV quote
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert init(data, "--out", tmp_path) == 0
    spec = yaml.safe_load((tmp_path / "reviews.yaml").read_text(encoding="utf-8"))
    assert spec["data"]["format"] == "tsv" and spec["data"]["text_fields"] == ["text"]
    assert spec["labels"] == {"neg": "neg", "pos": "pos"}
    assert main(["validate", str(tmp_path / "reviews.yaml")]) == 0


def test_a_json_array_with_numeric_labels_keeps_them_strings(tmp_path):
    rows = [{"id": i, "review": f"review number {i} says the film was {'good' if i % 2 else 'bad'}", "stars": i % 2}
            for i in range(12)]  # fmt: skip
    data = tmp_path / "reviews.json"
    data.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    assert init(data, "--out", tmp_path) == 0
    spec = yaml.safe_load((tmp_path / "reviews.yaml").read_text(encoding="utf-8"))
    assert spec["data"]["format"] == "json" and spec["data"]["label_field"] == "stars"
    # Quoted keys in the YAML: the rows' 0 and 1 read as "0" and "1"; the words are the most distinctive of each class.
    assert spec["labels"] == {"0": "bad", "1": "good"}
    assert main(["validate", str(tmp_path / "reviews.yaml")]) == 0


def test_the_comments_carry_the_schemas_defaults(tmp_path):
    assert init(write_ag_news(tmp_path / "ag.csv"), "--out", tmp_path) == 0
    text = (tmp_path / "ag.yaml").read_text(encoding="utf-8")
    schema = json.loads((ROOT / "schemas" / "spec.schema.json").read_text(encoding="utf-8"))
    batch_size = schema["properties"]["provider"]["properties"]["batch_size"]["default"]
    assert f"batch_size={batch_size}" in text
    assert "poll_interval_s=" in text and 'modes=["zero_shot"]' in text
    sections = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    for section in ("data", "labels", "splits", "prompt", "provider", "checks", "fine_tune", "evaluation"):
        above = text.split(f"\n{section}:")[0].rstrip().splitlines()[-1]
        assert section in sections and above.startswith("#"), section  # every section says what it does


def test_existing_files_are_kept_without_force(tmp_path, capsys):
    data = write_ag_news(tmp_path / "ag.csv")
    assert init(data, "--out", tmp_path) == 0
    (tmp_path / "ag.yaml").write_text("edited by hand\n", encoding="utf-8")
    assert init(data, "--out", tmp_path) == 2
    assert "ag.yaml: already exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "ag.yaml").read_text(encoding="utf-8") == "edited by hand\n"
    assert init(data, "--out", tmp_path, "--force") == 0
    assert main(["validate", str(tmp_path / "ag.yaml")]) == 0


def test_two_equally_likely_label_fields_ask_for_the_flag(tmp_path, capsys):
    rows = [
        {"text": f"sentence {i} about something", "label": "ab"[i % 2], "category": "xyz"[i % 3]} for i in range(12)
    ]
    data = tmp_path / "both.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert init(data, "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert str(data) in err and "'label'" in err and "'category'" in err and "--label-field" in err
    assert not (tmp_path / "both.yaml").exists()
    assert init(data, "--out", tmp_path, "--label-field", "category") == 0
    assert main(["validate", str(tmp_path / "both.yaml")]) == 0


def test_labels_differing_only_in_case_and_a_label_gap_are_said_by_init(tmp_path, capsys):
    """init wrote a spec validate refused ('A' and 'a'), and blamed 'no field' when one row lacked the label."""
    cased = tmp_path / "cased.jsonl"
    cased.write_text("".join(json.dumps({"text": f"t {i}", "label": "Aab"[i % 3]}) + "\n" for i in range(12)))
    assert init(cased, "--out", tmp_path) == 2
    assert "labels 'A' and 'a' differ only in case" in capsys.readouterr().err
    rows = [{"text": f"text {i} words", "label": "xy"[i % 2]} for i in range(20)]
    rows[7] = {"text": "no label here"}
    gap = tmp_path / "gap.jsonl"
    gap.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert init(gap, "--out", tmp_path) == 2
    assert "'label' would fit but row 8 has no text or number there" in capsys.readouterr().err
    assert list(tmp_path.glob("*.yaml")) == []


def test_unguessable_or_unreadable_data_is_exit_2_naming_the_file(tmp_path, capsys):
    no_label = tmp_path / "texts.jsonl"
    no_label.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(6)), encoding="utf-8")
    assert init(no_label, "--out", tmp_path) == 2
    assert "cannot guess the label field" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": "x"}\n{"text": \n', encoding="utf-8")
    assert init(broken, "--out", tmp_path) == 2
    assert f"{broken}:2" in capsys.readouterr().err
    assert init(tmp_path / "missing.jsonl", "--out", tmp_path) == 2
    assert init(no_label, "--out", tmp_path, "--text-field", "nope") == 2
    assert "--text-field 'nope': no such field" in capsys.readouterr().err
    assert list(tmp_path.glob("*.yaml")) == []


def test_an_out_that_is_a_file_is_exit_3_and_a_bad_name_exit_2(tmp_path, capsys):
    data = write_ag_news(tmp_path / "ag.csv")
    blocker = tmp_path / "blocker"
    blocker.write_text("x", encoding="utf-8")
    assert init(data, "--out", blocker) == 3
    assert f"--out {blocker}: cannot write the spec there" in capsys.readouterr().err
    assert init(data, "--out", tmp_path, "--name", "my spec") == 2
    assert "--name 'my spec'" in capsys.readouterr().err


def test_labels_and_file_names_yaml_reads_as_line_breaks_or_refuses_still_validate(tmp_path, capsys):
    """JSON quoting left U+2028, U+0085, U+007F and U+FFFF raw (YAML breaks a line at the first two, refuses
    the others), a file name's newline ended the header comment, and a key over 1024 characters cannot be an
    implicit YAML key: each was a traceback from init's own read-back."""
    odd = ["tech\u2028evil: 1", "sports\x85", "finance\x7f", "<script>\uffff</td>\u202e", "a: b # c", "f" * 1500]
    rows = [{"text": f"第{i}条新闻的标题文字", "label": odd[i % len(odd)]} for i in range(60)]
    data = tmp_path / "odd\nname: x.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    assert init(data, "--out", tmp_path / "specs", "--name", "odd") == 0
    spec = yaml.safe_load((tmp_path / "specs" / "odd.yaml").read_text(encoding="utf-8"))
    assert set(spec["labels"]) == set(odd) and spec["name"] == "odd"
    assert main(["validate", str(tmp_path / "specs" / "odd.yaml")]) == 0


def test_a_blank_header_cell_is_never_a_field_of_the_spec(tmp_path, capsys):
    data = tmp_path / "blank.csv"
    data.write_text(",label\n" + "".join(f"some text {i},{'ab'[i % 2]}\n" for i in range(20)), encoding="utf-8")
    assert init(data, "--out", tmp_path) == 2
    assert "cannot guess the text field" in capsys.readouterr().err
    assert init(data, "--out", tmp_path, "--text-field", "") == 2
    assert "--text-field '': a spec cannot name a field without a name" in capsys.readouterr().err


def test_labels_and_paths_that_look_like_rich_markup_are_printed_as_they_are(tmp_path, capsys):
    rows = [{"text": f"第{i}条新闻的标题文字", "label": ["[/]", "[bold]b", "c"][i % 3]} for i in range(30)]
    data = tmp_path / "[x]markup.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    assert init(data, "--out", tmp_path / "out[/]", "--name", "m") == 0
    err = capsys.readouterr().err
    assert "[/] (10), [bold]b (10)" in err and "[x]markup.jsonl: 30 rows" in err
    assert main(["validate", str(tmp_path / "out[/]" / "m.yaml")]) == 0
    assert "out[/]" in capsys.readouterr().err
