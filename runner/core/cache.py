"""Response cache: one SQLite file (WAL), so a rerun of an evaluated spec makes no API calls.

Keyed by provider, model, base URL, messages and parameters (never the API key). Only
successful answers are stored; errors are never cached. Answers are handed to one writer
thread that commits whatever has arrived as soon as it can (a few milliseconds behind the
API), so request threads never queue on the database and a killed run loses at most the
answers of that last moment.

Failures: a cache that cannot be opened (SPECRUN_CACHE is a file or unwritable, the file is
not a SQLite database) is a RuntimeFailure (exit 3) with one line, raised before any request
is sent. A cache that fails while the run is going (disk full, `database is locked` held by
another process for BUSY_TIMEOUT_S, a corrupt page) switches itself off, says so once on
stderr, and the run goes on without it: answers still reach the run folder, and nothing ever
waits on a writer that has died.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runner import cache_root
from runner.core.errors import RuntimeFailure
from runner.core.jsonl import dumps

BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's lock before the cache gives up
FAILURES = (sqlite3.Error, OSError, MemoryError)


def default_path() -> Path:
    return cache_root() / "responses.sqlite"


def cache_key(request: dict[str, Any]) -> str:
    return hashlib.sha256(dumps(request, sort_keys=True).encode()).hexdigest()


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.splitlines()[0]


class ResponseCache:
    def __init__(self, path: Path | None = None):
        self.path = path or default_path()
        self.disabled: str | None = None  # why the cache switched itself off mid-run, if it did
        where = f"response cache {self.path}" + (" (SPECRUN_CACHE)" if "SPECRUN_CACHE" in os.environ else "")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RuntimeFailure(
                f"{where}: cannot create the folder {self.path.parent} ({_reason(error)}); "
                "point SPECRUN_CACHE at a writable folder or run with --no-cache"
            ) from None
        if self.path.exists() and not self.path.is_file():
            raise RuntimeFailure(f"{where} is not a file; move it away or run with --no-cache")
        try:
            self._db = self._connect()
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, request TEXT, response TEXT, created REAL)"
            )
            self._db.commit()
        except FAILURES as error:
            advice = (
                "it is not a usable SQLite database: delete it (answers already in run folders are kept)"
                if isinstance(error, sqlite3.DatabaseError) and "locked" not in str(error)
                else "cannot open it"
            )
            raise RuntimeFailure(f"{where}: {advice} ({_reason(error)}); or run with --no-cache") from None
        self._lock = threading.Lock()  # guards the reader connection
        self._cond = threading.Condition()  # guards what follows: rows waiting, rows handed in, rows settled
        self._pending: list[tuple[str, str, str]] = []
        self._queued = 0
        self._settled = 0
        self._writer: threading.Thread | None = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _disable(self, error: BaseException) -> None:
        """Switch the cache off for the rest of this process, once, aloud; drop what was waiting."""
        with self._cond:
            if self.disabled is None:
                self.disabled = _reason(error)
                print(
                    f"warning: response cache {self.path} failed ({self.disabled}); going on without it "
                    "(answers still go to the run folder)",
                    file=sys.stderr,
                    flush=True,
                )
            self._pending.clear()
            self._settled = self._queued
            self._cond.notify_all()

    def get(self, request: dict[str, Any]) -> dict[str, Any] | None:
        return self.get_many([request]).get(cache_key(request))

    def get_many(self, requests: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """{cache key: response} for those requests that are cached, in one query per 500.

        A row that does not hold a JSON object is a miss (it is asked again and overwritten).
        """
        keys = [cache_key(request) for request in requests]
        found: dict[str, dict[str, Any]] = {}
        if self.disabled:
            return found
        try:
            with self._lock:
                for start in range(0, len(keys), 500):
                    batch = keys[start : start + 500]
                    marks = ",".join("?" * len(batch))
                    rows = self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", batch)
                    for key, response in rows:
                        answer = _answer(response)
                        if answer is not None:
                            found[key] = answer
        except FAILURES as error:
            self._disable(error)
        return found

    def put(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        if self.disabled:
            return
        row = (cache_key(request), dumps(request), dumps(response))
        with self._cond:
            if self.disabled:
                return
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="specrun-cache", daemon=True)
                self._writer.start()
            self._pending.append(row)
            self._queued += 1
            self._cond.notify_all()

    def _write_loop(self) -> None:
        try:
            db = self._connect()
        except FAILURES as error:
            self._disable(error)
            return
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                rows, self._pending = self._pending, []
            try:
                db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, julianday('now'))", rows)
                db.commit()
            except BaseException as error:  # the writer never dies silently: waiting flushes would hang
                self._disable(error)
                return
            with self._cond:
                self._settled += len(rows)
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every answer handed to put() is committed (or the cache has switched itself off).

        False when timeout ran out first.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._settled >= self._queued or self.disabled is not None, timeout)

    def stats(self) -> dict[str, Any]:
        self.flush()
        try:
            with self._lock:
                (count,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
            size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        except FAILURES as error:
            raise RuntimeFailure(f"response cache {self.path}: cannot read it ({_reason(error)})") from None
        return {"path": str(self.path), "entries": count, "bytes": size}

    def clear(self) -> int:
        self.flush()
        try:
            with self._lock:
                deleted = self._db.execute("DELETE FROM responses").rowcount
                self._db.commit()
                self._db.execute("VACUUM")
        except FAILURES as error:
            raise RuntimeFailure(
                f"response cache {self.path}: cannot clear it ({_reason(error)}); delete the file instead"
            ) from None
        return deleted


def _answer(stored: Any) -> dict[str, Any] | None:
    """A cached answer (a JSON object), or None if the row is damaged: callers check its fields."""
    try:
        answer = json.loads(stored)
    except (TypeError, ValueError, RecursionError):
        return None
    return answer if isinstance(answer, dict) else None
