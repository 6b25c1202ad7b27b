"""Stage `metrics`: score every row, with 95% bootstrap intervals; write predictions.jsonl and
metrics.json; decide the gates (the run's exit code)."""

from __future__ import annotations

import runner.pipeline.gates as gates
from runner.core.errors import EXIT_GATE_FAILED
from runner.core.stats import ci95
from runner.pipeline.context import RunContext

NAME = "metrics"


def wanted(ctx: RunContext) -> bool:
    return ctx.wants("metrics") and not ctx.dry_run


def run(ctx: RunContext) -> None:
    task, examples = ctx.task, ctx.splits.eval
    for row, predicted in ctx.rows.items():
        for record, value in zip(ctx.records, predicted, strict=True):
            record[row] = value
    metrics = {row: task.score(examples, predicted) for row, predicted in ctx.rows.items()}
    ctx.example_stats = {row: task.example_stats(examples, predicted) for row, predicted in ctx.rows.items()}
    for row, found in metrics.items():
        if ctx.example_stats[row] is not None:
            found["ci95"] = ci95(ctx.example_stats[row], task.aggregate, task.metrics)
    ctx.run.write_jsonl("predictions.jsonl", ctx.records)
    for name, text in task.prediction_files(examples, ctx.rows).items():  # e.g. predictions.<row>.conll
        ctx.run.write_text(name, text)
    ctx.run.write_json("metrics.json", metrics)
    ctx.outcome.metrics = metrics
    ctx.outcome.gates = gates.check_gates(ctx.spec, metrics, ctx.example_stats, task, examples, ctx.against)
    ctx.manifest["gates"] = ctx.outcome.gates  # a matrix reusing this finished run reads its verdicts here
    if not all(gate["passed"] for gate in ctx.outcome.gates):
        ctx.outcome.exit_code = EXIT_GATE_FAILED
