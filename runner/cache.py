"""Response cache: one SQLite file (WAL), so a rerun of an evaluated spec makes no API calls.

Keyed by provider, model, base URL, messages and parameters (never the API key). Only
successful answers are stored; errors are never cached. Each answer is committed as it
arrives, so a run killed mid-evaluation loses nothing it paid for.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any


def default_path() -> Path:
    return Path(os.environ.get("SPECRUN_CACHE", Path.home() / ".cache" / "specrun")) / "responses.sqlite"


def cache_key(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path | None = None):
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, request TEXT, response TEXT, created REAL)"
        )
        self._db.commit()

    def get(self, request: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (cache_key(request),)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, julianday('now'))",
                (cache_key(request), json.dumps(request, ensure_ascii=False), json.dumps(response, ensure_ascii=False)),
            )
            self._db.commit()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"path": str(self.path), "entries": count, "bytes": size}

    def clear(self) -> int:
        with self._lock:
            deleted = self._db.execute("DELETE FROM responses").rowcount
            self._db.commit()
            self._db.execute("VACUUM")
        return deleted

    def close(self) -> None:
        self._db.close()
