"""`specrun cache [info|clear]`: the response cache's size, or emptying it."""

from __future__ import annotations

import argparse

from rich.console import Console

from runner.core.cache import ResponseCache
from runner.core.errors import EXIT_OK


def cache_command(args: argparse.Namespace, console: Console) -> int:
    cache = ResponseCache()
    if args.action == "clear":
        console.print(f"cleared {cache.clear()} cached responses from {cache.path}")
    stats = cache.stats()
    console.print(f"{stats['path']}: {stats['entries']} responses, {stats['bytes'] / 1e6:.1f} MB")
    return EXIT_OK
