"""What the page shows beyond the metrics, read back from the run folder: losses (here) and mistakes
(each task type finds its own, `Task.mistakes`, as a MistakeSet).

Losses: the fine-tune stage appends every job event to finetune_events.jsonl (the local trainer
reports every step's train loss in an event every 10 steps, cloud jobs as their API does) and keeps checkpoints,
with train and validation loss, in finetune.json. Mistakes: predictions.jsonl holds, per eval
example, the gold answer, each row's prediction, and the raw label scores (`<mode>_scores`) or
answers (`<mode>_answer`) behind them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from runner.tasks.common import Mistake, MistakeSet

__all__ = ["LossCurve", "Mistake", "MistakeSet", "loss_curve"]


@dataclass
class LossCurve:
    train: list[tuple[int, float]] = field(default_factory=list)  # (step, that one step's loss) from job events
    checkpoint_train: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last)
    valid: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)

    def __bool__(self) -> bool:
        return bool(self.train or self.checkpoint_train or self.valid)


def _point(step: Any, loss: Any) -> tuple[int, float] | None:
    try:
        step, loss = int(step), float(loss)
    except (TypeError, ValueError):
        return None
    return (step, loss) if math.isfinite(loss) else None


def loss_curve(events: list[dict[str, Any]], state: dict[str, Any] | None) -> LossCurve:
    """Train loss by step from events (a step reported twice keeps its last value), checkpoint losses."""
    curve = LossCurve()
    train: dict[int, float] = {}
    valid: dict[int, float] = {}
    for event in events:
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(data, dict):
            continue
        if str(event.get("message", "")).startswith("Checkpoint "):
            continue  # the local trainer's checkpoint events repeat finetune.json's checkpoint means
        if point := _point(data.get("step"), data.get("train_loss")):
            train[point[0]] = point[1]
            every = data.get("step_losses")  # the local trainer: every step's loss since its previous event
            if isinstance(every, list) and len(every) <= point[0]:
                for offset, loss in enumerate(reversed(every)):
                    if found := _point(point[0] - offset, loss):
                        train[found[0]] = found[1]
        if point := _point(data.get("step"), data.get("valid_loss")):  # OpenAI's metrics events carry it
            valid[point[0]] = point[1]
    for checkpoint in (state or {}).get("checkpoints") or []:
        found = (checkpoint.get("metrics") if isinstance(checkpoint, dict) else None) or {}
        step = found.get("step", checkpoint.get("step") if isinstance(checkpoint, dict) else None)
        if point := _point(step, found.get("train_loss")):
            curve.checkpoint_train.append(point)
        if point := _point(step, found.get("valid_loss")):
            valid[point[0]] = point[1]
    curve.train, curve.valid = sorted(train.items()), sorted(valid.items())
    curve.checkpoint_train.sort()
    return curve
