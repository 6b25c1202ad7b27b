"""The package's shape: no import cycles (counting imports inside functions and under TYPE_CHECKING too), and one
folder per task type."""

from __future__ import annotations

import ast
from pathlib import Path

from runner.tasks import BUILT_IN, Task, task_class

RUNNER = Path(__file__).resolve().parent.parent / "runner"


def _module_name(path: Path) -> str:
    parts = path.relative_to(RUNNER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in RUNNER.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Annotation-only imports (`if TYPE_CHECKING:`) count: a layer that needs another's types to be
        # read depends on it as much as one that calls it.
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*stack[stack.index(child) :], child]
            if child not in state and (found := visit(child)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, " → ".join(find_cycle(import_graph()) or [])


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_spec_and_trainer_stay_apart_from_what_they_should_not_know():
    graph = import_graph()
    assert not graph["runner.config.spec"] & {
        "runner.data.dataset",
        "runner.data.prompts",
        "runner.data.fewshot",
        "runner.pipeline",
    }
    assert "runner.providers.local.provider" not in graph["runner.providers.local.trainer"]


def test_each_task_type_is_one_package_implementing_the_contract():
    for name in BUILT_IN:
        assert (RUNNER / "tasks" / name / "__init__.py").is_file()
        cls = task_class(name)
        assert issubclass(cls, Task) and cls.name == name and not cls.__abstractmethods__
