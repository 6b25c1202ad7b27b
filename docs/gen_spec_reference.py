"""Write docs/spec-reference.md from schemas/spec.schema.json: run `python docs/gen_spec_reference.py`.

The schema is the one place keys, defaults and their meaning are written down (runner/config/defaults.py
applies its `default`s), so the reference is generated from it rather than kept by hand;
tests/test_docs.py fails when the two drift apart.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "spec.schema.json"
OUTPUT = ROOT / "docs" / "spec-reference.md"
COMMAND = "python docs/gen_spec_reference.py"

INTRO = f"""# Spec reference

What every key of a spec means, its type and its default. This page is generated from the
descriptions in [`schemas/spec.schema.json`](../schemas/spec.schema.json) by `{COMMAND}`: edit the
schema, not this page (tests/test_docs.py fails until the page is regenerated). A key with no default
here is unset unless you set it; defaults that depend on other keys (the task, the provider) are said
in the key's description. `<name>` in a key stands for a name you choose (a label, an entity type, a
dotted spec key). Relative paths resolve against the spec file; paths given with `--set` resolve
against the working directory. For a walk through one spec, see the [README](../README.md).
"""


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def resolve(node: dict[str, Any], root: dict[str, Any], base: Path = SCHEMA) -> dict[str, Any]:
    """Follow `$ref`s: '#/json/pointer' inside the schema, or 'file.json#/pointer' beside it."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        seen += 1
        if seen > 32:
            raise ValueError(f"$ref loop at {node['$ref']}")
        target, _, pointer = node["$ref"].partition("#")
        document = load_schema(base.parent / target) if target else root
        for part in [p for p in pointer.split("/") if p]:
            document = document[part.replace("~1", "/").replace("~0", "~")]
        extra = {k: v for k, v in node.items() if k != "$ref"}  # siblings of $ref (a description) win
        node = {**document, **extra}
    return node


def type_of(node: dict[str, Any], root: dict[str, Any]) -> str:
    """A short human type: 'integer', 'string or null', 'one of: a, b', 'array of string'."""
    node = resolve(node, root)
    if "const" in node:
        return json.dumps(node["const"], ensure_ascii=False)
    if "enum" in node:
        return "one of: " + ", ".join(f"`{value}`" for value in node["enum"])
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(type_of(option, root) for option in node[key])
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array" and isinstance(node.get("items"), dict):
        inner = type_of(node["items"], root)
        return f"array of {inner}" if " " not in inner else f"array of ({inner})"
    if kind == "object" and "properties" not in node and isinstance(node.get("additionalProperties"), dict):
        return "mapping"
    return kind or "any"


def rows(node: dict[str, Any], root: dict[str, Any], path: str) -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for `node` and every key below it, depth first."""
    node = resolve(node, root)
    default = f"`{json.dumps(node['default'], ensure_ascii=False)}`" if "default" in node else ""
    yield path, type_of(node, root), default, node.get("description", "")
    for name, child in node.get("properties", {}).items():
        yield from rows(child, root, f"{path}.{name}")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "properties" not in node:
        yield from rows(extra, root, f"{path}.<name>")
    for option in node.get("oneOf", []):  # an object form of a mapping's value ({name, description})
        option = resolve(option, root)
        for name, child in option.get("properties", {}).items():
            yield from rows(child, root, f"{path}.{name}")


def task_rules(schema: dict[str, Any]) -> list[str]:
    """The `if task == X then ...` rules: per task type, the keys it requires and the keys only it takes."""
    lines = []
    for rule in schema.get("allOf", []):
        task = rule.get("if", {}).get("properties", {}).get("task", {}).get("const")
        if task is None:
            continue
        then = resolve(rule.get("then", {}), schema)
        needs = [f"`{key}`" for key in then.get("required", [])]
        for key, sub in then.get("properties", {}).items():
            needs += [f"`{key}.{inner}`" for inner in resolve(sub, schema).get("required", [])]
        lines += [f"### `task: {task}`", "", f"Requires {', '.join(needs) or 'nothing more'}.", ""]
        own = [
            row
            for key, sub in then.get("properties", {}).items()
            for name, child in resolve(sub, schema).get("properties", {}).items()
            for row in rows(child, schema, f"{key}.{name}")
        ]
        if own:
            lines += ["Keys only this task type takes:", "", *table(own), ""]
    return lines


def table(entries: list[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    return lines + [
        f"| `{key}` | {cell(kind)} | {cell(default)} | {cell(text)} |" for key, kind, default, text in entries
    ]


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: no column breaks, no `<name>` taken for an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def render(schema: dict[str, Any]) -> str:
    required = ", ".join(f"`{key}`" for key in schema.get("required", []))
    out = [INTRO, "## Top level", "", schema.get("description", ""), "", f"Required: {required}.", ""]
    for name, node in schema["properties"].items():
        node = resolve(node, schema)
        entries = list(rows(node, schema, name))
        out += [f"## `{name}`", ""]
        if len(entries) > 1 and node.get("description"):  # a section: its description once, above the table
            out += [node["description"], ""]
            entries[0] = (*entries[0][:3], "")
        out += [*table(entries), ""]
    rules = task_rules(schema)
    if rules:
        out += ["## Per task type", "", *rules]
    return "\n".join(out).rstrip("\n") + "\n"


def listed_keys(markdown: str) -> list[str]:
    """The dotted keys in the reference's tables (the first cell of each row)."""
    keys = []
    for line in markdown.splitlines():
        if line.startswith("| `"):
            keys.append(line.split("`")[1])
    return keys


def undescribed(schema: dict[str, Any]) -> list[str]:
    """Keys a user can set that the schema does not explain yet."""
    return [
        key
        for name, node in schema["properties"].items()
        for key, _, _, description in rows(node, schema, name)
        if not description
    ]


def main() -> int:
    OUTPUT.write_text(render(load_schema()), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
