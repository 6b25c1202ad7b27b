"""Hostile and careless data files: read_rows names file:line for every failure and keeps rows whole."""

from __future__ import annotations

import json

import pytest

from runner.cli import main
from runner.core.errors import InvalidInput
from runner.data.dataset import read_rows
from tests.conftest import ROWS, write_project


def test_unicode_separators_inside_jsonl_strings_do_not_split_rows(tmp_path):
    rows = [{"sentence": "上\u2028下\u2029左\u0085右\x1c", "label_desc": "news_tech"}, ROWS[1]]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert read_rows(path, "jsonl") == [(1, rows[0]), (2, rows[1])]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_non_utf8_data_names_the_line(tmp_path, fmt):
    path = tmp_path / f"d.{fmt}"
    head = {"jsonl": '{"a": 1}\n\n{"a": 2}\n', "json": '[\n{"a": 1},\n{"a": 2},\n', "csv": "a,b\n1,2\n3,4\n"}[fmt]
    path.write_bytes(head.encode() + "名".encode("gbk") + b"\n")
    with pytest.raises(InvalidInput, match=rf"d\.{fmt}:4: not UTF-8"):
        read_rows(path, fmt)


def test_deep_nesting_and_huge_integers_name_the_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": ' + "[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"d\.jsonl:2: JSON nested too deeply"):
        read_rows(path, "jsonl")
    path.write_text('{"a": 1}\n{"a": ' + "7" * 10_000 + "}\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"d\.jsonl:2: JSON value cannot be read"):
        read_rows(path, "jsonl")
    array = tmp_path / "d.json"
    array.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"d\.json: JSON nested too deeply"):
        read_rows(array, "json")
    array.write_text('[{"a": ' + "7" * 10_000 + "}]", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"d\.json: JSON value cannot be read"):
        read_rows(array, "json")


def test_a_lone_surrogate_escape_names_its_line_and_a_pair_or_a_literal_backslash_reads(tmp_path):
    """\\ud800 passed validation and crashed the run when train.jsonl was written (UnicodeEncodeError)."""
    path = tmp_path / "d.jsonl"
    good = (
        '{"sentence": "笑\\ud83d\\ude00", "label_desc": "news_tech"}\n{"sentence": "a\\\\ud800", "label_desc": "x"}\n'
    )
    path.write_text(good + '{"sentence": "a\\ud800b", "label_desc": "news_tech"}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"d\.jsonl:3: a .* escape without its pair \(a lone surrogate\)"):
        read_rows(path, "jsonl")
    path.write_text(good, encoding="utf-8")
    assert [row["sentence"] for _, row in read_rows(path, "jsonl")] == ["笑😀", "a\\ud800"]
    array = tmp_path / "d.json"
    array.write_text('[\n{"sentence": "ok"},\n{"sentence": "\\udfff"}\n]', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"d\.json:3: a .* lone surrogate"):
        read_rows(array, "json")


def test_a_key_given_twice_in_one_row_is_an_error_not_the_last_value(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"label_desc": "news_tech"}\n{"label_desc": "news_tech", "x": {"a": 1}, "label_desc": "x"}\n')
    with pytest.raises(InvalidInput, match=r"d\.jsonl:2: the key 'label_desc' appears twice in one object"):
        read_rows(path, "jsonl")
    array = tmp_path / "d.json"
    array.write_text('[\n{"a": 1},\n{"a": }\n]')
    with pytest.raises(InvalidInput, match=r"d\.json:3: not valid JSON \(Expecting value, column 7\)"):
        read_rows(array, "json")
    array.write_text('[{"sentence": "a", "y": {"b": 1, "b": 2}}]')
    with pytest.raises(InvalidInput, match=r"d\.json: the key 'b' appears twice in one object"):
        read_rows(array, "json")


@pytest.mark.parametrize("fmt, sep", [("csv", ","), ("tsv", "\t")])
def test_a_column_named_twice_in_the_header_is_an_error(tmp_path, fmt, sep):
    path = tmp_path / f"d.{fmt}"
    path.write_text(sep.join(["sentence", "label_desc", "sentence"]) + "\n" + sep.join(["a", "b", "c"]) + "\n")
    with pytest.raises(InvalidInput, match=rf"d\.{fmt}:1: the column 'sentence' appears twice in the header"):
        read_rows(path, fmt)


def test_a_json_array_reports_the_line_each_item_starts_on(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS[:3], ensure_ascii=False, indent=2), encoding="utf-8")
    rows = read_rows(path, "json")
    assert [row for _, row in rows] == ROWS[:3]
    assert [line for line, _ in rows] == [2, 6, 10]  # where each "{" is, not the item index
    text = path.read_text(encoding="utf-8").splitlines()
    assert all(text[line - 1].strip() == "{" for line, _ in rows)


def test_a_compact_json_array_numbers_items_so_ids_stay_unique(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS[:3], ensure_ascii=False), encoding="utf-8")  # one line
    assert [line for line, _ in read_rows(path, "json")] == [1, 2, 3]
    path.write_text("\ufeff[]", encoding="utf-8")  # a BOM, an empty array
    assert read_rows(path, "json") == []


def test_a_csv_bom_is_not_part_of_the_first_field_name(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("sentence,label_desc\n苹果发布新款手机芯片,news_tech\n".encode("utf-8-sig"))
    assert read_rows(path, "csv") == [(2, {"sentence": "苹果发布新款手机芯片", "label_desc": "news_tech"})]


def test_a_csv_field_past_the_parser_limit_is_invalid_input(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n" + "x" * 200_000 + ",3\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"d\.csv:\d+: cannot read CSV: field larger than field limit"):
        read_rows(path, "csv")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("名".encode("gbk"), "data.jsonl:11: not UTF-8"),
        (b'{"sentence": ' + b"[" * 50_000 + b"\n", "data.jsonl:11: JSON nested too deeply"),
        (b'{"sentence": ' + b"1" * 5_000 + b"}\n", "data.jsonl:11: JSON value cannot be read"),
    ],
)
def test_validate_reports_bad_data_as_exit_2(tmp_path, capsys, content, message):
    spec = write_project(tmp_path)
    with (tmp_path / "data.jsonl").open("ab") as handle:
        handle.write(content)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert message in err and "Traceback" not in err
