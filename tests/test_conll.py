"""CoNLL/BIO data: each scheme read into text and spans, each malformed tag exit 2 naming file:line,
predictions written back in conlleval's layout, metrics equal to seqeval's strict mode, init detecting it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2, IOBES, Entities

from runner.cli import main
from runner.config.spec import load_spec
from runner.core.errors import InvalidInput
from runner.data.dataset import read_rows, spec_examples
from runner.tasks.extraction import ExtractionTask, bio
from runner.tasks.extraction.answer import Entity
from tests.conftest import set_keys
from tests.test_extraction import NAMES, gazetteer  # noqa: F401  (the fake provider's fixture)

TEMPLATE = (
    "抽取{% for t in entity_types %}{{ t.name }}{% endfor %}，格式 {{ answer_format }}\n"
    "{% for e in examples %}文本：{{ e.text }}\n实体：{{ e.answer }}\n{% endfor %}文本：{{ text }}\n实体："
)

BIO_CHARS = """\
张 B-name
三 I-name
去 O
了 O
北 B-address
京 I-address

李 B-name
四 I-name
在 O
腾 B-company
讯 I-company
工 O
作 O

王 B-name
五 I-name
和 O
赵 B-name
六 I-name
在 O
北 B-address
京 I-address

今 O
天 O
"""


def write_project(root: Path, data: str, name: str = "ner.bio", overrides: dict | None = None) -> Path:
    (root / name).write_text(data, encoding="utf-8")
    (root / "ner.jinja").write_text(TEMPLATE, encoding="utf-8")
    spec = {
        "name": "ner",
        "task": "extraction",
        "data": {"path": name},
        "entities": NAMES,
        "splits": {"train": {"take": "first", "n": 2}, "eval": {"take": "rest"}},
        "prompt": {"template": "ner.jinja"},
    }
    set_keys(spec, overrides)
    path = root / "ner.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


def read(root: Path, data: str, name: str = "ner.bio", **overrides) -> list:
    """Every example of the file, read as a run reads it."""
    return spec_examples(load_spec(write_project(root, data, name, overrides)))[0]


def test_character_level_bio_reads_text_and_spans(tmp_path):
    examples = read(tmp_path, BIO_CHARS)
    assert [e.text for e in examples] == ["张三去了北京", "李四在腾讯工作", "王五和赵六在北京", "今天"]
    assert examples[0].gold == (Entity(0, 2, "name", "张三"), Entity(4, 6, "address", "北京"))
    assert examples[2].id == "L16" and examples[3].gold == ()


@pytest.mark.parametrize(
    ("name", "data", "overrides"),
    [
        ("a.bioes", "张 B-name\n三 E-name\n在 O\n京 S-address\n\n腾 B-company\n讯 I-company\n司 E-company\n", {}),
        ("a.bmes", "张 B-name\n三 E-name\n在 O\n京 S-address\n\n腾 B-company\n讯 M-company\n司 E-company\n", {}),
        ("a.txt", "张\tB-name\n三\tI-name\n在\tO\n京\tB-address\n\n腾\tB-company\n讯\tI-company\n司\tI-company\n",
         {"data.format": "conll", "data.conll.scheme": "IOB2"}),
    ],
)  # fmt: skip
def test_bioes_bmes_and_iob2_read_the_same_entities(tmp_path, name, data, overrides):
    examples = read(tmp_path, data, name, **overrides)
    assert examples[0].gold == (Entity(0, 2, "name", "张三"), Entity(3, 4, "address", "京"))
    assert examples[1].gold == (Entity(0, 3, "company", "腾讯司"),)


CONLL_2003 = """\
-DOCSTART- -X- -X- O

EU NNP B-NP B-company
rejects VBZ B-VP O
German JJ B-NP B-address
call NN I-NP O
. . O O

