"""The run folder: runs/<spec name>/<timestamp>/, and finding an unfinished one to resume.

A run is identified by its spec hash (resolved spec + the bytes of its data and template) and
its --limit. Running the same spec again after a crash or Ctrl-C picks up the newest
unfinished folder with that identity, so nothing already computed is computed again.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from runner import PROJECT_ROOT, __version__

PACKAGES = ("torch", "transformers", "scikit-learn", "tiktoken", "jinja2", "jsonschema", "openai", "zhipuai")


class RunFolder:
    def __init__(self, path: Path):
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, out_dir: Path, name: str, identity: dict[str, Any]) -> tuple[RunFolder, bool]:
        """The newest unfinished run with this identity (resumed=True), else a new folder."""
        parent = out_dir / name
        if parent.is_dir():
            for folder in sorted(parent.iterdir(), reverse=True):
                manifest = folder / "manifest.json"
                if not manifest.is_file():
                    continue
                try:
                    recorded = json.loads(manifest.read_text(encoding="utf-8"))
                except json.JSONDecodeError:
                    continue
                if recorded.get("identity") == identity and recorded.get("status") != "succeeded":
                    return cls(folder), True
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path, suffix = parent / stamp, 1
        while path.exists():
            suffix += 1
            path = parent / f"{stamp}-{suffix}"
        return cls(path), False

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, value: Any) -> Path:
        """Written to a temporary file and renamed, so a crash never leaves half a file."""
        target = self.file(name)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, target)
        return target

    def write_text(self, name: str, text: str) -> Path:
        target = self.file(name)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, target)
        return target

    def write_jsonl(self, name: str, rows: list[dict[str, Any]]) -> Path:
        return self.write_text(name, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))

    def append_jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        with self.file(name).open("a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """Rows of a JSONL file; a last line cut short by a kill is dropped, not fatal."""
        path = self.file(name)
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def write_spec(self, doc: dict[str, Any]) -> None:
        self.write_text("spec.yaml", yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return result.stdout.strip() + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
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
        "git_commit": git_commit(),
        "packages": versions,
    }
