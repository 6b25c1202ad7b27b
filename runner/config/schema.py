"""The spec schema, composed: the generic base plus every registered task type's and provider's part.

Each task type brings its own keys (labels, entities, its data and evaluation keys) and its rules
("task X needs key Y") in `Task.schema()`; a provider may bring keys of its own section in
`Provider.schema()`. The `task` and `provider.name` enums are the registered names. So the schema a
spec is validated and defaulted with always matches the code that reads it, plugins included.
schemas/spec.schema.json is the built-ins' composition, kept for readers and editors; write it with
`python -m runner.config.schema` (tests/test_schema_compose.py keeps the two equal).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from runner import RESOURCES
from runner.core.errors import InvalidInput
from runner.providers import registry as providers
from runner.tasks import BUILT_IN, task_class, task_table

BASE_PATH = RESOURCES / "spec.base.schema.json"  # schemas/spec.base.schema.json in the checkout
COMPOSED_PATH = RESOURCES / "spec.schema.json"  # schemas/spec.schema.json: the built-ins' composition


def spec_schema() -> dict[str, Any]:
    """The schema for the task types and providers registered now (read-only: callers copy what they change)."""
    return _composed(tuple(task_table()), tuple(providers.provider_table()))


@functools.cache
def _composed(tasks: tuple[str, ...], provider_names: tuple[str, ...]) -> dict[str, Any]:
    base = json.loads(BASE_PATH.read_text(encoding="utf-8"))
    return compose(base, _loadable(tasks, task_class), _loadable(provider_names, providers.provider_class))


def _loadable(names: tuple[str, ...], load: Any) -> dict[str, dict[str, Any]]:
    """Each name's schema part; a plugin that cannot be loaded is left out, so one broken package does
    not stop every spec (a spec that names it gets the plugin's own error: runner/config/spec.py)."""
    parts = {}
    for name in names:
        try:
            parts[name] = load(name).schema()
        except InvalidInput:
            continue
    return parts


def compose(
    base: dict[str, Any], fragments: dict[str, dict[str, Any]], provider_parts: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """base + each task's fragment (its properties merged in, its `then` applied when task is its name)
    + each provider's keys under `provider` (provider.name's enum lists them all)."""
    schema = copy.deepcopy(base)
    if provider_parts is not None:
        section = schema["properties"]["provider"]
        section["properties"]["name"]["enum"] = list(provider_parts)
        for name, part in provider_parts.items():
            _merge(section["properties"], part.get("properties") or {}, f"provider {name}", ("provider",))
    task = schema["properties"]["task"]
    task["enum"] = list(fragments)
    described = [fragment["description"] for fragment in fragments.values() if fragment.get("description")]
    if described:
        task["description"] = " ".join(described)
    for name, fragment in fragments.items():
        _merge(schema["properties"], fragment.get("properties") or {}, name, ())
        if "then" in fragment:
            rule = {"if": {"properties": {"task": {"const": name}}, "required": ["task"]}, "then": fragment["then"]}
            schema.setdefault("allOf", []).append(rule)
    return schema


def _merge(into: dict[str, Any], adding: dict[str, Any], task: str, path: tuple[str, ...]) -> None:
    """Add a fragment's keys; a key another part already defines differently is the plugin's error."""
    for key, value in adding.items():
        here = (*path, key)
        if key not in into:
            into[key] = copy.deepcopy(value)
        elif isinstance(into[key], dict) and isinstance(value, dict) and set(value) <= {"properties"}:
            _merge(into[key].setdefault("properties", {}), value.get("properties") or {}, task, here)
        elif into[key] != value:
            raise InvalidInput(
                f"{task if task.startswith('provider ') else f'task type {task!r}'} defines spec key {'.'.join(k for k in here if k != 'properties')} "
                "differently from specrun or another task type",
                where="provider.name" if task.startswith("provider ") else "task",
            )


def built_in_schema() -> dict[str, Any]:
    """The composition schemas/spec.schema.json holds: the built-in task types and providers only."""
    base = json.loads(BASE_PATH.read_text(encoding="utf-8"))
    return compose(
        base,
        {name: task_class(name).schema() for name in BUILT_IN},
        {name: providers.provider_class(name).schema() for name in providers.BUILT_IN},
    )


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    target = Path(COMPOSED_PATH).resolve()
    target.write_text(render(built_in_schema()), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