Peter NNP B-NP B-name
Blackburn NNP I-NP I-name
"""


def test_conll_2003_four_columns_read_the_last_and_join_tokens_with_spaces(tmp_path):
    examples = read(tmp_path, CONLL_2003, "eng.conll")
    assert examples[0].text == "EU rejects German call ." and examples[0].id == "L3"
    assert examples[0].gold == (Entity(0, 2, "company", "EU"), Entity(11, 17, "address", "German"))
    assert examples[1].gold == (Entity(0, 15, "name", "Peter Blackburn"),)
    with pytest.raises(InvalidInput, match="entity type 'NP' is not in the spec's entities") as caught:
        read(tmp_path, CONLL_2003, "eng.conll", **{"data.conll.tag_column": 2})  # the chunk column: not entities
    assert "eng.conll:3" in str(caught.value)


def test_segmented_chinese_joins_without_spaces():
    assert bio.join_tokens(["北京", "欢迎", "you", "too"]) == ("北京欢迎you too", [(0, 2), (2, 4), (4, 7), (8, 11)])


def test_iob1_reads_with_lenient_and_is_an_error_without(tmp_path):
    data = "Peter I-name\nBlackburn I-name\nmet O\nJohn I-name\nSmith I-name\nand O\nAnn I-name\nB. B-name\n"
    with pytest.raises(InvalidInput, match=r"I-name with no B-name before it.*lenient: true") as caught:
        read(tmp_path, data, "a.conll")
    assert "a.conll:1" in str(caught.value)
    (example,) = read(tmp_path, data, "a.conll", **{"data.conll.lenient": True})
    assert [e.text for e in example.gold] == ["Peter Blackburn", "John Smith", "Ann", "B."]


@pytest.mark.parametrize(
    ("data", "message", "line"),
    [
        ("张 B-name\n三 I-name\n在 O\n京 I-address\n", "I-address with no B-address before it", 4),
        ("张 B-name\n三 I-address\n", "I-address with no B-address: name is open", 2),
        ("张 B-name\n三 X-name\n", r"tag 'X-name' is not O or B/I-<type> \(BIO\)", 2),
        ("张 B-name\n三 name\n", "tag 'name' is not O", 2),
        ("张 B-name\n三 I-name\n在 O\n京 B-color\n", "entity type 'color' is not in the spec's entities", 4),
        ("张 B-name\n三 I-name\n在 O x\n", "3 columns here, 2 on line 1", 3),
        ("张\n", "a token and its tag", 1),
        ("张 B-name\n三 I-name\n在 O\n\n京 S-address\n", "fit no one scheme.*from .*bad.conll:1 are BIO", 5),
        ("张 B-name\n三 M-name\n在 I-name\n", r"tags B-name I-name M-name fit no one scheme \(BIO", 1),
        ("张 O\n三 E-name\n", "E-name with no B-name before it", 2),
        ("张 B-name\n三 M-name\n在 O\n", "never closed by E-name", 3),
        ("张 S-name\n三 B-name\n", "never closed by E-name", 2),
    ],
)
def test_malformed_tags_are_exit_2_naming_file_and_line(tmp_path, capsys, data, message, line):
    with pytest.raises(InvalidInput, match=message) as caught:
        read(tmp_path, data, "bad.conll")
    assert f"bad.conll:{line}" in str(caught.value)
    assert main(["validate", str(tmp_path / "ner.yaml")]) == 2
    assert f"bad.conll:{line}" in capsys.readouterr().err


def test_scheme_named_in_the_spec_refuses_other_prefixes(tmp_path):
    with pytest.raises(InvalidInput, match=r"tag 'S-name' is not O or B/I-<type> \(IOB2\)"):
        read(tmp_path, "张 S-name\n", "a.conll", **{"data.conll.scheme": "IOB2"})


def test_a_tag_column_outside_the_lines_is_exit_2(tmp_path):
    with pytest.raises(InvalidInput, match="tag_column is 5"):
        read(tmp_path, BIO_CHARS, **{"data.conll.tag_column": 5})


# Agreement with seqeval: the entities read, and the metrics of the files written


def _random_sentences(rng: random.Random, n: int) -> list[tuple[list[str], list[tuple[str, int, int]]]]:
    """Token lists with non-overlapping entity token spans; tokens are words, so texts have spaces."""
    sentences = []
    for _ in range(n):
        length = rng.randint(1, 12)
        tokens = [rng.choice(["alpha", "beta", "gamma", "delta", "北京", "x"]) for _ in range(length)]
        spans, position = [], 0
        while position < length:
            if rng.random() < 0.3:
                end = min(length, position + rng.randint(1, 3))
                spans.append((rng.choice(list(NAMES)), position, end))
                position = end
            else:
                position += 1
        sentences.append((tokens, spans))
    return sentences


def _tags(spans: list[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    tags = ["O"] * length
    for entity_type, start, end in spans:
        if scheme == "BIOES" and end - start == 1:
            tags[start] = f"S-{entity_type}"
            continue
        for index in range(start, end):
            tags[index] = f"{'B' if index == start else 'I'}-{entity_type}"
        if scheme == "BIOES":
            tags[end - 1] = f"E-{entity_type}"
    return tags


@pytest.mark.parametrize(("scheme", "seqeval_scheme"), [("BIO", IOB2), ("BIOES", IOBES)])
def test_entities_read_agree_with_seqeval_strict(scheme, seqeval_scheme):
    rng = random.Random(7)
    for tokens, spans in _random_sentences(rng, 200):
        tags = _tags(spans, len(tokens), scheme)
        ours = bio.decode(tags, scheme, False, lambda index: f"f:{index}")
        theirs = [(e.tag, e.start, e.end) for e in Entities([tags], seqeval_scheme).entities[0]]
        assert sorted(ours) == sorted(theirs) == sorted(spans)


def test_metrics_agree_with_seqeval_strict_on_the_written_file(tmp_path):
    rng = random.Random(11)
    sentences = _random_sentences(rng, 300)
    data = "".join(
        "".join(f"{t} {g}\n" for t, g in zip(tokens, _tags(spans, len(tokens), "BIO"), strict=True)) + "\n"
        for tokens, spans in sentences
    )
    (tmp_path / "gold.bio").write_text(data, encoding="utf-8")
    doc = load_spec(write_project(tmp_path, data, "gold.bio")).doc
    task = ExtractionTask(doc)
    examples = [task.read_example(row, "conll", f"gold.bio:{line}", f"L{line}") for line, row in
                read_rows(tmp_path / "gold.bio", "conll")]  # fmt: skip
    predicted = []
    for example, (_, spans) in zip(examples, sentences, strict=True):
        _, offsets = bio.join_tokens(example.record["tokens"])
        guess = []
        for entity_type, start, end in spans:  # missed, retyped, cut short, kept; plus a spurious one
            roll = rng.random()
            if roll < 0.15:
                continue
            if roll < 0.3:
                entity_type = rng.choice(list(NAMES))
            elif roll < 0.45 and end - start > 1:
                end -= 1
            guess.append([entity_type, offsets[start][0], offsets[end - 1][1]])
        if rng.random() < 0.2 and not spans:
            guess.append(["company", *offsets[0]])
        predicted.append({"spans": guess, "invalid": False})
    ours = task.score(examples, predicted)
    (name, text), *_ = task.prediction_files(examples, {"zero_shot": predicted}).items()
    assert name == "predictions.zero_shot.conll"
    blocks = [block.splitlines() for block in text.split("\n\n") if block]
    y_true = [[line.split(" ")[1] for line in block] for block in blocks]
    y_pred = [[line.split(" ")[2] for line in block] for block in blocks]
    assert [[line.split(" ")[0] for line in block] for block in blocks] == [tokens for tokens, _ in sentences]
    theirs = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    assert ours["entity_f1"] == pytest.approx(theirs["micro avg"]["f1-score"])
    assert ours["entity_precision"] == pytest.approx(theirs["micro avg"]["precision"])
    assert ours["entity_recall"] == pytest.approx(theirs["micro avg"]["recall"])
    for entity_type in NAMES:
        assert ours["per_type"][entity_type]["f1"] == pytest.approx(theirs[entity_type]["f1-score"])
        assert ours["per_type"][entity_type]["support"] == theirs[entity_type]["support"]


def test_overlapping_predictions_keep_the_earliest_longest_in_the_file():
    offsets = [(0, 1), (1, 2), (2, 3), (3, 4)]
    spans = [["address", 0, 2], ["company", 0, 3], ["name", 3, 4], ["name", 2, 4]]
    assert bio.bio_tags(spans, offsets) == ["B-company", "I-company", "I-company", "B-name"]


# End to end, and init


def test_a_run_reads_conll_and_scores_it(tmp_path, gazetteer):  # noqa: F811
    spec = write_project(tmp_path, BIO_CHARS)
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    (folder,) = list((out / "ner").iterdir())
    metrics = json.loads((folder / "metrics.json").read_text())
    # eval: 王五和赵六在北京 (王五, 北京 found; 赵六 missed), 今天 (none)
    assert (metrics["zero_shot"]["tp"], metrics["zero_shot"]["fp"], metrics["zero_shot"]["fn"]) == (2, 0, 1)


def test_a_run_writes_predictions_conll_per_row(tmp_path, gazetteer):  # noqa: F811
    spec = write_project(tmp_path, BIO_CHARS)
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    (folder,) = list((out / "ner").iterdir())
    written = (folder / "predictions.zero_shot.conll").read_text(encoding="utf-8")
    assert written.startswith("王 B-name B-name\n五 I-name I-name\n和 O O\n赵 B-name O\n六 I-name O\n")
    assert written.endswith("京 I-address I-address\n\n今 O O\n天 O O\n\n")
    assert (folder / "predictions.baseline.conll").is_file()


def test_init_detects_conll_in_a_txt_file_and_the_spec_validates(tmp_path, capsys):
    data = tmp_path / "weibo.txt"
    data.write_text("张\tB-PER\n三\tE-PER\n在\tO\n京\tS-LOC\n\n李\tB-PER\n四\tE-PER\n", encoding="utf-8")
    assert main(["init", str(data), "--out", str(tmp_path)]) == 0
    assert "2 entity types: PER (2), LOC (1)" in capsys.readouterr().err
    spec_path = tmp_path / "weibo.yaml"
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    assert spec["data"]["format"] == "conll" and spec["data"]["conll"]["scheme"] == "BIOES"
    assert spec["data"]["conll"]["lenient"] is False
    assert main(["validate", str(spec_path)]) == 0


def test_init_writes_lenient_for_iob1_data(tmp_path, capsys):
    data = tmp_path / "eng.train"
    data.write_text(CONLL_2003.replace("B-name", "I-name").replace("B-company", "I-company"), encoding="utf-8")
    assert main(["init", str(data), "--out", str(tmp_path)]) == 0
    spec = yaml.safe_load((tmp_path / "eng.yaml").read_text(encoding="utf-8"))
    assert spec["data"]["conll"] == {"tag_column": -1, "scheme": "BIO", "lenient": True}


def test_init_reads_a_conll_suffix_as_conll(tmp_path, capsys):
    data = tmp_path / "resume.conll"
    data.write_text("张 B-NAME\n三 M-NAME\n丰 E-NAME\n在 O\n京 S-LOC\n\n李 B-NAME\n四 E-NAME\n", encoding="utf-8")
    assert main(["init", str(data), "--out", str(tmp_path)]) == 0
    spec = yaml.safe_load((tmp_path / "resume.yaml").read_text(encoding="utf-8"))
    assert spec["data"]["format"] == "conll" and spec["data"]["conll"]["scheme"] == "BMES"
    assert main(["validate", str(tmp_path / "resume.yaml")]) == 0


# The llm_crf row and the side-by-side table


def test_merge_rules_and_the_choice_on_validation():
    from runner.tasks.extraction import combine

    llm = [{"spans": [["name", 0, 2], ["address", 4, 6]]}]
    crf = [{"spans": [["name", 0, 2], ["company", 7, 9]]}]
    assert combine.merge("union", llm[0], crf[0], set())["spans"] == [["name", 0, 2], ["address", 4, 6],
                                                                      ["company", 7, 9]]  # fmt: skip
    assert combine.merge("intersection", llm[0], crf[0], set())["spans"] == [["name", 0, 2]]
    merged = combine.merge("per_type", llm[0], crf[0], {"company", "address"})["spans"]
    assert merged == [["name", 0, 2], ["company", 7, 9]]  # address from the CRF, which has none
    task = ExtractionTask({"entities": NAMES, "data": {"text_fields": ["text"]}, "evaluation": {},
                           "provider": {"name": "local"}})  # fmt: skip
    gold = [Entity(0, 2, "name", "张三"), Entity(4, 6, "address", "北京"), Entity(7, 9, "company", "腾讯")]
    example = bio_example("张三去了北京在腾讯", gold)
    rule, from_crf, f1 = combine.choose(llm, crf, lambda p: task.score([example], p), list(NAMES))
    assert (rule, from_crf) == ("union", {"company"}) and f1["union"] == 1.0 == f1["per_type"]  # tie: union first
    rule, _, _ = combine.choose(llm, llm, lambda p: task.score([example], p), list(NAMES))
    assert rule == "llm"  # nothing beats the LLM alone: no merged row


def bio_example(text: str, gold: list[Entity]):
    from runner.tasks import Example

    return Example(id="L1", text=text, gold=tuple(sorted(gold)), record={"text": text})


def test_llm_crf_needs_a_validation_split(tmp_path):
    with pytest.raises(InvalidInput, match="llm_crf chooses how to merge") as caught:
        load_spec(write_project(tmp_path, BIO_CHARS, overrides={"evaluation.llm_crf": True}))
    assert "evaluation.llm_crf" in str(caught.value)


def sentence(text: str, names: dict[str, str]) -> str:
    """A BIO sentence of single characters; names: entity string -> type (each found once)."""
    tags = ["O"] * len(text)
    for string, entity_type in names.items():
        start = text.index(string)
        tags[start : start + len(string)] = [f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(string) - 1)
    return "".join(f"{c} {t}\n" for c, t in zip(text, tags, strict=True)) + "\n"


def test_a_run_with_llm_crf_merges_what_each_source_finds(tmp_path, gazetteer):  # noqa: F811
    # The gazetteer knows 王五 but not 赵六; the CRF learns 赵六 from the train lines and not 王五.
    data = (
        sentence("赵六在北京", {"赵六": "name", "北京": "address"}) * 2
        + (sentence("赵六和王五", {"赵六": "name", "王五": "name"}) * 3)
        + sentence("赵六和王五去北京", {"赵六": "name", "王五": "name", "北京": "address"}) * 2
    )
    spec = write_project(
        tmp_path, data, overrides={"evaluation.llm_crf": True, "splits.validation": {"take": "first", "n": 3}}
    )
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    (folder,) = list((out / "ner").iterdir())
    metrics = json.loads((folder / "metrics.json").read_text())
    chosen = json.loads((folder / "manifest.json").read_text())["choices"]["llm_crf"]
    assert chosen["mode"] == "zero_shot" and chosen["rule"] == "union"
    f1 = chosen["validation_f1"]
    assert f1["union"] > max(f1["llm"], f1["crf"])
    assert metrics["llm_crf"]["n"] == 2  # on eval it is scored like any row (there, with 2 train lines, no better)
    task = ExtractionTask(load_spec(spec).doc)
    table = "\n".join(task.comparison_section(metrics, "zero_shot"))
    assert "## Per type, side by side (zero_shot, baseline, llm_crf)" in table
    assert "| name | 人名 | 4 | 0.67 | 2/0/0/0 |" in table, table  # 王五 found twice; 赵六 twice missed
    assert "zero_shot + char CRF · union" in (folder / "report.md").read_text(encoding="utf-8")


def test_no_llm_crf_row_when_the_llm_alone_is_best_and_the_report_says_why(tmp_path, gazetteer):  # noqa: F811
    data = (
        sentence("张三去了北京", {"张三": "name", "北京": "address"}) * 2
        + (sentence("李四在腾讯", {"李四": "name", "腾讯": "company"}) * 3)
        + sentence("王五去北京", {"王五": "name", "北京": "address"}) * 2
    )
    spec = write_project(
        tmp_path, data, overrides={"evaluation.llm_crf": True, "splits.validation": {"take": "first", "n": 3}}
    )
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    (folder,) = list((out / "ner").iterdir())
    assert "llm_crf" not in json.loads((folder / "metrics.json").read_text())
    assert json.loads((folder / "manifest.json").read_text())["choices"]["llm_crf"]["rule"] == "llm"
    assert "## Per type, side by side (zero_shot, baseline)" in (folder / "report.md").read_text(encoding="utf-8")


def test_text_fields_are_refused_with_conll(tmp_path):
    with pytest.raises(InvalidInput, match="its tokens joined") as caught:
        load_spec(write_project(tmp_path, BIO_CHARS, overrides={"data.text_fields": ["sentence"]}))
    assert "data.text_fields" in str(caught.value)


def test_rows_not_read_from_conll_write_no_conll_file():
    task = ExtractionTask({"entities": NAMES, "data": {"text_fields": ["text"]}, "evaluation": {},
                           "provider": {"name": "local"}})  # fmt: skip
    from runner.tasks import Example

    json_row = Example(id="L1", text="张三", gold=(), record={"text": "张三", "tokens": ["张三", "x"]})
    assert task.prediction_files([json_row], {"zero_shot": [{"spans": []}]}) == {}
