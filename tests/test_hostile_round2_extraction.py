"""Issue 21, classes 1, 2, 4, 5 and 9 for extraction (and label words): hostile answers, names, sizes.

Contracts: an answer that cannot be read counts as invalid and the run goes on (whatever a model
or a file writes); anything that can make a correct answer score wrong is exit 2 at validate;
every step is linear or bounded (a budget per claim); the CRF never gets input it cannot take;
constrained decoding on an empty text yields {}; a zero-length span says "empty span".
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runner.cli import main
from runner.core.jsonl import dumps
from runner.providers import Completion
from runner.tasks import Example
from runner.tasks.classification.baseline import baseline_predictions, baseline_probabilities
from runner.tasks.classification.normalize import first_twins, normalize_answer, unreadable
from runner.tasks.extraction import ExtractionTask
from runner.tasks.extraction.answer import AnswerGuide, Entity, locate, name_key, parse, render
from runner.tasks.extraction.baseline import crf_predictions
from tests.test_extraction import NAMES, write_ner_project
from tests.test_hostile_round2_scores import assert_standard_json

QUICK = settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=150)
HOSTILE_ANSWERS = [
    '{{"人名": ["张三"]}}',  # doubled braces: a set holding a dict to ast (unhashable)
    '{"人名": [{"张三": 1}], "地址": {"北京": [1]}}',  # dicts and lists where strings belong
    '{"人名": [["张三"]], "公司": [null, 1, true]}',
    "{'人名': {['张三']: 1}}",  # an unhashable key to ast
    '{"人名": ' + "[" * 1500 + "]" * 1500 + "}",  # nesting past the parser's recursion limit
    "{" * 1500 + "}" * 1500,
    '{"人名": ["张\ud800三"]}',  # a lone surrogate in a string
    '{"人名": ["\\ud800"]}',  # ... and as an escape
    '{"\ud800": ["张三"]}',
    "```json\n{{}}\n```",
]


def _standard(value: Any) -> None:
    """What the run folder's writer makes of it is standard JSON in UTF-8."""
    text = dumps(value)
    text.encode("utf-8")
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))


def _task(doc: dict) -> ExtractionTask:
    found = ExtractionTask.__new__(ExtractionTask)
    found.doc = doc
    found.types = {t: {"name": n, "description": ""} for t, n in doc["entities"].items()}
    found.names = dict(doc["entities"])
    found.ignored, found.text_fields = set(), doc["data"]["text_fields"]
    return found


# --- class 2: answers that crashed the parser ----------------------------------------------------------


@pytest.mark.parametrize("answer", HOSTILE_ANSWERS)
def test_hostile_answers_are_read_or_invalid_never_raised(answer):
    parsed = parse(answer, NAMES)
    assert parsed is None or all(isinstance(s, str) for strings in parsed.entities.values() for s in strings)
    prediction = _task({"entities": NAMES, "data": {"text_fields": ["text"]}}).read_answer(answer, "张三在北京")
    assert isinstance(prediction["invalid"], bool)
    _standard(prediction)


def json_ish(depth: int = 3) -> st.SearchStrategy[str]:
    """Text that looks like a model's JSON answer: fragments of real answers, braces, quotes, surrogates."""
    atoms = st.sampled_from(
        ['{', '}', '{{', '}}', '[', ']', '"', "'", ':', ',', '：', '，', '“', '”', '｛', '｝', '人名', '地址', 'name',
         '张三', '北京', 'null', 'true', '1e999', 'NaN', '\\u', '\\ud800', '\ud800', '\udfff', '```', '```json', '\n',
         ' ', '\\', '{"人名": ["张三"]}', "{'地址': ['北京']}"]
    )  # fmt: skip
    return st.lists(st.one_of(atoms, st.text(max_size=4)), max_size=40).map("".join)


@QUICK
@given(answer=json_ish(), deep=st.integers(0, 2000), kind=st.sampled_from("[{"))
@example(answer="", deep=1500, kind="[")
@example(answer="\ud800", deep=1500, kind="{")
def test_parse_reads_or_refuses_any_json_ish_text(answer, deep, kind):
    closing = "]" if kind == "[" else "}"
    for text in (answer, f'{{"人名": {kind * deep}{answer}{closing * deep}}}' if kind == "[" else kind * deep + answer):
        prediction = _task({"entities": NAMES, "data": {"text_fields": ["text"]}}).read_answer(
            text, "张三在北京，" + answer
        )
        _standard(prediction)
    del closing


class HostileProvider:
    """A local-looking provider whose answers are HOSTILE_ANSWERS in turn."""

    name, model, chunk_size = "local", "hostile-test", 2
    calls: ClassVar[int] = 0

    def describe(self):
        return {"model": self.model}

    def chat(self, conversations, params, progress=None, guides=None, on_answer=None):
        answers = []
        for _ in conversations:
            answers.append(Completion(HOSTILE_ANSWERS[HostileProvider.calls % len(HOSTILE_ANSWERS)]))
            HostileProvider.calls += 1
        return answers


