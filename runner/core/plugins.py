"""One way to find code by name: built-in classes plus those other packages declare under an entry-point
group (`name = "package.module:Class"`), the convention of pytest and simonw/llm plugins. Task types
(`specrun.tasks`) and providers (`specrun.providers`) are both looked up through here."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from runner.core.errors import InvalidInput


def plugin_table(group: str, built_in: dict[str, str]) -> dict[str, str]:
    """name -> "module:Class", built-ins first; a plugin cannot replace a built-in name. Reads the
    installed packages' metadata: callers cache the table (and tests that install a plugin clear it)."""
    table = dict(built_in)
    for point in entry_points(group=group):
        table.setdefault(point.name, point.value)
    return table


def load_plugin(table: dict[str, str], name: object, base: type, kind: str, where: str) -> type:
    """The class registered under `name`, a subclass of `base`; anything else is one line naming `where`:
    an unknown name (with the known ones), a plugin that is broken or half installed, a wrong class."""
    target = table.get(name) if isinstance(name, str) else None
    if target is None:
        raise InvalidInput(f"unknown {kind} {name!r}; known: {', '.join(table)}", where=where)
    module, _, attribute = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        first_line = (str(error) or type(error).__name__).splitlines()[0]
        raise InvalidInput(f"{target} ({kind} {name!r}) could not be loaded: {first_line}", where=where) from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise InvalidInput(f"{target} ({kind} {name!r}) is not a specrun {base.__name__} class", where=where)
    return cls
