"""Carry a spec through its stages: prep → checks → evaluation → report.

Everything that can be wrong with the input (spec, data, template) is found before a run
folder is made or a model is loaded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from runner.config.spec import Spec, fine_tune_settings
from runner.core.cache import ResponseCache
from runner.core.errors import EXIT_GATE_FAILED, EXIT_OK, InvalidInput
from runner.core.progress import progress_bar
from runner.core.runfolder import RunFolder, environment
from runner.core.secrets import redact
from runner.core.stats import bootstrap_settings, ci95
from runner.data.chat_checks import inference_estimate, run_checks, summary_lines, usage_summary
from runner.data.dataset import Splits, make_splits
from runner.data.fewshot import choose_shots, llm_embedder
from runner.data.prompts import PromptBuilder
from runner.outputs import write_outputs
from runner.outputs.markdown import render_report, results_table
from runner.pipeline.evaluate import raw_outputs
from runner.pipeline.fine_tune import fine_tune
from runner.pipeline.gates import check_gates, describe_gate, load_against
from runner.providers import Provider
from runner.providers.registry import open_provider, preflight
from runner.tasks import Example, Scored, Task, make_task

STAGES = ("prep", "check", "fine_tune", "eval")


@dataclass
class Prepared:
    """Everything read and rendered from a spec before any model is loaded or money spent."""

    task: Task
    splits: Splits
    prompts: PromptBuilder
    training: list[dict[str, Any]]
    validation: list[dict[str, Any]]


def prepare(spec: Spec, limit: int | None = None) -> Prepared:
    """Read every split and render every prompt: bad data or a template that fails on some row
    (a misspelt record field, a bad index) is an error now, not after the model has loaded."""
    task = make_task(spec.doc)
    splits = make_splits(spec, task, limit=limit)
    prompts = PromptBuilder(spec.doc["prompt"]["template"], spec.doc["prompt"]["system"], task)
    training = [{"messages": prompts.training_messages(example)} for example in splits.train]
    validation = [{"messages": prompts.training_messages(example)} for example in splits.validation]
    shots = splits.train[: spec.doc["few_shot"]["k"]] if "few_shot" in spec.evaluation["modes"] else None
    rendered = {str(prompts.messages(example, shots)) for example in splits.eval}
    if len(rendered) == 1 and len({example.text for example in splits.eval}) > 1:
        raise InvalidInput(
            "every eval example renders the same prompt: the template never shows the example (use {{ text }})",
            where=spec.where("prompt", "template"),
        )
    return Prepared(task, splits, prompts, training, validation)


@dataclass
class Outcome:
    run: RunFolder
    exit_code: int
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None  # --dry-run: what evaluating would send and cost (usd None: unknown)


def run_spec(
    spec: Spec,
    *,
    stages: tuple[str, ...] = STAGES,
    limit: int | None = None,
    dry_run: bool = False,
    out_dir: Path = Path("runs"),
    console: Console | None = None,
    use_cache: bool = True,
    against: Path | None = None,
) -> Outcome:
    """against: an earlier run folder that `against.…` gates compare with (read and checked before a run folder exists)."""
    console = console or Console(stderr=True)
    fine_tuning = spec.doc["fine_tune"]["enabled"] and "fine_tune" in stages
    started = time.perf_counter()
    prepared = prepare(spec, limit)
    task, splits, prompts, training = prepared.task, prepared.splits, prepared.prompts, prepared.training
    if not dry_run and ("eval" in stages or fine_tuning):
        preflight(spec.provider)  # a missing key or model is found before a run folder exists
    cache = None
    if not dry_run and use_cache and spec.provider["name"] != "local" and ("eval" in stages or fine_tuning):
        cache = ResponseCache()  # a cache that cannot be opened is exit 3 before a run folder exists
    against_run = load_against(against, spec) if "eval" in stages else None  # exit 2 before a run folder exists
    if against_run is not None:
        console.print(f"against: {against_run.path}" + (f" ({against_run.chosen})" if against_run.chosen else ""))

    identity = run_identity(spec, stages, limit, dry_run)
    run, resumed = RunFolder.open(out_dir, spec.name, identity, say=console.print)
    console.print(f"[bold]{escape(spec.name)}[/]: {'resuming' if resumed else 'run folder'} {escape(str(run.path))}")
    manifest = _manifest(spec, run, identity, splits, limit)
    manifest["bootstrap"] = bootstrap_settings()
    if against_run is not None:
        manifest["against"] = against_run.describe()
    run.write_spec(spec.doc)
    run.write_json("manifest.json", manifest)
    outcome = Outcome(run=run, exit_code=EXIT_OK)
    try:
        if "prep" in stages or "check" in stages or fine_tuning:
            run.write_jsonl("train.jsonl", training)
            if prepared.validation:
                run.write_jsonl("validation.jsonl", prepared.validation)
            console.print(f"prep: {len(training)} chat examples → {run.file('train.jsonl')}")
        if "check" in stages:
            hyper = spec.doc["fine_tune"]["hyperparameters"]
            outcome.checks = run_checks(run.file("train.jsonl"), spec.doc["checks"]["model"], hyper.get("n_epochs"))
            run.write_json("checks.json", outcome.checks)
            for line in summary_lines(outcome.checks):
                console.print(f"check: {line}")
            if outcome.checks["format_errors"] and spec.doc["checks"]["fail_on_format_errors"]:
                raise InvalidInput(
                    "training data has format errors (see checks.json)", where=str(run.file("train.jsonl"))
                )
        if dry_run:
            outcome.estimate = _print_estimate(spec, splits, prompts, console)
            manifest["status"] = "succeeded"
            return outcome
        models = {"zero_shot": spec.provider["model"], "few_shot": spec.provider["model"]}
        if fine_tuning:
            provider = open_provider(spec.provider, cache)
            state = fine_tune(
                provider, run, fine_tune_settings(spec), spec.doc["fine_tune"]["poll_interval_s"], console
            )
            manifest["fine_tune"] = {
                k: state.get(k) for k in ("job_id", "training_file", "base_model", "fine_tuned_model")
            }
            models["fine_tuned"] = state["fine_tuned_model"]
        if "eval" in stages:
            outcome.metrics, example_stats = _evaluate(
                spec, task, splits, prompts, run, console, manifest, models, cache
            )
            outcome.gates = check_gates(spec, outcome.metrics, example_stats, task, splits.eval, against_run)
            manifest["gates"] = outcome.gates  # a matrix reusing this finished run reads its verdicts here
            if not all(gate["passed"] for gate in outcome.gates):
                outcome.exit_code = EXIT_GATE_FAILED
        manifest["status"] = "succeeded"
    except BaseException as error:  # recorded, then re-raised: Ctrl-C and failures leave a readable manifest
        manifest["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        manifest["error"] = redact(str(error)) or type(error).__name__
        raise
    finally:
        manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        manifest["wall_seconds"] = round(time.perf_counter() - started, 1)
        run.write_json("manifest.json", manifest)
        run.write_text("report.md", render_report(manifest, outcome.metrics, outcome.gates, outcome.checks, task))
        write_outputs(run, manifest, outcome.metrics, outcome.gates, outcome.checks, task, say=console.print)
        run.close()  # release the folder's lock now, not when the process ends
    if outcome.metrics:
        console.print(results_table(outcome.metrics, manifest, task))
    for gate in outcome.gates:
        colour = "green" if gate["passed"] else "red"
        console.print(
            f"gate [{colour}]{'pass' if gate['passed'] else 'FAIL'}[/]: {gate['gate']} ({describe_gate(gate)})",
            highlight=False,
        )
    console.print(f"report: {run.file('report.md')} · {run.file('report.html')}")
    return outcome


def run_identity(spec: Spec, stages: tuple[str, ...], limit: int | None, dry_run: bool = False) -> dict[str, Any]:
    """What makes two runs the same run (resume; a matrix finds its finished cells by it)."""
    return {"spec_hash": spec.hash(), "limit": limit, "stages": list(stages), "dry_run": dry_run}


def _manifest(spec: Spec, run: RunFolder, identity: dict, splits: Splits, limit: int | None) -> dict[str, Any]:
    files = spec.files()[:-1]
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


def _print_estimate(spec: Spec, splits: Splits, prompts: PromptBuilder, console: Console) -> dict[str, Any]:
    """Print and return the estimate (a matrix totals its cells')."""
    provider = spec.provider
    validation = splits.validation if prompts.task.wants_validation_outputs() else []  # answered too, to fit on
    examples = splits.eval + validation
    including = f" (with {len(validation)} validation lines calibration is fitted on)" if validation else ""
    if provider["name"] == "local":
        console.print(
            f"dry run: nothing spent; the local model would evaluate {len(examples)} examples{including} (no API cost)"
        )
        return {"examples": len(examples), "prompt_tokens": None, "max_completion_tokens": None, "usd": 0.0}
    conversations = [prompts.messages(example) for example in examples]
    max_tokens = provider["params"]["max_tokens"]
    if spec.evaluation["method"] == "score":
        max_tokens = 1  # label scoring asks for one token
        if provider.get("scoring") == "completions":  # prompt + label once per label
            conversations = [
                [*c[:-1], {**c[-1], "content": c[-1]["content"] + label}]
                for c in conversations
                for label in prompts.task.answers()
            ]
    estimate = inference_estimate(conversations, provider["model"], max_tokens)
    cost = f"≈ ${estimate['usd']:.4f}" if estimate["usd"] is not None else "cost unknown (no price for this model)"
    console.print(
        f"dry run: nothing spent; evaluating {len(examples)} examples{including} on {provider['model']} would send "
        f"{estimate['prompt_tokens']} prompt tokens and at most {estimate['max_completion_tokens']} completion tokens: {cost}"
    )
    return {"examples": len(examples), **estimate}


def _evaluate(
    spec: Spec,
    task: Task,
    splits: Splits,
    prompts: PromptBuilder,
    run: RunFolder,
    console: Console,
    manifest: dict,
    models: dict[str, str],
    cache: ResponseCache | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """metrics.json's rows (each with its ci95) and each row's per-example statistics, for paired gates."""
    loaded: dict[str, Provider] = {}

    def provider_for(mode: str) -> Callable[[], Provider]:
        def load() -> Provider:
            if mode not in loaded:
                model = models[mode]
                with console.status(f"loading {spec.provider['name']} model {model}…"):
                    loaded[mode] = open_provider({**spec.provider, "model": model}, cache)
                manifest["models"][model] = loaded[mode].describe()
            return loaded[mode]

        return load

    rows: dict[str, list[Any]] = {}
    records = [{"id": e.id, "text": e.text, "gold": task.gold_field(e)} for e in splits.eval]
    scored: dict[str, Scored] = {}
    with_validation = bool(splits.validation) and task.wants_validation_outputs()
    with progress_bar(console) as progress:
        for mode in spec.evaluation["modes"]:
            started = time.perf_counter()
            messages_for = prompts.messages
            if mode == "few_shot":
                messages_for = _few_shot_prompts(
                    spec, task, splits, prompts, run, progress, provider_for("zero_shot"), with_validation
                )

            def answers(examples: list[Example], name: str, mode: str = mode, messages_for=messages_for) -> dict:
                return raw_outputs(
                    task, spec.evaluation, spec.provider["params"], examples, messages_for, provider_for(mode), run,
                    progress, name,
                )  # fmt: skip

            scored[mode] = Scored(answers(splits.eval, mode))
            if with_validation:  # what calibration and the ensemble are fitted on; never the eval split
                scored[mode].validation = answers(splits.validation, f"{mode}_validation")
            validation = (splits.validation, scored[mode].validation) if scored[mode].validation else None
            decoded = task.decode(splits.eval, scored[mode].eval, mode, validation)
            scored[mode].fitted = decoded.fitted
            for record, fields in zip(records, decoded.fields, strict=True):
                record.update(fields)
            rows.update(decoded.rows)
            if decoded.choices:
                manifest.setdefault("choices", {})[mode] = decoded.choices
            manifest["stage_seconds"][mode] = round(time.perf_counter() - started, 1)
            if spec.evaluation["method"] == "generate":
                outputs = list(scored[mode].eval.values())
                manifest.setdefault("usage", {})[mode] = usage_summary(outputs, models[mode])
        started = time.perf_counter()

        def embedder(what: str, texts: int) -> Callable[[list[str]], Any]:
            """The base model's text embeddings, for a task row that needs them (a probe)."""
            bar = progress.add_task(f"{what}: hidden states of {texts} texts", total=texts)
            return llm_embedder(provider_for("zero_shot")(), lambda n: progress.advance(bar, n))

        combined, choices = task.combined_rows(splits.train, splits.validation, splits.eval, scored, embedder)
        if combined:
            rows.update(combined)
            manifest.setdefault("choices", {}).update(choices)
            manifest["stage_seconds"]["combined"] = round(time.perf_counter() - started, 1)
    if spec.evaluation["baseline"]:
        started = time.perf_counter()
        with console.status(f"baseline: {task.baseline_name} on the train split and on all non-eval lines…"):
            everything = splits.outside_eval()
            rows["baseline"] = task.baseline(splits.train, splits.eval)
            rows["baseline_all_data"] = task.baseline(everything, splits.eval)
        manifest["data"]["baseline_all_data_train"] = len(everything)
        manifest["stage_seconds"]["baseline"] = round(time.perf_counter() - started, 1)
    for row, predicted in rows.items():
        for record, value in zip(records, predicted, strict=True):
            record[row] = value
    metrics = {row: task.score(splits.eval, predicted) for row, predicted in rows.items()}
    example_stats = {row: task.example_stats(splits.eval, predicted) for row, predicted in rows.items()}
    for row, found in metrics.items():
        if example_stats[row] is not None:
            found["ci95"] = ci95(example_stats[row], task.aggregate, task.metrics)
    run.write_jsonl("predictions.jsonl", records)
    run.write_json("metrics.json", metrics)
    return metrics, example_stats


def _few_shot_prompts(
    spec: Spec,
    task: Task,
    splits: Splits,
    prompts: PromptBuilder,
    run: RunFolder,
    progress: Progress,
    base: Callable[[], Provider],
    with_validation: bool,
) -> Callable[[Example], list[dict[str, str]]]:
    """Choose each eval item's examples (recorded in few_shot.json) and return its prompt builder.

    When the validation split is answered too (calibration and the ensemble are fitted on it), its
    items get shots as well; an item's shots depend on the pool and itself alone, so the eval
    items' shots are the same with or without it.
    """
    config = spec.doc["few_shot"]
    validation = splits.validation if with_validation else []
    embed = None
    if config["strategy"] == "similar" and config["embedding"] == "llm":
        model = (
            base()
            if spec.provider["name"] == "local"
            else open_provider({"name": "local", "model": "gemma-3-270m", "batch_size": 8})
        )
        texts = len(splits.train) + len(splits.eval) + len(validation)
        bar = progress.add_task(f"few_shot: embed {texts} texts", total=texts)
        embed = llm_embedder(model, lambda n: progress.advance(bar, n))
    shots = choose_shots(config, splits.train, splits.eval + validation, embed, task.stratum)
    run.write_json("few_shot.json", {item: [e.id for e in chosen] for item, chosen in shots.items()})

    def messages_for(example: Example) -> list[dict[str, str]]:
        return prompts.messages(example, shots[example.id])

    return messages_for
