"""Stage `check`: the cookbook's format checks and token counts on train.jsonl (runner/data/chat_checks.py)."""

from __future__ import annotations

from runner.core.errors import InvalidInput
from runner.data.chat_checks import run_checks, summary_lines
from runner.pipeline.context import RunContext

NAME = "check"


def wanted(ctx: RunContext) -> bool:
    return ctx.wants("check")


def run(ctx: RunContext) -> None:
    doc = ctx.spec.doc
    checks = run_checks(
        ctx.run.file("train.jsonl"), doc["checks"]["model"], doc["fine_tune"]["hyperparameters"].get("n_epochs")
    )
    ctx.outcome.checks = checks
    ctx.run.write_json("checks.json", checks)
    for line in summary_lines(checks):
        ctx.console.print(f"check: {line}")
    if checks["format_errors"] and doc["checks"]["fail_on_format_errors"]:
        raise InvalidInput("training data has format errors (see checks.json)", where=str(ctx.run.file("train.jsonl")))
