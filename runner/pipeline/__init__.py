"""Carry a spec through its stages: prep → check → fine_tune → eval → baseline → metrics → report.

Each stage is one module here with the same three names: `NAME`, `wanted(ctx)` and `run(ctx)`,
over one `RunContext` (context.py). `run_spec` walks `STAGES` in order; `report` closes every run,
failed or interrupted ones too. `COMMAND_STAGES` is the one place that says which stages each
command runs. Everything that can be wrong with the input (spec, data, template) is found by
`prepare` before a run folder is made or a model is loaded.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from runner.config.spec import Spec
from runner.core.cache import ResponseCache
from runner.core.errors import EXIT_OK
from runner.core.runfolder import RunFolder, environment
from runner.core.secrets import redact
from runner.core.stats import bootstrap_settings
from runner.pipeline import baseline, check, evaluate, fine_tune, metrics, prep, report
from runner.pipeline.context import Outcome, Prepared, RunContext
from runner.pipeline.gates import check_gates, load_against
from runner.pipeline.prep import prepare
from runner.providers import registry as providers

STAGES = (prep, check, fine_tune, evaluate, baseline, metrics)  # then `report`, always
COMMAND_STAGES: dict[str, tuple[str, ...]] = {
    "run": tuple(stage.NAME for stage in STAGES),
    "prep": ("prep",),
    "check": ("prep", "check"),
    "eval": (
        "fine_tune",
        "eval",
        "baseline",
        "metrics",
    ),  # a fine_tuned mode needs its model: trained or reattached first
}

__all__ = ["COMMAND_STAGES", "STAGES", "Outcome", "Prepared", "check_gates", "prepare", "run_identity", "run_spec"]


def run_spec(
    spec: Spec,
    *,
    stages: tuple[str, ...] = COMMAND_STAGES["run"],
    limit: int | None = None,
    dry_run: bool = False,
    out_dir: Path = Path("runs"),
    console: Console | None = None,
    use_cache: bool = True,
    against: Path | None = None,
) -> Outcome:
    """against: an earlier run folder that `against.…` gates compare with (read and checked before a run folder exists)."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    prepared = prepare(spec, limit)
    fine_tuning = spec.doc["fine_tune"]["enabled"] and "fine_tune" in stages
    asks_model = not dry_run and ("eval" in stages or fine_tuning)
    if asks_model:
        providers.preflight(spec.provider)  # a missing key or model is found before a run folder exists
    cache = None
    if asks_model and use_cache and providers.provider_class(spec.provider["name"]).caches_responses:
        cache = ResponseCache()  # a cache that cannot be opened is exit 3 before a run folder exists
    against_run = load_against(against, spec) if "eval" in stages else None  # exit 2 before a run folder exists
    if against_run is not None:
        console.print(f"against: {against_run.path}" + (f" ({against_run.chosen})" if against_run.chosen else ""))

    identity = run_identity(spec, stages, limit, dry_run)
    run, resumed = RunFolder.open(out_dir, spec.name, identity, say=console.print)
    report.write_dead_run(run, prepared.task, console)
    console.print(f"[bold]{escape(spec.name)}[/]: {'resuming' if resumed else 'run folder'} {escape(str(run.path))}")
    manifest = _manifest(spec, run, identity, prepared, limit)
    manifest["bootstrap"] = bootstrap_settings()
    if against_run is not None:
        manifest["against"] = against_run.describe()
    run.write_spec(spec.doc)
    run.write_json("manifest.json", manifest)
    ctx = RunContext(
        spec, prepared, stages, run, manifest, console, Outcome(run=run, exit_code=EXIT_OK),
        dry_run=dry_run, cache=cache, against=against_run, started=started,
    )  # fmt: skip
    try:
        for stage in STAGES:
            if stage.wanted(ctx):
                stage.run(ctx)
            if ctx.stopped:
                break
        manifest["status"] = "succeeded"
    except BaseException as error:  # recorded, then re-raised: Ctrl-C and failures leave a readable manifest
        manifest["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        manifest["error"] = redact(str(error)) or type(error).__name__
        raise
    finally:
        report.run(ctx)
    if not dry_run:
        report.say_results(ctx)
    return ctx.outcome


def run_identity(spec: Spec, stages: tuple[str, ...], limit: int | None, dry_run: bool = False) -> dict[str, Any]:
    """What makes two runs the same run (resume; a matrix finds its finished cells by it)."""
    return {"spec_hash": spec.hash(), "limit": limit, "stages": list(stages), "dry_run": dry_run}


def _manifest(spec: Spec, run: RunFolder, identity: dict, prepared: Prepared, limit: int | None) -> dict[str, Any]:
    files = spec.files()[:-1]
    splits = prepared.splits
    return {
        "name": spec.name,
        "run_id": run.path.name,
        "status": "running",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec_path": str(spec.path),
        "spec_hash": identity["spec_hash"],
        "identity": identity,
        "limit": limit,
        "seeds": {name: split.get("seed") for name, split in spec.doc["splits"].items()},
        "data": {
            "path": files[0],
            "sha256": hashlib.sha256(Path(files[0]).read_bytes()).hexdigest(),
            "files": {file: hashlib.sha256(Path(file).read_bytes()).hexdigest() for file in files},
            "rows": splits.n_rows,
            "excluded": splits.n_excluded,
            "train": len(splits.train),
            "validation": len(splits.validation),
            "eval": len(splits.eval),
        },
        "spec": spec.doc,
        "environment": environment(spec.path),
        "models": {},
        "stage_seconds": {},
    }
