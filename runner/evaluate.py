"""Evaluation: ask a model about every eval example (one mode at a time) and turn answers into labels.

Raw model outputs (label scores, or generated text) are appended to the run folder as they
arrive, so an interrupted run resumes with only the missing examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from rich.progress import Progress

from runner.data import Example
from runner.normalize import normalize_answer
from runner.providers import Conversation, Provider
from runner.runs import RunFolder
from runner.spec import Spec

CHUNK = 32  # examples between appends to the run folder


def raw_outputs(
    spec: Spec,
    examples: list[Example],
    messages_for: Callable[[Example], Conversation],
    provider: Callable[[], Provider],
    run: RunFolder,
    progress: Progress,
    mode: str,
) -> dict[str, dict[str, Any]]:
    """{example id: raw output}, computing only what the run folder does not hold yet."""
    method = spec.evaluation["method"]
    name = f"{mode}.{method}.jsonl"
    done = {row["id"]: row for row in run.read_jsonl(name)}
    todo = [example for example in examples if example.id not in done]
    task = progress.add_task(f"{mode}: {method} {len(examples)} examples", total=len(examples), completed=len(done))
    if todo:
        model = provider()
        label_names = list(spec.labels.values())
        size = model.chunk_size or CHUNK
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            conversations = [messages_for(example) for example in chunk]
            advance = lambda n: progress.advance(task, n)  # noqa: E731
            if method == "score":
                scores = model.score(conversations, label_names, progress=advance)
                rows = [{"id": e.id, "scores": s.round(5).tolist()} for e, s in zip(chunk, scores, strict=True)]
            else:
                completions = model.chat(conversations, spec.provider["params"], progress=advance)
                rows = [
                    {"id": e.id, "text": c.text, "usage": c.usage, "cached": c.cached}
                    for e, c in zip(chunk, completions, strict=True)
                ]
            run.append_jsonl(name, rows)
            done.update((row["id"], row) for row in rows)
    progress.update(task, completed=len(examples))
    return done


def predictions(
    spec: Spec, examples: list[Example], outputs: dict[str, dict[str, Any]], mode: str
) -> tuple[dict[str, list[str | None]], list[dict[str, Any]]]:
    """Predicted labels per result row, and one record per example for predictions.jsonl."""
    labels = list(spec.labels)
    records = [{"id": e.id, "text": e.text, "gold": e.label} for e in examples]
    rows: dict[str, list[str | None]] = {}
    if spec.evaluation["method"] == "score":
        scores = np.array([outputs[e.id]["scores"] for e in examples])
        raw = [labels[i] for i in scores.argmax(axis=1)]
        if spec.evaluation["calibration"] == "mean":
            calibrated = scores - scores.mean(axis=0, keepdims=True)
            rows[mode] = [labels[i] for i in calibrated.argmax(axis=1)]
            rows[f"{mode}_uncalibrated"] = raw
        else:
            rows[mode] = raw
        for record, score in zip(records, scores, strict=True):
            record[f"{mode}_scores"] = dict(zip(labels, score.round(4).tolist(), strict=True))
    else:
        rows[mode] = [normalize_answer(outputs[e.id]["text"], spec.labels) for e in examples]
        for record, example in zip(records, examples, strict=True):
            record[f"{mode}_answer"] = outputs[example.id]["text"]
    for row, predicted in rows.items():
        for record, label in zip(records, predicted, strict=True):
            record[row] = label
    return rows, records
