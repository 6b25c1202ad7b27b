"""Providers are classes found by name in one table: nothing outside runner/providers/ compares a
provider's name, every registered class keeps the contract, and plugins come in through entry points."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from runner.core.errors import InvalidInput
from runner.providers import Provider
from runner.providers.registry import embedding_provider_config, provider_class, provider_names, provider_table

RUNNER = Path(__file__).resolve().parent.parent / "runner"
PROVIDERS = RUNNER / "providers"


def _literals(node: ast.AST) -> list[str]:
    """The string constants a comparison operand is, or holds (`name in ("local", "openai")`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [value for element in node.elts for value in _literals(element)]
    return []


def name_comparisons(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, code) of each place that compares a provider name or keys a dict by one, including the
    comparisons inside template strings (Jinja's `s.provider == 'local'`)."""
    found: list[tuple[int, str]] = []
    template = re.compile(
        r"""(==|!=|\bin)\s*['"](?P<a>[\w.-]+)['"]|['"](?P<b>[\w.-]+)['"]\s*(==|!=|\bin\b|\bnot in\b)"""
    )
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(value in names for operand in operands for value in _literals(operand)):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Dict):
            keys = [value for key in node.keys if key is not None for value in _literals(key)]
            if any(key in names for key in keys):
                found.append((node.lineno, ast.unparse(node)[:120]))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in template.finditer(node.value):
                if (match.group("a") or match.group("b")) in names:
                    found.append((node.lineno + node.value.count("\n", 0, match.start()), match.group(0)))
    return found


def test_the_scanner_finds_name_comparisons():
    names = {"local", "openai"}
    source = (
        'a = spec["provider"]["name"] != "local"\n'
        'b = name in ("x", "openai")\n'
        'c = {"local": 1}\n'
        "d = \"{{ 'free' if s.provider == 'local' else s.cost }}\"\n"
        'e = {"name": "x"}; f = "local model"; g = x == "openai_compatible"\n'
    )
    assert [line for line, _ in name_comparisons(source, names)] == [1, 2, 3, 4]


def test_nothing_outside_providers_compares_a_provider_name():
    names = set(provider_names())
    offences = [
        f"{path.relative_to(RUNNER.parent)}:{line}: {code}"
        for path in sorted(RUNNER.rglob("*.py"))
        if PROVIDERS not in path.parents
        for line, code in name_comparisons(path.read_text(encoding="utf-8"), names)
    ]
    assert not offences, "ask the provider class instead (provider_class(name).can_…):\n" + "\n".join(offences)


BOOLS = (
    "needs_key",
    "needs_base_url",
    "can_score",
    "scores_by_default",
    "can_embed",
    "can_guide",
    "caches_responses",
    "bills_usage",
)
OPTIONAL_TEXTS = ("default_model", "key_env", "default_scoring")


@pytest.mark.parametrize("name", provider_names())
def test_every_registered_provider_keeps_the_contract(name):
    cls = provider_class(name)
    assert isinstance(cls, type) and issubclass(cls, Provider) and cls.name == name
    assert not cls.__abstractmethods__ and cls.open.__func__ is not Provider.open.__func__, "open is the way in"
    for attribute in BOOLS:
        assert isinstance(getattr(cls, attribute), bool), attribute
    for attribute in OPTIONAL_TEXTS:
        assert getattr(cls, attribute) is None or isinstance(getattr(cls, attribute), str), attribute
    assert isinstance(cls.fine_tune_settings, frozenset) and all(isinstance(s, str) for s in cls.fine_tune_settings)
    assert isinstance(cls.ignored_keys, tuple) and all(isinstance(k, str) for k in cls.ignored_keys)
    assert cls.can_score or not (cls.scores_by_default or cls.default_scoring), "scores by default without scoring"
    assert not cls.needs_key or cls.key_env, "needs a key but names no environment variable for it"
    for hook in ("check_config", "check_scoring", "check_fine_tune", "preflight", "open", "open_jobs"):
        assert callable(getattr(cls, hook)), hook


def test_few_shot_embeddings_use_a_provider_that_can_embed():
    embedder = next(name for name in provider_names() if provider_class(name).can_embed)
    own = {"name": embedder, "model": "m", "batch_size": 2}
    assert embedding_provider_config(own) is own
    remote = embedding_provider_config({"name": "openai", "model": "gpt-4o-mini"})
    cls = provider_class(remote["name"])
    assert cls.can_embed and remote["model"] == cls.default_model and remote["batch_size"] == 8


# --- plugins: the specrun.providers entry-point group ------------------------------------------------------

TOY = '''
from runner.providers import Provider


class ToyProvider(Provider):
    """Answers every conversation with the same word."""

    name = "toy"
    default_model = "toy-1"
    bills_usage = False

    @classmethod
    def open(cls, config, cache=None):
        return cls()

    def describe(self):
        return {"model": "toy-1"}

    def chat(self, conversations, params, progress=None, guides=None, on_answer=None):
        raise NotImplementedError


NOT_A_PROVIDER = 42
'''


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """A folder on sys.path holding toyprov.py and its dist-info, as `pip install` would leave them."""
    (tmp_path / "toyprov.py").write_text(TOY, encoding="utf-8")
    info = tmp_path / "toyprov-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyprov\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "[specrun.providers]\n"
        "toy = toyprov:ToyProvider\n"
        "broken = toyprov:NOT_A_PROVIDER\n"
        "missing = toyprov_absent:Nothing\n"
        "local = toyprov:ToyProvider\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    provider_table.cache_clear()
    yield tmp_path
    provider_table.cache_clear()
    sys.modules.pop("toyprov", None)


def test_a_provider_installed_as_a_plugin_is_found_by_name(plugin_folder):
    cls = provider_class("toy")
    assert cls.__name__ == "ToyProvider" and issubclass(cls, Provider) and "toy" in provider_names()
    assert cls.default_model == "toy-1" and not cls.can_score
    assert provider_class("local").__name__ == "LocalProvider"  # a plugin cannot replace a built-in


@pytest.mark.parametrize("name", ["broken", "missing"])
def test_a_bad_plugin_is_one_line_naming_provider_name(plugin_folder, name):
    with pytest.raises(InvalidInput) as caught:
        provider_class(name)
    message = str(caught.value)
    assert "\n" not in message and "provider.name" in message and name in message


def test_an_unknown_provider_names_the_known_ones():
    with pytest.raises(InvalidInput, match="unknown provider 'nope'; known: local, openai"):
        provider_class("nope")
