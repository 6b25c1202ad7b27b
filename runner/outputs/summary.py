"""summary.json: the run in one machine-readable object, documented by schemas/summary.schema.json.

It is built from what the report is built from (manifest, metrics, gates, checks), so the page, the
JUnit file and the summary never disagree; report.html and junit.xml are rendered from it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from runner.outputs.markdown import Headline, describe_gate, headline, row_description, verdict
from runner.providers.registry import capability
from runner.tasks import Task

SCHEMA_VERSION = 1
OUTPUT_FILES = ("summary.json", "junit.xml", "report.html")
GATE_OP = re.compile(r"\s(>=|<=|==|>|<)\s")


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null (a reader sees "no figure", not a parse error)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def scalar_metrics(found: dict[str, Any]) -> dict[str, float | int | None]:
    """A row's headline figures: its numbers, without the nested tables (per class, confusion, ci95)."""
    return {
        name: finite(value)
        for name, value in found.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def intervals(found: dict[str, Any]) -> dict[str, list[float | None]]:
    """The row's 95% intervals (contract 1: added by runner.core.stats; absent in older runs)."""
    ci = found.get("ci95")
    if not isinstance(ci, dict):
        return {}
    return {name: [finite(float(x)) for x in pair] for name, pair in ci.items() if _is_pair(pair)}


def _is_pair(pair: Any) -> bool:
    return isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, (int, float)) for x in pair)


def gate_op(text: str) -> str | None:
    """The comparison a gate makes, read from its text ("accuracy >= 0.4" → ">=")."""
    found = GATE_OP.search(f" {text} ")
    return found.group(1) if found else None


