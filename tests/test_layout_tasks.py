"""A task type is one folder: no code outside runner/tasks/<type>/ names a task type or one of its own rows.

Read with ast over runner/**/*.py: a string constant (f-string pieces included) equal to a task type's
name, its breakdown key or one of its task-specific rows is a leak, unless it sits in that task's folder.
The one exception is the registry's table of built-ins (runner/tasks/__init__.py's BUILT_IN)."""

from __future__ import annotations

import ast
from pathlib import Path

from runner.tasks import BUILT_IN, task_class

RUNNER = Path(__file__).resolve().parent.parent / "runner"
ROWS = {  # rows (and row suffixes) only one task type produces
    "classification": {"ensemble", "probe", "_uncalibrated"},
    "extraction": set(),
}


def words_of(name: str) -> set[str]:
    cls = task_class(name)
    return {name, *ROWS.get(name, set()), *([cls.breakdown_key] if cls.breakdown_key else [])}


def leaks() -> list[str]:
    owners = {word: name for name in BUILT_IN for word in words_of(name)}
    found = []
    for path in sorted(RUNNER.rglob("*.py")):
        relative = path.relative_to(RUNNER)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exempt: set[int] = set()
        if relative == Path("tasks/__init__.py"):
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "BUILT_IN" for t in node.targets):
                    exempt |= {id(n) for n in ast.walk(node.value)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in exempt:
                continue
            owner = owners.get(node.value)
            if owner and relative.parts[:2] != ("tasks", owner):
                found.append(f"runner/{relative}:{node.lineno}: {node.value!r} belongs in runner/tasks/{owner}/")
    return found


def test_nothing_outside_a_task_folder_names_its_type_or_its_rows():
    assert not leaks(), "\n".join(leaks())


def test_the_check_sees_a_leak(tmp_path, monkeypatch):
    leaky = RUNNER / "outputs" / "_leak_probe_for_test.py"
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: [leaky] if self == RUNNER else Path.glob(self, pattern))
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: 'if row == "probe": kind = "per_type"')
    assert len(leaks()) == 2
