"""The run folder: runs/<spec name>/<timestamp>/, and finding an unfinished one to resume.

A run is identified by its spec hash (resolved spec + the bytes of its data and template) and
its --limit. Running the same spec again after a Ctrl-C or a kill picks up the newest
unfinished folder with that identity, so nothing already computed is computed again.

A run that *failed* is not resumed: the failure may come from what its folder holds (a
malformed stored answer crashes every resume the same way, with or without --no-cache), and
the folder cannot tell. The next run starts a new folder and says so; answers already bought
are still in the response cache, so with the cache on nothing is paid for twice.

A folder is locked (flock) by the process running in it: a second `specrun run` of the same
spec fails with exit 3 naming the holder's pid instead of buying every answer a second time.
The kernel drops the lock when the holder dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from runner import PROJECT_ROOT, __version__
from runner.core.errors import InvalidInput, RuntimeFailure
from runner.core.files import write_atomic
from runner.core.jsonl import dumps, read_jsonl, repair_tail

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

PACKAGES = ("torch", "transformers", "scikit-learn", "tiktoken", "jinja2", "jsonschema", "openai", "zhipuai")

LOCK_NAME = ".lock"  # flocked while a process runs in the folder; holds that process's pid
RESUMABLE = ("running", "interrupted")  # "running": the process was killed before it could say more
DEATHS_NAME = ".deaths"  # one JSON line per time the folder was found "running" with nobody holding it
#: A folder found dead this many times (a native crash repeats on every resume) is resumed no more.
MAX_DEATHS = 2


@dataclass
class DeadRun:
    """A run whose process died without a word (SIGKILL, the OOM killer, a segfault in native code):
    its manifest still says "running" and nobody holds its lock. Found when the spec is run again,
    so that run can write the dead one's report.html/summary.json/junit.xml (`manifest` says why)."""

    folder: Path
    pid: int | None  # the dead process, from its lock file
    deaths: int  # times this folder has been found so, this one included
    resumed: bool  # False: it died MAX_DEATHS times and is left as failed; a new folder starts
    manifest: dict[str, Any]  # as recorded, with status and error saying what happened


