"""The run folder's outputs for people and machines: summary.json, junit.xml and report.html.

`write_outputs` is called from the pipeline's `finally`, next to report.md, for every run that got
a folder: succeeded, failed or interrupted. It must never cost the run: every file is written on
its own, and a failure is said in one line and swallowed (the manifest and report.md stand).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.core.runfolder import RunFolder
from runner.outputs.evidence import MistakeSet, loss_curve
from runner.outputs.html import Page, render_html
from runner.outputs.junit import render_junit
from runner.outputs.summary import build_summary
from runner.tasks import Task

__all__ = ["build_summary", "render_html", "render_junit", "write_outputs"]


def _read_json(folder: Path, name: str) -> Any:
    path = folder / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_jsonl(run: RunFolder, name: str) -> list[dict[str, Any]]:
    return run.read_jsonl(name) if run.file(name).is_file() else []


def build_page(
    run: RunFolder,
    manifest: dict[str, Any],
    summary: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    checks: dict[str, Any] | None,
    task: Task,
) -> Page:
    """Everything the page needs beyond the summary, read from the folder; what cannot be read is a note."""
    spec = manifest["spec"]
    page = Page(metric_names=list(task.metrics), names=task.display_names(spec), checks=checks)
    page.breakdown_title, page.breakdown_column = task.breakdown_title, task.breakdown_column
    page.breakdown_chart, page.breakdown_nothing = task.breakdown_chart, task.breakdown_nothing
    primary = metrics.get(summary["primary_row"]) or {}
    page.confusion = primary.get("confusion") if isinstance(primary.get("confusion"), dict) else None
    try:
        state = _read_json(run.path, "finetune.json")
        page.curve = loss_curve(_read_jsonl(run, "finetune_events.jsonl"), state)
    except Exception as error:
        page.notes.append(f"fine-tuning losses not read: {type(error).__name__}: {error}")
    try:
        records = _read_jsonl(run, "predictions.jsonl") if metrics else []
        modes = [m for m in spec["evaluation"]["modes"] if m in metrics]
        for mode in modes:
            found: MistakeSet | None = task.mistakes(records, mode, manifest)
            if found is not None:
                page.mistakes.append(found)
    except Exception as error:
        page.notes.append(f"mistakes not read from predictions.jsonl: {type(error).__name__}: {error}")
    return page


def write_outputs(
    run: RunFolder,
    manifest: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    gates: list[dict[str, Any]],
    checks: dict[str, Any] | None,
    task: Task,
    say: Callable[[str], Any] = print,
) -> list[str]:
    """Write summary.json, junit.xml and report.html; returns the names written. Never raises."""
    written: list[str] = []
    try:
        state = _read_json(run.path, "finetune.json")
    except Exception:
        state = None
    try:
        summary = build_summary(run.path, manifest, metrics, gates, checks, task, state)
        run.write_json("summary.json", summary)
        written.append("summary.json")
    except Exception as error:
        say(f"summary.json not written: {type(error).__name__}: {error}")
        return written
    for name, render in (
        ("junit.xml", lambda: render_junit(summary)),
        (
            "report.html",
            lambda: render_html(summary, build_page(run, manifest, summary, metrics, checks, task)),
        ),
    ):
        try:
            run.write_text(name, render())
            written.append(name)
        except Exception as error:
            say(f"{name} not written: {type(error).__name__}: {error}")
    return written
