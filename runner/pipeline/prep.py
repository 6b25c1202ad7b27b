"""Stage `prep`: read every split, render every prompt, and write the chat fine-tuning JSONL.

`prepare` runs before a run folder exists (and for `specrun validate`): bad data or a template that
fails on some row is an error then, not after a model has loaded or money was spent.
"""

from __future__ import annotations

from runner.config.spec import Spec
from runner.core.errors import InvalidInput
from runner.data.dataset import make_splits
from runner.data.prompts import PromptBuilder
from runner.pipeline.context import Prepared, RunContext
from runner.tasks import make_task

NAME = "prep"


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


def wanted(ctx: RunContext) -> bool:
    """The checks read train.jsonl and a fine-tuning job uploads it."""
    return ctx.wants("prep") or ctx.wants("check") or ctx.fine_tuning


def run(ctx: RunContext) -> None:
    ctx.run.write_jsonl("train.jsonl", ctx.prepared.training)
    if ctx.prepared.validation:
        ctx.run.write_jsonl("validation.jsonl", ctx.prepared.validation)
    ctx.console.print(f"prep: {len(ctx.prepared.training)} chat examples → {ctx.run.file('train.jsonl')}")
