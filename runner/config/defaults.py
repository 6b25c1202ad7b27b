"""Every spec default, in one place: the schema's `default` keywords, plus the few that depend on
other keys (written out below, each with its reason; those that depend on the task type are the
task's, `Task.apply_defaults`).

The schema is the home because it is also the documentation (`specrun` users read it and the
README points at it); tests/test_defaults.py checks that what the schema and the README say is
what a loaded spec gets.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from runner import RESOURCES
from runner.providers.registry import provider_class
from runner.tasks import task_class

SCHEMA_PATH = RESOURCES / "spec.schema.json"  # schemas/spec.schema.json in the checkout
FORMAT_BY_SUFFIX = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    **dict.fromkeys((".conll", ".bio", ".bmes", ".bioes", ".iob", ".iob2"), "conll"),  # CoNLL/BIO tagged tokens
}


def apply_defaults(doc: dict[str, Any], schema: dict[str, Any]) -> None:
    """Fill `doc` in place: the task's defaults first (a default that depends on the task wins over a
    generic one: issue 24's extraction answers cut at the generic 16 tokens), then the schema's,
    then the defaults that depend on other keys."""
    given_provider_keys = set(doc.get("provider") or {})
    provider_name = (doc.get("provider") or {}).get(
        "name", schema["properties"]["provider"]["properties"]["name"]["default"]
    )
    doc.setdefault("provider", {}).setdefault("params", {})
    doc.setdefault("evaluation", {})
    doc.setdefault("data", {})
    backend = provider_class(provider_name)  # what the provider can do decides the defaults below
    task_class(doc["task"]).apply_defaults(doc, backend)
    _fill(doc, schema, schema)
    provider = doc["provider"]
    if backend.default_model is not None:
        provider.setdefault("model", backend.default_model)
    for key in set(backend.ignored_keys) - given_provider_keys:
        provider.pop(key, None)
    data = doc.setdefault("data", {})
    if "path" in data:
        data.setdefault("format", FORMAT_BY_SUFFIX.get(Path(data["path"]).suffix.lower(), "jsonl"))
    for split in doc["splits"].values():
        if "path" in split:
            split.setdefault("take", "first")  # a file of its own: all of its rows unless n says otherwise
    evaluation = doc["evaluation"]
    if evaluation["method"] == "score" and backend.default_scoring is not None:
        provider.setdefault("scoring", backend.default_scoring)  # OpenAI returns no prompt logprobs
    fine_tune = doc["fine_tune"]
    sections = _resolve(schema["properties"]["fine_tune"], schema)["properties"]
    for key in sorted(backend.fine_tune_settings & set(sections)) if fine_tune["enabled"] else ():
        if "properties" in _resolve(sections[key], schema):  # a provider's own settings block (fine_tune.local)
            _fill(fine_tune.setdefault(key, {}), sections[key], schema)


def _fill(node: dict[str, Any], schema_node: dict[str, Any], root: dict[str, Any]) -> None:
    schema_node = _resolve(schema_node, root)
    for key, child in schema_node.get("properties", {}).items():
        child = _resolve(child, root)
        if key not in node and "default" in child:
            node[key] = copy.deepcopy(child["default"])
        if isinstance(node.get(key), dict):
            _fill(node[key], child, root)


def _resolve(schema_node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema_node.get("$ref")
    if not ref:
        return schema_node
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def documented_defaults(schema: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, default) for every `default` in the schema, for the test that keeps docs honest."""
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        node = _resolve(node, schema)
        for key, child in node.get("properties", {}).items():
            resolved = _resolve(child, schema)
            if "default" in resolved:
                found.append(((*path, key), resolved["default"]))
            walk(resolved, (*path, key))

    walk(schema, ())
    return found
