"""Which class answers for a spec's `provider.name`: one table, built-ins and plugins alike.

Built-in providers are listed here; a package installed beside specrun adds its own through the
`specrun.providers` entry-point group (`name = "package.module:Class"`), the convention of pytest
and simonw/llm plugins. Nothing else in specrun maps a provider name to code.
"""

from __future__ import annotations

import functools
from typing import Any

from runner.core.errors import InvalidInput
from runner.core.plugins import load_plugin, plugin_table
from runner.providers import Provider

ENTRY_POINT_GROUP = "specrun.providers"
EMBEDDING_FALLBACK = {"name": "local", "batch_size": 8}  # embeds few-shot texts when the spec's provider cannot
BUILT_IN = {
    "local": "runner.providers.local.provider:LocalProvider",
    "openai": "runner.providers.api.openai:OpenAIProvider",
    "zhipuai": "runner.providers.api.zhipuai:ZhipuAIProvider",
    "openai_compatible": "runner.providers.api.compatible:OpenAICompatibleProvider",
}


@functools.cache
def provider_table() -> dict[str, str]:
    """name -> "module:Class", built-ins first; a plugin cannot replace a built-in name."""
    return plugin_table(ENTRY_POINT_GROUP, BUILT_IN)


def provider_names() -> list[str]:
    return list(provider_table())


def provider_class(name: str) -> type[Provider]:
    """The class registered under `name`; InvalidInput naming provider.name for an unknown one."""
    return load_plugin(provider_table(), name, Provider, "provider", "provider.name")


def preflight(config: dict[str, Any]) -> None:
    """Fail now, with the spec key named, on what would fail later. Loads nothing and sends nothing."""
    provider_class(config["name"]).preflight(config)


def open_provider(config: dict[str, Any], cache: Any = None) -> Provider:
    """The provider a spec's `provider` section names (loading the model if it is local)."""
    return provider_class(config["name"]).open(config, cache)


def embedding_provider_config(config: dict[str, Any]) -> dict[str, Any]:
    """The provider section to open for `few_shot.embedding: llm`: the spec's own provider when it can
    embed, else the embedded model (its default model)."""
    if provider_class(config["name"]).can_embed:
        return config
    fallback = provider_class(EMBEDDING_FALLBACK["name"])
    return {**EMBEDDING_FALLBACK, "model": fallback.default_model}


def capability(provider_name: str, attribute: str, fallback: Any) -> Any:
    """A provider class's capability attribute; `fallback` when the name is no longer registered
    (a report of an old run must not fail because a plugin provider was uninstalled since)."""
    try:
        return getattr(provider_class(provider_name), attribute)
    except InvalidInput:
        return fallback
