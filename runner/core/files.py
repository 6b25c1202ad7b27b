"""Writing a file whole or not at all: every file specrun writes goes through `write_atomic`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    A crash or a kill leaves the old file or the new one, never half of one; the temporary file is
    removed on failure. OSError reaches the caller, who knows which spec key or command to name.
    """
    path = Path(path)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path
