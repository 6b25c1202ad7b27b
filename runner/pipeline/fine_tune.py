"""Stage `fine_tune`: upload train.jsonl, create (or reattach to) the job, poll it to the end.

Everything learnt is written to finetune.json in the run folder as soon as it is known: the
uploaded file id, the job id, events seen, the resulting model. A job is never created twice:
before creating, the job made from the same uploaded file is looked up, so a run that crashed
between "create" and "record" reattaches to the job it already paid for.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console

from runner.config.spec import fine_tune_settings
from runner.core.errors import InvalidInput, RuntimeFailure
from runner.core.runfolder import RunFolder
from runner.pipeline.context import RunContext
from runner.providers import Job, Provider
from runner.providers import registry as providers
from runner.providers.api.retry import BACKOFF_BASE_S, is_retryable

STATE = "finetune.json"


def _load(run: RunFolder) -> dict[str, Any]:
    path = run.file(STATE)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def create_or_reattach(provider: Provider, training_file: str, settings: dict[str, Any], attempts: int = 6) -> Job:
    for attempt in range(attempts):
        existing = provider.find_job(training_file)
        if existing is not None:
            return existing
        try:
            return provider.create_job(training_file, settings)
        except InvalidInput:
            raise  # a setting the provider cannot take: the spec's error (exit 2), not a failure to retry
        except Exception as error:
            if not is_retryable(error) or attempt == attempts - 1:
                raise RuntimeFailure(f"{provider.name} could not create the fine-tuning job: {error}") from None
            time.sleep(BACKOFF_BASE_S * 2**attempt)
    raise AssertionError("unreachable")


def fine_tune(
    provider: Provider, run: RunFolder, settings: dict[str, Any], poll_interval_s: float, console: Console
) -> dict[str, Any]:
    """Run the job to its end; returns the state (with fine_tuned_model) also kept in finetune.json."""
    state = _load(run)
    if "training_file" not in state:
        state["training_file"] = provider.upload(run.file("train.jsonl"))
        if run.file("validation.jsonl").is_file():
            state["validation_file"] = provider.upload(run.file("validation.jsonl"))
        run.write_json(STATE, state)
        console.print(f"fine-tune: uploaded train.jsonl as {state['training_file']}")
    if state.get("validation_file"):
        settings = {**settings, "validation_file": state["validation_file"]}
    if "job_id" not in state:
        job = create_or_reattach(provider, state["training_file"], settings)
        state.update(job_id=job.id, base_model=job.model, settings=settings)
        run.write_json(STATE, state)
        console.print(f"fine-tune: job {job.id} on {job.model}")
    else:
        console.print(f"fine-tune: reattaching to job {state['job_id']}")
    seen = set(state.get("seen_events", []))
    try:
        provider.drive(state["job_id"], console)  # local jobs train now (resuming from a checkpoint)
    except KeyboardInterrupt:
        console.print(f"[yellow]job {state['job_id']} stopped at a checkpoint[/]: run the same command to resume")
        raise
    try:
        with console.status(f"job {state['job_id']}: polling") as status:
            while True:
                job = provider.job(state["job_id"])
                new = [event for event in provider.events(job.id) if event.id not in seen]
                if new:
                    run.append_jsonl("finetune_events.jsonl", [event.__dict__ for event in new])
                    for event in new:
                        console.print(f"  [dim]{job.id}[/] {event.message}", highlight=False)
                    seen.update(event.id for event in new)
                    state["seen_events"] = sorted(seen)
                    run.write_json(STATE, state)
                checkpoints = provider.checkpoints(job.id)
                latest = checkpoints[-1] if checkpoints else None
                loss = f" · step {latest.step} train loss {latest.metrics.get('train_loss')}" if latest else ""
                status.update(f"job {job.id}: {job.status}{loss}")
                if job.done:
                    break
                time.sleep(poll_interval_s)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]job {state['job_id']} keeps running at {provider.name}[/]: rerun to reattach, "
            f"or `specrun jobs cancel {state['job_id']} --provider {provider.name}`"
        )
        raise
    state.update(
        status=job.status,
        fine_tuned_model=job.fine_tuned_model,
        trained_tokens=job.trained_tokens,
        checkpoints=[c.__dict__ for c in checkpoints],
    )
    run.write_json(STATE, state)
    if job.status != "succeeded":
        raise RuntimeFailure(f"fine-tuning job {job.id} {job.status}{f': {job.error}' if job.error else ''}")
    console.print(f"fine-tune: [green]succeeded[/] → {job.fine_tuned_model}")
    return state


# --- the stage ----------------------------------------------------------------------------------------

NAME = "fine_tune"


def wanted(ctx: RunContext) -> bool:
    return ctx.fine_tuning and not ctx.dry_run


def run(ctx: RunContext) -> None:
    """Train (or reattach to) the spec's job; the fine_tuned mode then answers with its model."""
    spec = ctx.spec
    provider = providers.open_provider(spec.provider, ctx.cache)
    state = fine_tune(
        provider, ctx.run, fine_tune_settings(spec), spec.doc["fine_tune"]["poll_interval_s"], ctx.console
    )
    ctx.manifest["fine_tune"] = {k: state.get(k) for k in ("job_id", "training_file", "base_model", "fine_tuned_model")}
    ctx.models["fine_tuned"] = state["fine_tuned_model"]
