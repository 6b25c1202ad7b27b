"""Ctrl-C and SIGTERM: one graceful stop, then a quiet forced one.

The first SIGINT or SIGTERM raises KeyboardInterrupt in the main thread: request pools stop
starting requests (providers/remote.py `parallel`), the cache commits what it has, the
pipeline writes manifest status "interrupted", and the CLI exits 130. A second signal while
that is happening leaves at once with exit 130 (os._exit: no traceback from a cleanup that
was itself interrupted). When the process is about to exit (the CLI's own entry point), further
signals are ignored once the block is left after one: the interpreter's shutdown would otherwise
restore the default action and die of the signal. Callers in-process (tests) get their handlers back.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def graceful_interrupts(exiting: bool = False) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt once, then force exit 130.

    exiting: the process ends right after the block (the console script), so after a signal
    later ones are ignored rather than handed back to the default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            raise KeyboardInterrupt
        os.write(2, b"\nstopped at once (second interrupt); run the same command again to resume\n")
        os._exit(EXIT_INTERRUPTED)

    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_IGN if received and exiting else old)
