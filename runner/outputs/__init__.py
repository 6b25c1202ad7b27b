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
from runner.outputs.evidence import (
    MistakeSet,
    calibration_of,
    classification_mistakes,
    extraction_mistakes,
    loss_curve,
)
from runner.outputs.html import Page, render_html
from runner.outputs.junit import render_junit
from runner.outputs.summary import build_summary
from runner.tasks import Task

__all__ = ["build_summary", "render_html", "render_junit", "write_outputs"]


def display_names(spec: dict[str, Any]) -> dict[str, str]:
    """Dataset label or entity type → the name the model sees (labels: / entities: in the spec)."""
    if spec.get("labels"):
        return {str(k): str(v) for k, v in spec["labels"].items()}
    return {str(k): str(v["name"] if isinstance(v, dict) else v) for k, v in (spec.get("entities") or {}).items()}


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
    names = display_names(spec)
    page = Page(metric_names=list(task.metrics), names=names, checks=checks)
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
            found: MistakeSet | None
            if summary["breakdown"] and summary["breakdown"]["kind"] == "per_type":
                found = extraction_mistakes(records, mode, names)
            else:
                found = classification_mistakes(records, mode, names, calibration_of(manifest, mode))
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
