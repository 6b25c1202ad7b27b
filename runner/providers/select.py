"""Which provider a spec's `provider` section names: checked cheaply first, then opened.

Kept apart from the interface (providers/__init__.py) so that implementations import the
interface and nothing imports an implementation except through here.
"""

from __future__ import annotations

from typing import Any

from runner.core.cache import ResponseCache
from runner.providers import Provider


def preflight(config: dict[str, Any]) -> None:
    """Fail now, with the spec key named, on what would fail later: a missing key, a bad base URL,
    a local model that is not there. Loads nothing and sends nothing."""
    if config["name"] == "local":
        from runner.providers.local.provider import check_model_ref

        check_model_ref(config["model"])
        return
    from runner.providers.api.client import preflight as check_remote

    check_remote(config)


def open_provider(config: dict[str, Any], cache: ResponseCache | None = None) -> Provider:
    """The provider a spec's `provider` section names (loading the model if local)."""
    if config["name"] == "local":
        from runner.providers.local.provider import LocalProvider

        return LocalProvider(config["model"], batch_size=config["batch_size"])
    from runner.providers.api.client import ChatAPIProvider

    return ChatAPIProvider(config, cache)
