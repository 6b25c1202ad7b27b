"""Hostile prompt templates: each failure is one exit-2 line naming the template and line, fast, bounded."""

from __future__ import annotations

import time

import pytest

from runner.cli import main
from runner.core.errors import InvalidInput
from runner.data.prompts import _compile
from runner.data.template_sandbox import MAX_OUTPUT_CHARS, render
from tests.conftest import write_project

CONTEXT = {"text": "hello", "labels": ["a", "b"], "examples": [], "record": {"n": 12_000_000}}
VARIABLES = tuple(CONTEXT)

# (template, message, line): every one gave a traceback (or hung) before the bounded sandbox.
HOSTILE = {
    "unknown filter": ("x\n{{ text | nosuch }}", "No filter named 'nosuch'", 2),
    "include": ("a\n{% include 'other.jinja' %}", r"uses \{% include %\}", 2),
    "import": ("{% import 'macros' as m %}", r"uses \{% import %\}", 1),
    "from import": ("{% from 'macros' import m %}", r"uses \{% import %\}", 1),
    "extends": ("{% extends 'base' %}", r"uses \{% extends %\}", 1),
    "range(10**9)": ("{% for i in range(10**9) %}x{% endfor %}", "larger than the template limit", 1),
    "nested loops": (
        "{% for i in range(100000) %}\n{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "steps",
        None,
    ),
    "division by zero": ("line one\n{{ 1 / 0 }}", "ZeroDivisionError", 2),
    "modulo by zero": ("{{ 1 % 0 }}", "ZeroDivisionError", 1),
    "recursion": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}\n\n{{ f(1) }}", "recursion too deep", None),
    "string repeat": ("{{ 'x' * 10**9 }}", "repeating a string", 1),
    "list repeat": ("{{ ([1] * 10**8) | length }}", "repeating a string or list", 1),
    "power": ("{{ 9 ** (9 ** 9) }}", "too large for a template", 1),
    "centre": ("{{ text | center(10**9) }}", "larger than the template limit", 1),
    "str.ljust": ("{{ text.ljust(10**8) }}", "larger than the template limit", 1),
    "format width": ("{{ '{:>999999999}'.format(1) }}", "format width", 1),
    "percent width": ("{{ '%999999999d' % 1 }}", "format width", 1),
    "format filter": ("{{ '%.9999999f' | format(1) }}", "format width", 1),
    "doubling with ~": (
        "{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "builds a value",
        1,
    ),
    "doubling with +": (
        "{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "builds a value",
        1,
    ),
    "join bomb": ("{{ range(100000) | join(text * 1000) }}", "join would build", 1),
    "output size": ("{% for i in range(100000) %}{{ text * 50 }}{% endfor %}", "output passes", None),
    "calling a string": ("{{ text() }}", "TypeError", 1),
    "type error": ("{{ 1 + 'a' }}", "TypeError", 1),
    "bad index type": ("{{ labels['x'] }}", "template error", 1),
    "attribute escape": ("{{ text.__class__.__mro__ }}", "unsafe", 1),
    "lipsum": ("{{ lipsum(10 ** 6) }}", "lipsum", 1),  # found by hypothesis: minutes in a loop no budget sees
    "str.join": ("{{ (text * 100).join(range(100000) | map('string')) }}", "join would build", 1),
    "str.replace": ("{{ (text * 1000).replace('l', text * 1000) }}", "replace would build", 1),
    "zfill": ("{{ text.zfill(10 ** 7) }}", "larger than the template limit", 1),
    "squaring": (
        "{% set ns = namespace(n=3) %}{% for i in range(99) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
        "bits",
        1,
    ),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_template_is_one_invalid_input_naming_template_and_line(name):
    source, message, line = HOSTILE[name]
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match=message) as caught:
        render(_compile(source, "p.jinja", VARIABLES), CONTEXT, "p.jinja")
    assert time.perf_counter() - started < 10
    where = caught.value.where or ""
    assert where.startswith("p.jinja")
    if line is not None:
        assert where == f"p.jinja:{line}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ labels | join('、') }}：{{ text }}", "a、b：hello"),
        ("{{ record.n }} {{ record.n | string }} {{ '%5d' | format(3) }}", "12000000 12000000     3"),
        ("{% for i in range(3) %}{{ loop.index }}{% if loop.last %}!{% endif %}{% endfor %}", "123!"),
        ("{{ range(4) | map('string') | join(',') }}", "0,1,2,3"),
        ("{{ ','.join(range(3) | map('string')) }}{{ text.replace('l', 'L') }}", "0,1,2heLLo"),
        (
            "{% for x in [[1, [2]], 3] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}{% endfor %}",
            "123",
        ),
        ("{{ 'ab' * 3 }}{{ 2 ** 10 }}{{ 7 // 2 }}{{ 'x' ~ 'y' }}", "ababab10243xy"),
        (
            "{{ '{} views'.format(record.n) }} {{ none | default(record.n, true) }} {{ '%d' | format(record.n) }}",
            "12000000 views 12000000 12000000",
        ),
    ],
)
def test_ordinary_templates_render_as_before(source, expected):
    assert render(_compile(source, "p.jinja", VARIABLES), CONTEXT, "p.jinja") == expected


def test_output_just_under_the_limit_is_fine():
    source = f"{{{{ text * {MAX_OUTPUT_CHARS // 5} }}}}"
    assert len(render(_compile(source, "p.jinja", VARIABLES), CONTEXT, "p.jinja")) == MAX_OUTPUT_CHARS


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("分类\n{{ 1 / 0 }}", r"prompt\.jinja:2: template error \(ZeroDivisionError\)"),
        ("{% include 'x' %}", r"prompt\.jinja:1: template uses \{% include %\}"),
        ("{{ text | nosuch }}", r"prompt\.jinja:1: template error: No filter named"),
    ],
)
def test_validate_reports_template_errors_as_exit_2(tmp_path, capsys, template, message):
    spec = write_project(tmp_path)
    (tmp_path / "prompt.jinja").write_text(template, encoding="utf-8")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert __import__("re").search(message, err.replace("\n", "")), err


def test_a_non_utf8_template_is_exit_2_naming_the_line(tmp_path, capsys):
    spec = write_project(tmp_path)
    (tmp_path / "prompt.jinja").write_bytes("第一行\n{{ text }}\n".encode() + "第三行".encode("gbk"))
    assert main(["validate", str(spec)]) == 2
    assert "prompt.jinja:3: not UTF-8" in capsys.readouterr().err.replace("\n", "")


def test_a_system_message_is_sandboxed_too(tmp_path, capsys):
    spec = write_project(tmp_path, {"prompt.system": "{{ 'x' * 10**9 }}"})
    assert main(["validate", str(spec)]) == 2
    assert "prompt.system" in capsys.readouterr().err


@pytest.mark.parametrize("template", ["分类：{{ labels | join('、') }}\n类别：", "{{ examples | length }} 条示例", ""])
def test_a_template_that_never_shows_the_example_is_exit_2(tmp_path, capsys, template):
    """It was accepted: every prompt the same text, and the run measured only the label prior."""
    spec = write_project(tmp_path)
    (tmp_path / "prompt.jinja").write_text(template, encoding="utf-8")
    assert main(["validate", str(spec)]) == 2
    assert "prompt.template: every eval example renders the same prompt" in capsys.readouterr().err