def test_a_run_on_hostile_answers_counts_them_invalid_and_writes_standard_json(tmp_path, monkeypatch):
    from tests.test_extraction import ROWS

    monkeypatch.setattr("runner.providers.registry.open_provider", lambda config, cache=None: HostileProvider())
    rows = ROWS + [{"text": f"张三在北京第{i}次", "label": {"name": {"张三": [[0, 1]]}}} for i in range(8)]
    spec = write_ner_project(tmp_path, {"evaluation.baseline": False}, rows=rows)
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    (folder,) = list((out / "ner").iterdir())
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["zero_shot"]["n"] == 11 and metrics["zero_shot"]["invalid"] >= 1
    assert_standard_json(folder)
    assert not list(folder.glob("*.partial"))
    assert main(["run", str(spec), "--out", str(out)]) == 0  # and a rerun reads back what was written


@pytest.mark.parametrize("completion", [a for a in HOSTILE_ANSWERS if a.encode("utf-8", "replace").decode() == a])
def test_hostile_legacy_completions_are_exit_2_or_read_at_validate(tmp_path, capsys, completion):
    rows = [{"prompt": "请抽取实体\nText:张三在北京", "completion": completion}] * 2 + [
        {"prompt": f"请抽取实体\nText:张三{i}", "completion": '{"人名": ["张三"]}'} for i in range(4)
    ]
    spec = write_ner_project(tmp_path, rows=rows)
    assert main(["validate", str(spec)]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err


# --- class 4: names that would file a correct answer under the wrong type ----------------------------


@pytest.mark.parametrize(
    ("entities", "message"),
    [
        ({"PER": "人", "per": "人2"}, "both read from the answer key"),  # type keys twins once case is folded
        ({"name": "PER", "address": "per"}, "both read from the answer key"),
        ({"name": "ＰＥＲ", "address": "PER"}, "both read from the answer key"),  # width
        ({"name": "address", "address": "name"}, "both read from the answer key"),  # crossed
        ({"name": "人名", "address": "Name"}, "both read from the answer key"),
        ({"name": "人\n名", "address": "地址"}, "line breaks"),
        ({"name": "人\u2028名", "address": "地址"}, "line breaks"),
        ({"name": "\u200b", "address": "地址"}, "no visible text"),
        ({"name": " ", "address": "地址"}, "no visible text"),
    ],
)
def test_entity_names_that_misfile_answers_are_exit_2(tmp_path, capsys, entities, message):
    spec = write_ner_project(
        tmp_path, {"entities": entities, "data.ignore_types": ["game", "company", "name", "address"][:0] or ["game"]}
    )
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert message in err and "entities" in err and "Traceback" not in err


names_st = st.text(st.characters(codec="utf-8", exclude_characters='"\\{}[]'), min_size=1, max_size=6)


@QUICK
@given(entities=st.dictionaries(names_st, names_st, min_size=1, max_size=4))
def test_accepted_entity_names_read_back_as_their_own_type(entities):
    """Whatever validate accepts: an answer keyed by a display name (or a type) is filed under that type."""
    from runner.core.errors import InvalidInput

    doc = {
        "entities": entities,
        "data": {},
        "splits": {},
        "evaluation": {"method": "generate", "calibration": "none", "ensemble": False, "probe": False},
    }
    try:
        ExtractionTask.check_spec(doc, lambda *keys: ".".join(map(str, keys)))
    except InvalidInput:
        return
    for entity_type, name in entities.items():
        for key in (name, entity_type):
            parsed = parse(json.dumps({key: ["x"]}, ensure_ascii=False), entities)
            assert parsed is not None and parsed.entities == {entity_type: ["x"]}, (key, entities)
    answer = render([Entity(0, 1, t, "x") for t in entities], entities)
    assert set(parse(answer, entities).entities) == set(entities)


@pytest.mark.parametrize("word", ["C#", "U.S.", "(其他)", "「体育」", "科技。", "*bold*"])
def test_a_label_word_with_edge_punctuation_is_read_when_answered_verbatim(word):
    labels = {"a": word, "b": "金融"}
    assert normalize_answer(word, labels) == "a"
    assert normalize_answer(f"类别：{word}", labels) == "a"
    assert normalize_answer("金融", labels) == "b"


@pytest.mark.parametrize("word", ["\u200b", "。", "()", "类别：", "label"])
def test_a_label_word_that_reads_as_nothing_is_exit_2(tmp_path, capsys, word):
    from tests.conftest import write_project

    spec = write_project(tmp_path, {"labels": {"news_tech": word, "news_finance": "金融", "news_sports": "体育"}})
    assert main(["validate", str(spec)]) == 2
    assert "news_tech" in capsys.readouterr().err


label_st = st.text(st.characters(codec="utf-8"), min_size=1, max_size=6)


@QUICK
@given(labels=st.dictionaries(label_st, label_st, min_size=2, max_size=5))
def test_accepted_label_words_answered_verbatim_read_as_their_label(labels):
    if any(not name.strip() or name.splitlines() != [name] for name in labels.values()):
        return  # refused at validate (one visible line)
    if unreadable(labels) is not None or first_twins({k: (k, v) for k, v in labels.items()}) is not None:
        return  # refused at validate
    for label, name in labels.items():
        assert normalize_answer(name, labels) == label, (name, labels)


# --- class 5: sizes ----------------------------------------------------------------------------------


def test_locating_a_one_character_answer_in_100k_characters_is_fast():
    text = "张" * 100_000
    started = time.perf_counter()
    spans, missing = locate({"name": ["张"], "address": ["张张"]}, text)
    assert time.perf_counter() - started < 1.0
    assert len(spans) == 50_000 and not missing  # every 张 lies inside a 张张


def test_locate_keeps_only_occurrences_not_inside_a_longer_one():
    spans, _ = locate({"name": ["银行", "浙商银行"], "company": ["浙商银行"], "address": ["商"]}, "浙商银行和银行")
    assert spans == {("name", 0, 4), ("company", 0, 4), ("name", 5, 7)}


def test_validate_on_a_legacy_file_with_a_one_character_answer_in_a_long_text_is_fast(tmp_path, capsys):
    rows = [{"prompt": "Text:" + "张" * 100_000, "completion": '{"人名": ["张"]}'}] + [
        {"prompt": f"Text:李四{i}", "completion": '{"人名": ["李四"]}'} for i in range(5)
    ]
    spec = write_ner_project(tmp_path, rows=rows)
    started = time.perf_counter()
    assert main(["validate", str(spec)]) == 0, capsys.readouterr().err
    assert time.perf_counter() - started < 30


def test_an_answer_of_many_unreadable_nested_objects_is_refused_fast():
    for answer in ("{" * 50_000 + "x" + "}" * 50_000, "{'a': {" * 20_000 + "}" * 40_000, "{x}" * 30_000):
        started = time.perf_counter()
        parse(answer, NAMES)
        assert time.perf_counter() - started < 2.0


# --- classes 1 and 9: native input guards, the guide, empty spans ------------------------------------


def _example(text: str, gold=()) -> Example:
    return Example(id=text or "empty", text=text, gold=tuple(gold), record={})


def test_the_crf_is_never_trained_on_nothing():
    """crfsuite segfaulted (exit -11) when every training text was empty."""
    evaluation = [_example("张三在北京"), _example("")]
    for train in ([_example(""), _example("")], [], [_example("今天天气很好")]):  # empty, none, no entity at all
        predictions = crf_predictions(train, evaluation)
        assert [p["spans"] for p in predictions] == [[], []]


def test_the_tfidf_baseline_never_fits_on_no_text():
    train = [Example(id=str(i), text="", gold=label, record={}) for i, label in enumerate("abab")]
    assert baseline_predictions(train, [_example("x")]) in (["a"], ["b"])
    (table,) = baseline_probabilities(train, [[_example("x")]], ["a", "b"])
    assert table.sum() == pytest.approx(1.0)


def test_constrained_decoding_on_an_empty_text_can_only_write_an_empty_object():
    guide = AnswerGuide("", list(NAMES.values()))
    assert guide.advance(guide.START, '{"') is None
    assert guide.done(guide.advance(guide.START, "{}"))
    only_forbidden = AnswerGuide('"\n\\', list(NAMES.values()))
    assert only_forbidden.advance(only_forbidden.START, '{"') is None


def test_a_zero_length_span_is_an_empty_span(tmp_path, capsys):
    from tests.test_extraction import ROWS

    rows = [*ROWS[:5], {"text": "张三", "entities": [{"type": "name", "text": "", "start": 1, "end": 1}]}]
    spec = write_ner_project(tmp_path, rows=rows)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "empty span" in err and "outside" not in err


def test_name_key_folds_case_width_and_invisible_characters():
    assert name_key(" ＰＥＲ\u200b ") == name_key("per") == "per"


def test_label_words_are_stripped_of_every_whitespace_answers_are():
    from runner.tasks.classification.normalize import _WHITESPACE

    assert set(_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


def test_locating_thousands_of_strings_in_a_long_text_is_one_pass_per_length():
    import random
    import re

    rng = random.Random(0)
    text = "".join(rng.choice("abcdefghij") for _ in range(100_000))
    strings = sorted({"".join(rng.choice("abcdefghij") for _ in range(4)) for _ in range(9_000)})
    started = time.perf_counter()
    spans, missing = locate({"name": strings}, text)
    assert time.perf_counter() - started < 5.0  # one regex search per string took about 20 s
    sample = strings[::500]
    expected = {("name", m.start(), m.end()) for s in sample for m in re.finditer(re.escape(s), text)}
    assert expected <= spans and not set(missing) & set(sample) - {s for s in sample if s not in text}
