"""Evaluation: ask a model about every eval example, one mode at a time.

Raw model outputs (label scores, or generated text) are appended to the run folder as they
arrive, so an interrupted run resumes with only the missing examples. What the outputs mean is
the task's business (`Task.decode`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.progress import Progress

from runner.core.runfolder import RunFolder
from runner.providers import Completion, Conversation, Provider
from runner.tasks import Example, Task

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
