"""Stage `report`: always the last, also when a stage failed or the run was interrupted: the
manifest's end, report.md, and report.html / summary.json / junit.xml (runner/outputs/)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from rich.console import Console

from runner.core.runfolder import RunFolder
from runner.outputs import write_outputs
from runner.outputs.markdown import describe_gate, render_report, results_table
from runner.pipeline.context import RunContext
from runner.tasks import Task

NAME = "report"


def wanted(ctx: RunContext) -> bool:
    return True


def run(ctx: RunContext) -> None:
    manifest, outcome, run = ctx.manifest, ctx.outcome, ctx.run
    manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    manifest["wall_seconds"] = round(time.perf_counter() - ctx.started, 1)
    run.write_json("manifest.json", manifest)
    run.write_text("report.md", render_report(manifest, outcome.metrics, outcome.gates, outcome.checks, ctx.task))
    write_outputs(run, manifest, outcome.metrics, outcome.gates, outcome.checks, ctx.task, say=ctx.console.print)
    run.close()  # release the folder's lock now, not when the process ends


def write_dead_run(run: RunFolder, task: Task, console: Console) -> None:
    """A run that died without a word (a native crash, SIGKILL) wrote no report; its next start, which
    found it (`RunFolder.dead`), writes that run's report.md, report.html, summary.json and junit.xml,
    whose manifest says what happened."""
    dead = run.dead
    if dead is None:
        return
    folder = run if dead.folder == run.path else RunFolder(dead.folder)
    folder.write_text("report.md", render_report(dead.manifest, {}, [], None, task))
    write_outputs(folder, dead.manifest, {}, [], None, task, say=console.print)


def say_results(ctx: RunContext) -> None:
    """The console's last lines after a finished run: the results table, each gate, where the report is."""
    console, outcome = ctx.console, ctx.outcome
    if outcome.metrics:
        console.print(results_table(outcome.metrics, ctx.manifest, ctx.task))
    for gate in outcome.gates:
        colour = "green" if gate["passed"] else "red"
        console.print(
            f"gate [{colour}]{'pass' if gate['passed'] else 'FAIL'}[/]: {gate['gate']} ({describe_gate(gate)})",
            highlight=False,
        )
    console.print(f"report: {ctx.run.file('report.md')} · {ctx.run.file('report.html')}")