#: Folders this process holds, so opening the same folder again in-process (tests, notebooks) reuses the lock.
_HELD: dict[Path, int] = {}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RunFolder:
    dead: DeadRun | None = None  # set by open(): the run of this spec found dead (its outputs are to be written)

    def __init__(self, path: Path):
        self.path = path
        self._append_lock = threading.Lock()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _failure(f"cannot create the run folder: {_reason(error)}", str(path)) from None
        if not self.path.is_dir():
            raise _failure("cannot create the run folder: a file is in the way", str(path))

    @classmethod
    def open(
        cls, out_dir: Path, name: str, identity: dict[str, Any], say: Callable[[str], None] = _say
    ) -> tuple[RunFolder, bool]:
        """The newest resumable run with this identity (resumed=True), else a new folder; locked either way.

        Raises RuntimeFailure (exit 3) when `out_dir` cannot hold run folders, or when another
        live process holds a folder with this identity.
        """
        parent = out_dir / name
        make_dir(out_dir, "--out")
        make_dir(parent, "--out")
        with _DirectoryLock(parent):  # one process at a time chooses (or creates) a folder here
            for folder in sorted(parent.iterdir(), reverse=True):
                if not folder.is_dir():
                    continue
                holder = _holder(folder)
                recorded = _read_manifest(folder, say) if (folder / "manifest.json").exists() else None
                if holder is not None:
                    if (recorded or {}).get("identity") == identity or _claimed(folder) == identity:
                        raise _failure(
                            f"another specrun (pid {holder}) is running this spec in this folder; "
                            "wait for it to finish or stop it, then run again",
                            str(folder),
                        )
                    continue
                if recorded is None or recorded.get("identity") != identity:
                    continue
                status = recorded.get("status")
                if status == "succeeded":
                    break  # the newest run with this identity finished: a rerun is a new run
                # Dead: "running", yet nobody holds the lock; unless this process runs in it (tests,
                # notebooks), or there are no locks to tell (Windows: resumed as before, never judged).
                judged = status == "running" and fcntl is not None and folder.resolve() not in _HELD
                dead = _found_dead(folder, recorded, say) if judged else None
                if dead is not None and not dead.resumed:
                    fresh = cls._new(parent, identity)
                    fresh.dead = dead
                    return fresh, False
                if status in RESUMABLE:
                    run = cls(folder)
                    run._lock(identity)
                    run.dead = dead
                    return run, True
                say(
                    f"note: the last run of this spec, {folder}, {status or 'ended'}"
                    f"{': ' + str(recorded.get('error')) if recorded.get('error') else ''}; it is left as it is "
                    "and a new run folder starts (answers already bought come from the response cache)"
                )
                break
            return cls._new(parent, identity), False

    @classmethod
    def _new(cls, parent: Path, identity: dict[str, Any]) -> RunFolder:
        """A new, locked folder under parent named by the time (the caller holds parent's lock)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path, suffix = parent / stamp, 1
        while path.exists():
            suffix += 1
            path = parent / f"{stamp}-{suffix}"
        run = cls(path)
        run._lock(identity)
        return run

    def _lock(self, identity: dict[str, Any] | None = None) -> None:
        """Hold this folder's lock for as long as this object lives (or until close())."""
        self._fd: int | None = None
        if fcntl is None:
            return
        key = self.path.resolve()
        if key in _HELD:  # this process already holds it: share, never deadlock on ourselves
            return
        lock_path = self.path / LOCK_NAME
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise _failure(f"cannot lock the run folder: {_reason(error)}", str(lock_path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(self.path) or "unknown"
            raise _failure(
                f"another specrun (pid {holder}) is running in this folder; wait for it or stop it",
                str(self.path),
            ) from None
        except OSError as error:  # a file system without flock (some network mounts): run unlocked, say so
            os.close(fd)
            _say(f"note: {self.path} cannot be locked ({_reason(error)}); do not run this spec twice at once")
            return
        claim = {"pid": os.getpid(), "identity": identity}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(claim) + "\n").encode(), 0)
        self._fd = fd
        _HELD[key] = fd
        self._finalizer = weakref.finalize(self, _release, key, fd)

    def close(self) -> None:
        """Release the folder's lock (also done when the object is collected or the process ends)."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, value: Any) -> Path:
        """Written to a temporary file and renamed, so a crash never leaves half a file."""
        return self.write_text(name, dumps(value, indent=2) + "\n")

    def write_text(self, name: str, text: str) -> Path:
        target = self.file(name)
        try:
            write_atomic(target, text)
        except OSError as error:
            raise _failure(f"cannot write: {_reason(error)}", str(target)) from None
        return target

    def write_jsonl(self, name: str, rows: list[dict[str, Any]]) -> Path:
        return self.write_text(name, "".join(dumps(row) + "\n" for row in rows))

    def append_jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Append rows and fsync; a torn last line left by a kill is repaired first, never glued onto.

        Safe from several threads (answers may be handed over as they arrive): appends are
        serialised, so one append never sees another's half-written line as torn.
        """
        path = self.file(name)
        data = "".join(dumps(row) + "\n" for row in rows).encode("utf-8")
        with self._append_lock:
            try:
                repair_tail(path)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as error:
                raise _failure(f"cannot append: {_reason(error)}", str(path)) from None

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """Rows of a JSONL file in this folder; a last line cut short by a kill is dropped, not fatal.

        Any other unreadable line is a RuntimeFailure naming file:line (this is specrun's own
        state, not the user's input); deleting that file makes the run recompute its rows.
        """
        path = self.file(name)
        if not path.is_file():
            return []
        try:
            repair_tail(path)  # this process holds the folder: leave the file clean for whoever reads it next
            return [row for _, row in read_jsonl(path, torn_tail_ok=True)]
        except InvalidInput as error:
            raise RuntimeFailure(
                f"{error}: the run folder's file is damaged; delete it to recompute its rows"
            ) from None
        except OSError as error:
            raise _failure(f"cannot read or repair: {_reason(error)}", str(path)) from None

    def write_spec(self, doc: dict[str, Any]) -> None:
        self.write_text("spec.yaml", yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


def _failure(message: str, where: str) -> RuntimeFailure:
    return RuntimeFailure(f"{where}: {message}")


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def make_dir(path: Path, what: str) -> None:
    """Create a folder the run will write to, or one line (exit 3) naming `what` and why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RuntimeFailure(f"{what} {path}: is a file, not a folder") from None
    except OSError as error:
        raise RuntimeFailure(f"{what} {path}: cannot create it: {_reason(error)}") from None
    if not path.is_dir():
        raise RuntimeFailure(f"{what} {path}: is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise RuntimeFailure(f"{what} {path}: is not writable")


def _read_manifest(folder: Path, say: Callable[[str], None]) -> dict[str, Any] | None:
    """A folder's manifest, or None (said aloud) when it is unreadable: such a folder is never resumed."""
    path = folder / "manifest.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        say(f"note: {path} is unreadable ({type(error).__name__}); that folder is skipped, not resumed")
        return None
    if not isinstance(recorded, dict):
        say(f"note: {path} is not a JSON object; that folder is skipped, not resumed")
        return None
    return recorded


def _found_dead(folder: Path, recorded: dict[str, Any], say: Callable[[str], None]) -> DeadRun:
    """A folder whose manifest says "running" and whose lock nobody holds: its process died without a
    word. Counted in the folder (.deaths); said aloud; resumed, unless it died so MAX_DEATHS times,
    when it is marked failed (a crash that repeats on resume would otherwise loop forever)."""
    pid = (_claim(folder) or {}).get("pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
    deaths_path = folder / DEATHS_NAME
    try:
        deaths = deaths_path.read_bytes().count(b"\n") + 1
        with deaths_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"pid": pid, "found": datetime.now(UTC).isoformat(timespec="seconds")}) + "\n")
    except FileNotFoundError:
        deaths = 1
        with contextlib.suppress(OSError):
            deaths_path.write_text(json.dumps({"pid": pid}) + "\n", encoding="utf-8")
    except OSError:
        deaths = MAX_DEATHS  # a folder that cannot even count its deaths is not resumed
    who = f"its process (pid {pid})" if pid is not None else "its process"
    error = f"{who} died without a word: killed (SIGKILL, out of memory) or crashed inside a native library"
    manifest = {**recorded, "status": "running", "error": error}
    if deaths >= MAX_DEATHS:
        manifest["status"] = "failed"
        manifest["error"] = f"{error}; it died {deaths} times, so it is not resumed again"
        with contextlib.suppress(OSError):
            write_atomic(folder / "manifest.json", dumps(manifest, indent=2) + "\n")
        say(
            f"note: the last run of this spec, {folder}, {manifest['error']}; it is marked failed and "
            "a new run folder starts (answers already bought come from the response cache)"
        )
        return DeadRun(folder, pid, deaths, False, manifest)
    say(f"note: the last run of this spec, {folder}, {error}; resuming it")
    return DeadRun(folder, pid, deaths, True, manifest)