def gate_entries(gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Contract 2's gate dicts with their operator, non-finite numbers made null; extra keys kept."""
    entries = []
    for gate in gates:
        entry = {key: finite(value) for key, value in gate.items()}
        entry["op"] = gate_op(str(gate["gate"]))
        if isinstance(entry.get("difference_ci95"), (list, tuple)):
            entry["difference_ci95"] = [finite(float(x)) for x in entry["difference_ci95"]]
        entries.append(entry)
    return entries


def gate_detail(gate: dict[str, Any]) -> str:
    """What runner.pipeline.gates says beyond the two values (difference, interval, confidence, notes), in its words."""
    try:
        _values, _, detail = describe_gate(gate).partition("; ")
    except (KeyError, TypeError, ValueError):  # a gate dict from an older or partial run: no detail
        return ""
    return detail


def breakdown(metrics: dict[str, dict[str, Any]], row: str, task: Task) -> dict[str, Any] | None:
    """One row's P/R/F1/support per item of the task's breakdown (Task.breakdown_key: per class, per type)."""
    found = (metrics.get(row) or {}).get(task.breakdown_key or "")
    if not isinstance(found, dict):
        return None
    items = {
        name: {key: finite(scores.get(key)) for key in ("precision", "recall", "f1", "support")}
        for name, scores in found.items()
    }
    return {"row": row, "kind": task.breakdown_key, "items": items}


def cost(manifest: dict[str, Any], checks: dict[str, Any] | None) -> dict[str, Any]:
    """What evaluation cost (API usage) and what training would cost (the data checks' estimate)."""
    usage = manifest.get("usage") or {}
    known = [u["estimated_usd"] for u in usage.values() if u.get("estimated_usd") is not None]
    unknown = any(u.get("estimated_usd") is None for u in usage.values())
    training = (checks or {}).get("cost") or {}
    # e.g. the embedded model: tokens counted, nothing bought (an unregistered provider is assumed to bill)
    free = not capability(manifest["spec"]["provider"]["name"], "bills_usage", True)
    return {
        "eval_usd": 0.0 if free else None if unknown or not usage else round(sum(known), 4),
        "prompt_tokens": sum(u.get("prompt_tokens", 0) for u in usage.values()),
        "completion_tokens": sum(u.get("completion_tokens", 0) for u in usage.values()),
        "training_billed_tokens": (checks or {}).get("billed_tokens"),
        "training_usd_estimate": training.get("training_usd"),
        "prices_as_of": training.get("prices_as_of"),
    }


def headline_entry(chosen: Headline | None) -> dict[str, Any] | None:
    """The verdict's rule for machines: the row it names, the trivial predictor's score, the rows left out."""
    if chosen is None:
        return None
    trivial = None if chosen.trivial is None else {"answer": chosen.trivial[0], "score": finite(chosen.trivial[1])}
    return {
        "metric": chosen.metric,
        "row": chosen.row,
        "rule": chosen.rule,
        "trivial": trivial,
        "excluded": chosen.excluded,
    }


def fine_tune_info(manifest: dict[str, Any], state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job behind the fine_tuned rows (manifest), with its end state and last losses (finetune.json)."""
    job = manifest.get("fine_tune")
    if not job and not state:
        return None
    state = state or {}
    info = {
        key: (job or {}).get(key, state.get(key))
        for key in ("job_id", "training_file", "base_model", "fine_tuned_model")
    }
    info["status"] = state.get("status")
    info["trained_tokens"] = state.get("trained_tokens")
    checkpoints = [c.get("metrics") or {} for c in state.get("checkpoints") or [] if isinstance(c, dict)]
    info["final_train_loss"] = finite(next((m["train_loss"] for m in reversed(checkpoints) if "train_loss" in m), None))
    info["final_valid_loss"] = finite(next((m["valid_loss"] for m in reversed(checkpoints) if "valid_loss" in m), None))
    return info


def files_in(folder: Path) -> list[str]:
    """The run folder's files as a reader will find them: this writer's outputs included, lock and partials not."""
    names = (
        {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")} if folder.is_dir() else set()
    )
    names = {name for name in names if not name.endswith(".partial")}
    return sorted(names | set(OUTPUT_FILES))


def build_summary(
    folder: Path,
    manifest: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    gates: list[dict[str, Any]],
    checks: dict[str, Any] | None,
    task: Task,
    fine_tune_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec = manifest["spec"]
    primary = spec["evaluation"]["modes"][0]
    data = manifest["data"]
    sentence = verdict(metrics, task) if metrics else None
    return {
        "schema_version": SCHEMA_VERSION,
        "name": manifest["name"],
        "run_id": manifest["run_id"],
        "status": manifest["status"],
        "error": manifest.get("error"),
        "description": spec.get("description") or None,
        "spec_hash": manifest["spec_hash"],
        "spec_path": manifest.get("spec_path"),
        "git_commit": (manifest.get("environment") or {}).get("git_commit"),
        "task": task.name,
        "provider": spec["provider"]["name"],
        "model": spec["provider"]["model"],
        "method": spec["evaluation"]["method"],
        "primary_metric": task.primary_metric,
        "primary_row": primary,
        "eval_size": data["eval"],
        "limit": manifest.get("limit"),
        "rows": [
            {
                "name": row,
                "description": row_description(row, manifest, task),
                "metrics": scalar_metrics(found),
                "ci95": intervals(found),
            }
            for row, found in metrics.items()
        ],
        "breakdown": breakdown(metrics, primary, task),
        "verdict": sentence.replace("**", "") if sentence else None,
        "headline": headline_entry(headline(metrics, task) if metrics else None),
        "gates_declared": list(spec["evaluation"].get("gates") or []),
        "gates": gate_entries(gates),
        "gates_passed": all(g["passed"] for g in gates) if gates else None,
        "usage": manifest.get("usage") or {},
        "cost": cost(manifest, checks),
        "fine_tune": fine_tune_info(manifest, fine_tune_state),
        "data": {
            "path": data["path"],
            "rows": data["rows"],
            "excluded": data["excluded"],
            "train": data["train"],
            "validation": data.get("validation", 0),
            "eval": data["eval"],
            "baseline_all_data_train": data.get("baseline_all_data_train"),
        },
        "timings": {
            "started": manifest.get("started"),
            "finished": manifest.get("finished"),
            "wall_seconds": manifest.get("wall_seconds"),
            "stage_seconds": manifest.get("stage_seconds") or {},
        },
        "files": files_in(folder),
    }
