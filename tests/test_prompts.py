import pytest

from runner.config.spec import load_spec
from runner.core.errors import InvalidInput
from runner.data.dataset import spec_examples
from runner.data.prompts import PromptBuilder
from runner.pipeline import prepare
from runner.tasks import make_task
from tests.conftest import ROOT, write_project


def test_tnews_template_reproduces_the_seed_prompt():
    spec = load_spec(ROOT / "specs" / "tnews.yaml")
    example = spec_examples(spec)[0][0]
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    seed = (
        "对给定文本进行分类，类别包括：科技、金融、娱乐、世界、汽车、运动、文化、军事、旅游、游戏、教育、农业、房产、社会。"
        f"\n\n给定文本：\n{example.text}\n类别："
    )
    assert builder.messages(example) == [{"role": "user", "content": seed}]
    assert builder.training_messages(example)[-1] == {"role": "assistant", "content": spec.doc["labels"][example.gold]}


def test_system_message_is_rendered_first(tmp_path):
    spec = load_spec(
        write_project(tmp_path, {"prompt.system": "你是新闻编辑，只回答{{ labels | length }}个类别之一。"})
    )
    builder = PromptBuilder(spec.doc["prompt"]["template"], spec.doc["prompt"]["system"], make_task(spec.doc))
    messages = builder.messages(spec_examples(spec)[0][0])
    assert messages[0] == {"role": "system", "content": "你是新闻编辑，只回答3个类别之一。"}
    assert messages[1]["role"] == "user"


def test_undefined_variable_names_template_line(tmp_path):
    path = write_project(tmp_path)
    (tmp_path / "prompt.jinja").write_text("第一行\n文本：{{ txt }}\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"prompt\.jinja:2: undefined template variable 'txt'"):
        prepare(load_spec(path))


def test_syntax_error_names_template_line(tmp_path):
    path = write_project(tmp_path)
    (tmp_path / "prompt.jinja").write_text("ok\n{% if text %}unclosed\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"prompt\.jinja:\d+: template syntax error"):
        prepare(load_spec(path))


def test_missing_record_key_fails_at_render_not_silently(tmp_path):
    path = write_project(tmp_path)
    (tmp_path / "prompt.jinja").write_text("{{ record.keywords }} {{ text }}", encoding="utf-8")
    spec = load_spec(path)
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    with pytest.raises(InvalidInput, match=r"template error: .*keywords"):
        builder.messages(spec_examples(spec)[0][0])


def test_sandbox_blocks_unsafe_attributes(tmp_path):
    path = write_project(tmp_path)
    (tmp_path / "prompt.jinja").write_text("{{ text.__class__.__mro__ }}", encoding="utf-8")
    spec = load_spec(path)
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    with pytest.raises(InvalidInput, match="template error"):
        builder.messages(spec_examples(spec)[0][0])


def test_validate_renders_every_row(tmp_path):
    """A template that fails only on some rows (a record field one row lacks) fails validation, not the run."""
    rows = [{"sentence": f"第{i}条", "label_desc": "news_tech", "extra": "x"} for i in range(6)]
    rows += [{"sentence": "缺字段", "label_desc": "news_finance"}]
    path = write_project(tmp_path, rows=rows)
    (tmp_path / "prompt.jinja").write_text("{{ record['extra'] }} {{ text }}", encoding="utf-8")
    with pytest.raises(InvalidInput, match="template error"):
        prepare(load_spec(path))
