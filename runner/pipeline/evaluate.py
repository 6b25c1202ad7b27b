"""Stage `eval`: ask a model about every eval example, one mode at a time.

Raw model outputs (label scores, or generated text) are appended to the run folder as they
arrive, so an interrupted run resumes with only the missing examples. What the outputs mean is
the task's business (`Task.decode`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.progress import Progress

from runner.core.progress import progress_bar
from runner.core.runfolder import RunFolder
from runner.data.chat_checks import inference_estimate, usage_summary
from runner.data.fewshot import choose_shots, llm_embedder
from runner.pipeline.context import RunContext
from runner.providers import Completion, Conversation, Provider
from runner.providers import registry as providers
from runner.tasks import Example, Scored, Task

CHUNK = 32  # examples between appends to the run folder


def raw_outputs(
    task: Task,
    evaluation: dict[str, Any],
    params: dict[str, Any],
    examples: list[Example],
    messages_for: Callable[[Example], Conversation],
    provider: Callable[[], Provider],
    run: RunFolder,
    progress: Progress,
    mode: str,
) -> dict[str, dict[str, Any]]:
    """{example id: raw output}, computing only what the run folder does not hold yet."""
    method = evaluation["method"]
    name = f"{mode}.{method}.jsonl"
    done = {row["id"]: row for row in run.read_jsonl(name)}
    todo = [example for example in examples if example.id not in done]
    task_bar = progress.add_task(f"{mode}: {method} {len(examples)} examples", total=len(examples), completed=len(done))
    if todo:
        model = provider()
        size = model.chunk_size or CHUNK
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            conversations = [messages_for(example) for example in chunk]
            advance = lambda n: progress.advance(task_bar, n)  # noqa: E731
            if method == "score":
                scores = model.score(conversations, task.answers(), progress=advance)
                rows = [{"id": e.id, "scores": s.round(5).tolist()} for e, s in zip(chunk, scores, strict=True)]
            else:
                guides = [task.generation_guide(e) for e in chunk]
                saved: set[str] = set()

                def save(index: int, completion: Completion, chunk: list[Example] = chunk, saved: set = saved) -> None:
                    """Each answer reaches the run folder as it arrives: a later failure loses none of them."""
                    row = _row(chunk[index], completion)
                    run.append_jsonl(name, [row])
                    saved.add(row["id"])
                    done[row["id"]] = row

                completions = model.chat(
                    conversations, params, progress=advance, guides=guides if any(guides) else None, on_answer=save
                )
                rows = [_row(e, c) for e, c in zip(chunk, completions, strict=True) if e.id not in saved]
            run.append_jsonl(name, rows)
            done.update((row["id"], row) for row in rows)
    progress.update(task_bar, completed=len(examples))
    return done


def _row(example: Example, completion: Completion) -> dict[str, Any]:
    return {"id": example.id, "text": completion.text, "usage": completion.usage, "cached": completion.cached}


# --- the stage ----------------------------------------------------------------------------------------

NAME = "eval"


def wanted(ctx: RunContext) -> bool:
    return ctx.wants("eval")


def run(ctx: RunContext) -> None:
    """Every mode's raw outputs on the eval split (and on validation when the task fits something
    there), decoded into rows; then the task's combined rows. `--dry-run`: the estimate instead."""
    if ctx.dry_run:
        ctx.outcome.estimate = estimate(ctx)
        ctx.stopped = True
        return
    spec, task, splits, manifest = ctx.spec, ctx.task, ctx.splits, ctx.manifest
    ctx.models.update(zero_shot=spec.provider["model"], few_shot=spec.provider["model"])
    ctx.records = [{"id": e.id, "text": e.text, "gold": task.gold_field(e)} for e in splits.eval]
    with_validation = bool(splits.validation) and task.wants_validation_outputs()
    with progress_bar(ctx.console) as progress:
        for mode in spec.evaluation["modes"]:
            started = time.perf_counter()
            messages_for = ctx.prepared.prompts.messages
            if mode == "few_shot":
                messages_for = _few_shot_prompts(ctx, progress, with_validation)

            def answers(examples: list[Example], name: str, mode: str = mode, messages_for=messages_for) -> dict:
                return raw_outputs(
                    task, spec.evaluation, spec.provider["params"], examples, messages_for, ctx.provider_for(mode),
                    ctx.run, progress, name,
                )  # fmt: skip

            scored = ctx.scored[mode] = Scored(answers(splits.eval, mode))
            if with_validation:  # what calibration and the ensemble are fitted on; never the eval split
                scored.validation = answers(splits.validation, f"{mode}_validation")
            validation = (splits.validation, scored.validation) if scored.validation else None
            decoded = task.decode(splits.eval, scored.eval, mode, validation)
            scored.fitted = decoded.fitted
            for record, fields in zip(ctx.records, decoded.fields, strict=True):
                record.update(fields)
            ctx.rows.update(decoded.rows)
            if decoded.choices:
                manifest.setdefault("choices", {})[mode] = decoded.choices
            ctx.timed(mode, started)
            if spec.evaluation["method"] == "generate":
                outputs = list(scored.eval.values())
                manifest.setdefault("usage", {})[mode] = usage_summary(outputs, ctx.models[mode])
        started = time.perf_counter()

        def embedder(what: str, texts: int) -> Callable[[list[str]], Any]:
            """The base model's text embeddings, for a task row that needs them (a probe)."""
            bar = progress.add_task(f"{what}: hidden states of {texts} texts", total=texts)
            return llm_embedder(ctx.provider_for("zero_shot")(), lambda n: progress.advance(bar, n))

        combined, choices = task.combined_rows(splits.train, splits.validation, splits.eval, ctx.scored, embedder)
        ctx.rows.update(combined)
        if choices:  # recorded also when no row came of them: the manifest says why (llm_crf not chosen)
            manifest.setdefault("choices", {}).update(choices)
        if combined:
            ctx.timed("combined", started)


