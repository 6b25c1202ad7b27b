"""Stage `baseline`: the task's classical rival (TF-IDF + LR, a character CRF), trained twice: on the
train split the LLM saw, and on every labelled non-eval line, so a report can say plainly when the
LLM loses to it."""

from __future__ import annotations

import time

from runner.pipeline.context import RunContext

NAME = "baseline"


def wanted(ctx: RunContext) -> bool:
    return ctx.wants("baseline") and not ctx.dry_run and ctx.spec.evaluation["baseline"]


def run(ctx: RunContext) -> None:
    started = time.perf_counter()
    task, splits = ctx.task, ctx.splits
    with ctx.console.status(f"baseline: {task.baseline_name} on the train split and on all non-eval lines…"):
        everything = splits.outside_eval()
        ctx.rows["baseline"] = task.baseline(splits.train, splits.eval)
        ctx.rows["baseline_all_data"] = task.baseline(everything, splits.eval)
    ctx.manifest["data"]["baseline_all_data_train"] = len(everything)
    ctx.timed("baseline", started)
