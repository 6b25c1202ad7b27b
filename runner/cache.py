"""Response cache: one SQLite file (WAL), so a rerun of an evaluated spec makes no API calls.

Keyed by provider, model, base URL, messages and parameters (never the API key). Only
successful answers are stored; errors are never cached. Answers are handed to one writer
thread that commits whatever has arrived as soon as it can (a few milliseconds behind the
API), so request threads never queue on the database and a killed run loses at most the
answers of that last moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Iterable
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
        self._lock = threading.Lock()  # guards the reader connection
        self._db = self._connect()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, request TEXT, response TEXT, created REAL)"
        )
        self._db.commit()
        self._pending: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def get(self, request: dict[str, Any]) -> dict[str, Any] | None:
        return self.get_many([request]).get(cache_key(request))

    def get_many(self, requests: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """{cache key: response} for those requests that are cached, in one query per 500."""
        keys = [cache_key(request) for request in requests]
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                batch = keys[start : start + 500]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", batch)
                found.update((key, json.loads(response)) for key, response in rows)
        return found

    def put(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_loop, name="specrun-cache", daemon=True)
                    self._writer.start()
        self._pending.put(
            (cache_key(request), json.dumps(request, ensure_ascii=False), json.dumps(response, ensure_ascii=False))
        )

    def _write_loop(self) -> None:
        db = self._connect()
        while True:
            rows = [self._pending.get()]
            while True:
                try:
                    rows.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, julianday('now'))", rows)
            db.commit()
            for _ in rows:
                self._pending.task_done()

    def flush(self) -> None:
        """Return once every answer handed to put() is committed."""
        self._pending.join()

    def stats(self) -> dict[str, Any]:
        self.flush()
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"path": str(self.path), "entries": count, "bytes": size}

    def clear(self) -> int:
        self.flush()
        with self._lock:
            deleted = self._db.execute("DELETE FROM responses").rowcount
            self._db.commit()
            self._db.execute("VACUUM")
        return deleted