def _few_shot_prompts(ctx: RunContext, progress: Progress, with_validation: bool) -> Callable[[Example], Conversation]:
    """Choose each eval item's examples (recorded in few_shot.json) and return its prompt builder.

    When the validation split is answered too (calibration and the ensemble are fitted on it), its
    items get shots as well; an item's shots depend on the pool and itself alone, so the eval
    items' shots are the same with or without it.
    """
    spec, splits = ctx.spec, ctx.splits
    config = spec.doc["few_shot"]
    validation = splits.validation if with_validation else []
    embed = None
    if config["strategy"] == "similar" and config["embedding"] == "llm":
        if providers.provider_class(spec.provider["name"]).can_embed:  # the base model the spec names
            model = ctx.provider_for("zero_shot")()
        else:  # an API model has no hidden states to give: the embedded model embeds
            model = providers.open_provider(providers.embedding_provider_config(spec.provider))
        texts = len(splits.train) + len(splits.eval) + len(validation)
        bar = progress.add_task(f"few_shot: embed {texts} texts", total=texts)
        embed = llm_embedder(model, lambda n: progress.advance(bar, n))
    shots = choose_shots(config, splits.train, splits.eval + validation, embed, ctx.task.stratum)
    ctx.run.write_json("few_shot.json", {item: [e.id for e in chosen] for item, chosen in shots.items()})
    prompts = ctx.prepared.prompts

    def messages_for(example: Example) -> Conversation:
        return prompts.messages(example, shots[example.id])

    return messages_for


def estimate(ctx: RunContext) -> dict[str, Any]:
    """--dry-run: print and return what evaluating would send and cost (a matrix totals its cells')."""
    spec, splits, prompts, console = ctx.spec, ctx.splits, ctx.prepared.prompts, ctx.console
    provider = spec.provider
    validation = splits.validation if prompts.task.wants_validation_outputs() else []  # answered too, to fit on
    examples = splits.eval + validation
    including = f" (with {len(validation)} validation lines calibration is fitted on)" if validation else ""
    if not providers.provider_class(provider["name"]).bills_usage:
        console.print(
            f"dry run: nothing spent; the {provider['name']} model would evaluate {len(examples)} examples{including} "
            "(no API cost)"
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
    found = inference_estimate(conversations, provider["model"], max_tokens)
    cost = f"≈ ${found['usd']:.4f}" if found["usd"] is not None else "cost unknown (no price for this model)"
    console.print(
        f"dry run: nothing spent; evaluating {len(examples)} examples{including} on {provider['model']} would send "
        f"{found['prompt_tokens']} prompt tokens and at most {found['max_completion_tokens']} completion tokens: {cost}"
    )
    return {"examples": len(examples), **found}
