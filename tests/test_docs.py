"""The docs stay true to the code: the spec reference is the schema's, the README stays short and
opens with the two fresh-machine commands, and no relative link points at nothing."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
FRESH_MACHINE = [  # the project brief: one command runs the main job, one passes the tests
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/specrun run specs/tnews.yaml",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/ruff check . "
    "&& .venv/bin/ruff format --check . && .venv/bin/pytest -q",
]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_spec_reference", DOCS / "gen_spec_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spec_reference_is_generated_from_the_schema():
    gen = _generator()
    written = (DOCS / "spec-reference.md").read_text(encoding="utf-8")
    assert written == gen.render(gen.load_schema()), (
        f"docs/spec-reference.md is out of date with schemas/spec.schema.json: run `{gen.COMMAND}`"
    )


def test_readme_is_short_and_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "README.md is over 200 lines: move the detail to docs/"
    block = re.search(r"```[a-z]*\n(.*?)```", text, re.S)
    assert block, "README.md has no code block"
    assert block.group(1).splitlines()[:2] == FRESH_MACHINE


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_relative_links_point_at_files():
    broken = []
    for page in _pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code is not links
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            path = target.split("#")[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to nothing: " + ", ".join(broken)


def _child(node: dict[str, Any], name: str, schema: dict[str, Any], gen) -> dict[str, Any] | None:
    """The schema under `node` for key `name` (`<name>`: a mapping's values), or None."""
    node = gen.resolve(node, schema)
    options = [node, *(gen.resolve(o, schema) for o in node.get("oneOf", []))]
    for option in options:
        if name in option.get("properties", {}):
            return option["properties"][name]
        if name == "<name>" and isinstance(option.get("additionalProperties"), dict):
            return option["additionalProperties"]
    return None


def test_every_key_the_reference_lists_is_in_the_schema():
    gen = _generator()
    schema = gen.load_schema()
    roots = [schema] + [rule["then"] for rule in schema.get("allOf", []) if "then" in rule]  # task-only keys
    keys = gen.listed_keys((DOCS / "spec-reference.md").read_text(encoding="utf-8"))
    assert keys
    missing = []
    for key in keys:
        for root in roots:
            node: dict[str, Any] | None = root
            for name in key.split("."):
                node = _child(node, name, schema, gen) if node is not None else None
            if node is not None:
                break
        else:
            missing.append(key)
    assert not missing, f"docs/spec-reference.md lists keys the schema lacks: {missing}"
