import json
from collections import Counter

import pytest

from runner.config.spec import load_spec
from runner.core.errors import InvalidInput
from runner.data.dataset import make_splits, read_rows, spec_examples, take
from tests.conftest import ROOT, write_project


def test_reads_jsonl_and_drops_excluded_labels(project):
    examples, n_excluded = spec_examples(load_spec(project))
    assert n_excluded == 1
    assert [e.id for e in examples[:2]] == ["L1", "L2"]
    assert examples[0].text == "苹果发布新款手机芯片" and examples[0].gold == "news_tech"


def test_bad_json_line_is_reported_with_its_line(tmp_path):
    path = write_project(tmp_path)
    with (tmp_path / "data.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"sentence": "broken", \n')
    with pytest.raises(InvalidInput, match=r"data\.jsonl:11: not valid JSON"):
        spec_examples(load_spec(path))


def test_missing_field_is_reported_with_its_line(tmp_path):
    rows = [{"sentence": "a", "label_desc": "news_tech"}, {"text": "b", "label_desc": "news_tech"}]
    with pytest.raises(InvalidInput, match=r"data\.jsonl:2: missing field 'sentence'"):
        spec_examples(load_spec(write_project(tmp_path, rows=rows)))


def test_label_not_in_map_is_reported_with_its_line(tmp_path):
    rows = [{"sentence": "a", "label_desc": "news_tech"}, {"sentence": "b", "label_desc": "news_weather"}]
    with pytest.raises(InvalidInput, match=r"data\.jsonl:2: label 'news_weather' is not in the spec's labels"):
        spec_examples(load_spec(write_project(tmp_path, rows=rows)))


def test_csv_and_json_array_formats(tmp_path):
    (tmp_path / "d.csv").write_text("label,title\nBusiness,Stocks up\n", encoding="utf-8")
    assert read_rows(tmp_path / "d.csv", "csv") == [(2, {"label": "Business", "title": "Stocks up"})]
    (tmp_path / "d.json").write_text(json.dumps([{"a": 1}, {"a": 2}]), encoding="utf-8")
    assert read_rows(tmp_path / "d.json", "json") == [(1, {"a": 1}), (2, {"a": 2})]


def test_multiple_text_fields_are_joined(tmp_path):
    rows = [{"title": "标题", "body": "正文", "label_desc": "news_tech"}] * 2
    spec = load_spec(write_project(tmp_path, {"data.text_fields": ["title", "body"]}, rows=rows))
    assert spec_examples(spec)[0][0].text == "标题\n正文"


def test_splits_never_overlap_and_respect_limit(project):
    splits = make_splits(load_spec(project), limit=4)
    assert [e.id for e in splits.train] == ["L1", "L2", "L3"]
    assert len(splits.eval) == 4
    assert not {e.id for e in splits.train} & {e.id for e in splits.eval}


def test_empty_eval_split_is_an_error(tmp_path):
    path = write_project(tmp_path, {"splits": {"train": {"take": "first"}, "eval": {"take": "rest"}}})
    with pytest.raises(InvalidInput, match="both need at least one"):
        make_splits(load_spec(path))


def test_take_strategies_on_tnews():
    spec = load_spec(ROOT / "specs" / "tnews.yaml")
    examples, n_excluded = spec_examples(spec)
    assert len(examples) == 8000 - 32 and n_excluded == 32
    assert take(examples, {"take": "last", "n": 100}) == examples[-100:]
    assert take(examples, {"take": "first", "n": 5}) == examples[:5]
    first = take(examples, {"take": "random", "n": 50, "seed": 1})
    assert first == take(examples, {"take": "random", "n": 50, "seed": 1})
    assert first != take(examples, {"take": "random", "n": 50, "seed": 2})


def test_stratified_keeps_class_shares():
    spec = load_spec(ROOT / "specs" / "tnews.yaml")
    examples, _ = spec_examples(spec)
    chosen = take(examples, {"take": "stratified", "n": 700, "seed": 0}, stratum=lambda e: e.gold)
    assert len(chosen) == 700 and len({e.id for e in chosen}) == 700
    pool, got = Counter(e.gold for e in examples), Counter(e.gold for e in chosen)
    for label, count in pool.items():
        assert abs(got[label] - 700 * count / len(examples)) < 1


def test_an_empty_data_file_says_so(tmp_path):
    path = write_project(tmp_path)
    (tmp_path / "data.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(InvalidInput, match="no examples: the file has no rows"):
        make_splits(load_spec(path))


def test_a_file_whose_rows_are_all_excluded_says_so(tmp_path):
    path = write_project(tmp_path, rows=[{"sentence": "某股票停牌", "label_desc": "news_stock"}])
    with pytest.raises(InvalidInput, match="no examples: all 1 rows are excluded by the spec"):
        make_splits(load_spec(path))
