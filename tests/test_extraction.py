"""Extraction: answer parsing, span mapping, metrics with known answers, data errors, the CRF, the guide."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from runner.cli import main
from runner.config.spec import load_spec
from runner.core.errors import InvalidInput
from runner.data.dataset import make_splits
from runner.pipeline import prepare
from runner.providers import Completion
from runner.tasks.extraction.answer import AnswerGuide, Entity, locate, parse, render
from runner.tasks.extraction.metrics import entity_metrics
from tests.conftest import ROOT, set_keys

NAMES = {"name": "人名", "address": "地址", "company": "公司"}

ROWS = [
    {"text": "叶老桂在浙商银行工作", "label": {"name": {"叶老桂": [[0, 2]]}, "company": {"浙商银行": [[4, 7]]}}},
    {"text": "张三去了北京", "label": {"name": {"张三": [[0, 1]]}, "address": {"北京": [[4, 5]]}}},
    {"text": "李四在上海的腾讯公司", "label": {"name": {"李四": [[0, 1]]}, "address": {"上海": [[3, 4]]},
                                          "company": {"腾讯公司": [[6, 9]]}}},
    {"text": "王五和王五的朋友", "label": {"name": {"王五": [[0, 1], [3, 4]]}}},
    {"text": "今天天气很好", "label": {}},
    {"text": "北京欢迎你", "label": {"address": {"北京": [[0, 1]]}, "game": {"欢迎": [[2, 3]]}}},
]  # fmt: skip


def write_ner_project(root: Path, overrides: dict | None = None, rows: list | None = None) -> Path:
    (root / "ner.json").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (rows or ROWS)), encoding="utf-8"
    )
    (root / "ner.jinja").write_text(
        "抽取{% for t in entity_types %}{{ t.name }}{% endfor %}，格式 {{ answer_format }}\n"
        "{% for e in examples %}文本：{{ e.text }}\n实体：{{ e.answer }}\n{% endfor %}文本：{{ text }}\n实体：",
        encoding="utf-8",
    )
    spec = {
        "name": "ner",
        "task": "extraction",
        "data": {"path": "ner.json", "ignore_types": ["game"]},
        "entities": NAMES,
        "splits": {"train": {"take": "first", "n": 3}, "eval": {"take": "rest"}},
        "prompt": {"template": "ner.jinja"},
    }
    set_keys(spec, overrides)
    path = root / "ner.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


# Parsing


@pytest.mark.parametrize(
    "answer",
    [
        '{"人名": ["张三"], "地址": ["北京"]}',
        '```json\n{"人名": ["张三"], "地址": ["北京"]}\n```',
        '答案如下：{"人名": ["张三"], "地址": ["北京"]} 以上是全部实体。',
        "{'人名': ['张三'], '地址': ['北京']}",
        "｛“人名”：［“张三”］，“地址”：［“北京”］｝",
        '{"人名": ["张三", "张三"], "地址": "北京",}',
        '{"name": ["张三"], "ADDRESS": ["北京"]}',
    ],
)
def test_parse_tolerates_fences_prose_quotes_and_full_width(answer):
    parsed = parse(answer, NAMES)
    assert parsed is not None and parsed.entities == {"name": ["张三"], "address": ["北京"]}


@pytest.mark.parametrize("answer", ["", "人名：张三", '{"人名": ["张三"', "[1, 2]", "{{{{"])
def test_unreadable_answers_are_none(answer):
    assert parse(answer, NAMES) is None


def test_unknown_types_are_dropped_and_counted():
    parsed = parse('{"人名": ["张三"], "颜色": ["红"]}', NAMES)
    assert parsed.entities == {"name": ["张三"]} and parsed.unknown_types == ["颜色"]


def test_render_is_canonical_and_parse_reads_it_back():
    entities = (Entity(4, 6, "address", "北京"), Entity(0, 2, "name", "张三"), Entity(8, 10, "name", "张三"))
    text = render(entities, NAMES)
    assert text == '{"人名": ["张三"], "地址": ["北京"]}'
    assert parse(text, NAMES).entities == {"name": ["张三"], "address": ["北京"]}


# Span mapping


def test_locate_maps_repeated_strings_to_every_occurrence():
    spans, missing = locate({"name": ["王五"]}, "王五和王五的朋友")
    assert spans == {("name", 0, 2), ("name", 3, 5)} and missing == []


def test_locate_skips_occurrences_inside_a_longer_named_entity():
    text = "浙商银行和银行"
    spans, _ = locate({"company": ["浙商银行"], "organization": ["银行"]}, text)
    assert spans == {("company", 0, 4), ("organization", 5, 7)}


def test_locate_reports_hallucinations():
    spans, missing = locate({"name": ["赵六", "张三"]}, "张三去了北京")
    assert spans == {("name", 0, 2)} and missing == ["赵六"]


# Metrics with known answers


def test_entity_metrics_known_answer():
    gold = [[["name", 0, 2, "张三"], ["address", 4, 6, "北京"]], [["company", 0, 4, "腾讯公司"]]]
    predicted = [
        {"spans": [["name", 0, 2], ["name", 4, 6]], "hallucinated": ["赵六"], "n_strings": 3},  # 1 tp, 1 wrong type
        {"spans": [["company", 0, 2]], "n_strings": 1},  # wrong boundary
    ]
    m = entity_metrics(gold, predicted, ["name", "address", "company"], ["张三去了北京", "腾讯公司"])
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 2)
    assert m["entity_precision"] == pytest.approx(1 / 3) and m["entity_recall"] == pytest.approx(1 / 3)
    assert m["entity_f1"] == pytest.approx(1 / 3)
    assert m["per_type"]["name"]["f1"] == pytest.approx(2 / 3)  # 1 tp, 1 fp, 0 fn
    assert m["macro_f1"] == pytest.approx(2 / 9)  # name 2/3, address 0, company 0
    assert m["per_type"]["address"]["errors"] == {"wrong_type": 1}
    assert m["per_type"]["company"]["errors"] == {"wrong_boundary": 1}
    assert m["hallucinated"] == 1 and m["hallucination_rate"] == pytest.approx(1 / 4)


def test_invalid_answers_count_as_missing_everything():
    gold = [[["name", 0, 2, "张三"]]]
    m = entity_metrics(gold, [{"spans": [], "invalid": True}], ["name"], ["张三"])
    assert (m["tp"], m["fn"], m["invalid"], m["invalid_rate"]) == (0, 1, 1, 1.0)
    assert m["per_type"]["name"]["errors"] == {"missed": 1}


# Data


def test_cluener_rows_become_entities_with_ignored_types_dropped(tmp_path):
    splits = make_splits(load_spec(write_ner_project(tmp_path)))
    first = splits.train[0]
    assert first.gold == (Entity(0, 3, "name", "叶老桂"), Entity(4, 8, "company", "浙商银行"))
    assert splits.eval[-1].gold == (Entity(0, 2, "address", "北京"),)  # the game span is ignored


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "张三", "label": {"name": {"张四": [[0, 1]]}}}, "reads '张三', not '张四'"),
        ({"text": "张三", "label": {"name": {"张三": [[1, 5]]}}}, "outside the text"),
        ({"text": "张三", "label": {"color": {"张三": [[0, 1]]}}}, "entity type 'color' is not in the spec's entities"),
        ({"text": "张三", "label": {"name": {"张三": [0, 1]}}}, "spans must be"),
        ({"text": "张三", "entities": [{"type": "name", "text": "张三", "start": "0", "end": 2}]}, "integer offsets"),
        ({"prompt": "抽取\nText:张三\n", "completion": '{"人名": ["李四"]}'}, "'李四', which is not in the text"),
        ({"prompt": "抽取\nText:张三\n", "completion": "人名张三"}, "not an entity object"),
        ({"foo": 1}, "cannot tell the row's format"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = write_ner_project(tmp_path, rows=[*ROWS[:5], row])
    with pytest.raises(InvalidInput, match=message) as caught:
        make_splits(load_spec(path))
    assert "ner.json:6" in str(caught.value)


def test_entity_list_and_legacy_formats(tmp_path):
    rows = [
        {"text": "张三去了北京", "entities": [{"type": "name", "text": "张三", "start": 0, "end": 2}]},
        {"prompt": "请抽取给定Text中的实体，实体包括人名和地名。\nText:李四在上海\n", "completion": '{"人名": ["李四"], "地址": ["上海"]}'},
    ]  # fmt: skip
    splits = make_splits(load_spec(write_ner_project(tmp_path, rows=rows, overrides={"splits.train.n": 1})))
    assert splits.train[0].gold == (Entity(0, 2, "name", "张三"),)
    assert splits.eval[0].text == "李四在上海"
    assert splits.eval[0].gold == (Entity(0, 2, "name", "李四"), Entity(3, 5, "address", "上海"))


def test_training_answer_is_the_canonical_json(tmp_path):
    prepared = prepare(load_spec(write_ner_project(tmp_path)))
    answer = prepared.training[0]["messages"][-1]["content"]
    assert json.loads(answer) == {"人名": ["叶老桂"], "公司": ["浙商银行"]}
    assert '"人名": ["…"]' in prepared.training[0]["messages"][0]["content"]  # answer_format in the prompt


def test_spec_errors_for_extraction(tmp_path):
    with pytest.raises(InvalidInput, match="method generate"):
        load_spec(write_ner_project(tmp_path, {"evaluation.method": "score"}))
    with pytest.raises(InvalidInput, match="unknown metric 'accuracy'"):
        load_spec(write_ner_project(tmp_path, {"evaluation.gates": ["accuracy >= 0.5"]}))
    with pytest.raises(InvalidInput, match="both ignored and in entities"):
        load_spec(write_ner_project(tmp_path, {"data.ignore_types": ["name"]}))
    spec = load_spec(write_ner_project(tmp_path, {"evaluation.gates": ["entity_f1 >= 0.1"]}))
    assert spec.gates[0].metric == "entity_f1"


def test_eval_split_from_its_own_file_by_set(tmp_path, monkeypatch):
    """--set splits.eval.path evaluates any spec on another file (relative to the working directory)."""
    path = write_ner_project(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "dev.json").write_text(json.dumps(ROWS[1], ensure_ascii=False) + "\n", encoding="utf-8")
    monkeypatch.chdir(other)
    spec = load_spec(path, ["splits.eval.path=dev.json", "splits.eval.take=first"])
    splits = make_splits(spec)
    assert [e.text for e in splits.eval] == ["张三去了北京"] and splits.eval[0].id == "dev.json:L1"
    assert len(splits.train) == 3


# The CRF baseline and the guide


def test_crf_baseline_learns_from_its_train_split():
    from runner.tasks import Example
    from runner.tasks.extraction.baseline import crf_predictions

    people = ["张三", "李四", "王五", "赵六", "孙七", "周八"]
    train = [
        Example(f"L{i}", f"{p}去了北京", (Entity(0, 2, "name", p), Entity(4, 6, "address", "北京")), {})
        for i, p in enumerate(people * 3)
    ]
    test = [Example("T", "张三去了北京", (), {})]
    assert sorted(map(tuple, crf_predictions(train, test)[0]["spans"])) == [("address", 4, 6), ("name", 0, 2)]


def test_guide_accepts_only_canonical_answers_with_substrings():
    guide = AnswerGuide("叶老桂在浙商银行工作", ["人名", "公司"])
    good = '{"人名": ["叶老桂"], "公司": ["浙商银行"]}'
    assert guide.done(guide.advance(guide.START, good))
    assert guide.done(guide.advance(guide.START, "{}"))
    for bad in (
        '{"人名": ["王"',
        '{"颜色"',
        '{"人名": []',
        '{"人名": ["叶老桂", "叶老桂"',
        "\n{",
        '{"人名": ["叶老桂"], "人名"',
    ):
        assert guide.advance(guide.START, bad) is None, bad


def test_shipped_extraction_specs_validate():
    for name in ("cluener.yaml", "cluener_person_place.yaml"):
        assert main(["validate", str(ROOT / "specs" / name)]) == 0


# The pipeline end to end


class GazetteerProvider:
    """Answers with the entities of a small gazetteer found in the text; records calls, can crash."""

    name, model, chunk_size = "local", "gazetteer-test", 2
    GAZETTEER: ClassVar[dict[str, list[str]]] = {"人名": ["张三", "李四", "王五"], "地址": ["北京"], "公司": ["腾讯"]}
    calls: ClassVar[list[int]] = []
    crash_after: int | None = None

    def describe(self):
        return {"model": self.model}

    def chat(self, conversations, params, progress=None, guides=None, on_answer=None):
        GazetteerProvider.calls.append(len(conversations))
        if self.crash_after is not None and sum(self.calls) > self.crash_after:
            raise KeyboardInterrupt
        answers = []
        for conversation in conversations:
            text = conversation[-1]["content"].rsplit("文本：", 1)[1].split("\n", 1)[0]
            found = {name: [w for w in words if w in text] for name, words in self.GAZETTEER.items()}
            answers.append(
                Completion(
                    "```json\n" + json.dumps({k: v for k, v in found.items() if v}, ensure_ascii=False) + "\n```"
                )
            )
        return answers


@pytest.fixture
def gazetteer(monkeypatch):
    GazetteerProvider.calls, GazetteerProvider.crash_after = [], None
    monkeypatch.setattr("runner.providers.registry.open_provider", lambda config, cache=None: GazetteerProvider())
    return GazetteerProvider


def test_extraction_run_writes_metrics_predictions_and_report(tmp_path, gazetteer):
    spec = write_ner_project(
        tmp_path, {"evaluation.gates": ["entity_f1 >= 0.5", "zero_shot.entity_f1 > baseline.entity_f1"]}
    )
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    (folder,) = list((out / "ner").iterdir())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"zero_shot", "baseline", "baseline_all_data"}
    # eval: 王五和王五的朋友 (2 spans, both found), 今天天气很好 (none), 北京欢迎你 (北京 found)
    assert (metrics["zero_shot"]["tp"], metrics["zero_shot"]["fp"], metrics["zero_shot"]["fn"]) == (3, 0, 0)
    assert metrics["zero_shot"]["entity_f1"] == 1.0
    records = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert records[0]["gold"] == [["name", 0, 2, "王五"], ["name", 3, 5, "王五"]]
    assert records[0]["zero_shot"]["spans"] == [["name", 0, 2], ["name", 3, 5]]
    assert json.loads((folder / "train.jsonl").read_text().splitlines()[0])["messages"][-1]["content"].startswith("{")
    report = (folder / "report.md").read_text()
    assert "## Per type (zero_shot)" in report and "entity F1" in report and "char CRF" in report


def test_extraction_run_resumes_after_interrupt(tmp_path, gazetteer):
    spec = write_ner_project(tmp_path, {"splits.train.n": 1, "evaluation.baseline": False})
    out = tmp_path / "runs"
    gazetteer.crash_after = 2
    assert main(["run", str(spec), "--out", str(out)]) == 130
    asked_before = sum(gazetteer.calls[:-1])  # the call that crashed answered nothing
    gazetteer.crash_after = None
    gazetteer.calls.clear()
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert asked_before + sum(gazetteer.calls) == 5  # every eval example asked once in all
    (folder,) = list((out / "ner").iterdir())
    assert json.loads((folder / "manifest.json").read_text())["status"] == "succeeded"


@pytest.mark.model
def test_real_model_extraction_end_to_end(tmp_path):
    """The embedded gemma through the whole run, constrained: every answer is a well-formed prefix of the
    canonical form with only substrings of its text (one LoRA step on top is covered by the TNEWS main-job test)."""
    spec = write_ner_project(
        tmp_path,
        {
            "splits": {"train": {"take": "first", "n": 4}, "eval": {"take": "rest"}},
            "provider": {"name": "local", "params": {"max_tokens": 20}},
            "evaluation.constrained": True,
        },
    )
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    (folder,) = list((out / "ner").iterdir())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"zero_shot", "baseline", "baseline_all_data"} == set(metrics)
    assert metrics["zero_shot"]["hallucinated"] == 0
    for record in map(json.loads, (folder / "predictions.jsonl").read_text().splitlines()):
        guide = AnswerGuide(record["text"], list(NAMES.values()))
        assert guide.advance(guide.START, record["zero_shot_answer"]) is not None, record["zero_shot_answer"]


@pytest.mark.parametrize("strategy", ["random", "similar"])
def test_few_shot_extraction_shows_answers_of_train_examples(tmp_path, gazetteer, monkeypatch, strategy):
    seen = []
    original = GazetteerProvider.chat

    def recording(self, conversations, params, progress=None, guides=None, on_answer=None):
        seen.extend(c[-1]["content"] for c in conversations)
        return original(self, conversations, params, progress, guides, on_answer)

    monkeypatch.setattr(GazetteerProvider, "chat", recording)
    spec = write_ner_project(
        tmp_path,
        {"evaluation.modes": ["few_shot"], "few_shot": {"k": 2, "strategy": strategy, "embedding": "tfidf"}},
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    assert len(seen) == 3 and all(prompt.count("实体：{") == 2 for prompt in seen)
    (folder,) = list((tmp_path / "runs" / "ner").iterdir())
    assert all(len(ids) == 2 for ids in json.loads((folder / "few_shot.json").read_text()).values())


def test_check_reads_legacy_prompt_completion_lines_as_chat(tmp_path, capsys):
    path = tmp_path / "legacy.jsonl"
    rows = [
        {
            "prompt": "请抽取给定Text中的实体，实体包括人名和地名。\nText:张三去了北京\n",
            "completion": '{"人名": ["张三"], "地名": ["北京"]}',
        }
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows * 3), encoding="utf-8")
    assert main(["check", str(path)]) == 0
    assert "3 legacy prompt/completion lines checked as chat" in capsys.readouterr().err