def _claim(folder: Path) -> dict[str, Any] | None:
    try:
        claim = json.loads((folder / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return claim if isinstance(claim, dict) else None


def _claimed(folder: Path) -> dict[str, Any] | None:
    """The identity a holder wrote when it created the folder (before its manifest exists)."""
    return (_claim(folder) or {}).get("identity")


def _holder(folder: Path) -> int | str | None:
    """The pid of another live process holding `folder`'s lock, "unknown" if it left none, else None."""
    if fcntl is None:
        return None
    lock_path = folder / LOCK_NAME
    if folder.resolve() in _HELD or not lock_path.is_file():
        return None
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = (_claim(folder) or {}).get("pid")
        return pid if isinstance(pid, int) else "unknown"
    except OSError:  # no flock on this file system: nobody can be holding it
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _release(key: Path, fd: int) -> None:
    if _HELD.get(key) == fd:
        del _HELD[key]
    with contextlib.suppress(OSError):
        os.close(fd)  # closing the descriptor drops the flock


class _DirectoryLock:
    """An exclusive flock on a directory itself (no extra file in it), held while a folder is chosen."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> _DirectoryLock:
        if fcntl is not None:
            self.fd = os.open(self.path, os.O_RDONLY)
            with contextlib.suppress(OSError):  # OSError: no flock on this file system; choose unlocked
                fcntl.flock(self.fd, fcntl.LOCK_EX)  # held for milliseconds: waiting is right here
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def git_commit(folder: Path) -> str | None:
    """HEAD of the git repository holding `folder`, with -dirty when a tracked file differs; None outside git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head is None:
        return None
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def environment(spec_path: Path) -> dict[str, Any]:
    """Versions for the manifest. `git_commit` is the spec's repository, where a team versions its
    experiments; `specrun_commit` is specrun's own checkout (None when installed from a wheel)."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "specrun": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(spec_path.resolve().parent),
        "specrun_commit": git_commit(PROJECT_ROOT)
        if (PROJECT_ROOT / ".git").exists()
        else None,  # not a venv's parent repo
        "packages": versions,
    }
