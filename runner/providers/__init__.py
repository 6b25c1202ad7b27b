"""The provider interface: what the pipeline asks of any model backend.

Every provider answers `chat`; a local model can also `score` fixed answers, which is how a
small model is made to always return a label from the label set. Providers that fine-tune
share one job lifecycle: upload, create, find, retrieve, events, checkpoints, cancel, delete.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

Message = dict[str, str]
Conversation = list[Message]
Progress = Callable[[int], None]  # called with the number of items just finished


@dataclass
class Completion:
    text: str
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens
    cached: bool = False


TERMINAL = ("succeeded", "failed", "cancelled")

#: Fine-tuning settings each provider accepts; anything else in a spec is an error, not a silent drop.
FINE_TUNE_SETTINGS: dict[str, set[str]] = {
    "openai": {"n_epochs", "batch_size", "learning_rate_multiplier", "suffix", "seed"},
    "zhipuai": {"n_epochs", "suffix"},
    "openai_compatible": set(),
    "local": {"n_epochs", "batch_size", "learning_rate_multiplier", "suffix", "seed", "local"},
}


@dataclass
class Job:
    id: str
    status: str  # validating_files, queued, running, succeeded, failed, cancelled
    model: str
    training_file: str | None = None
    fine_tuned_model: str | None = None
    error: str | None = None
    trained_tokens: int | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass
class JobEvent:
    id: str
    created_at: int
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    id: str
    step: int
    metrics: dict[str, Any]
    model: str | None = None


class Provider(ABC):
    name: str
    model: str
    chunk_size: int | None = None  # examples per call between saves to the run folder; None: the default

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Model identity for the manifest: resolved path or id, checksum, dtype, device."""

    @abstractmethod
    def chat(
        self,
        conversations: Sequence[Conversation],
        params: dict[str, Any],
        progress: Progress | None = None,
        guides: Sequence[Any] | None = None,
        on_answer: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        """One assistant reply per conversation; `guides` (one per conversation) restrict what may be
        decoded; `on_answer(index, completion)` is called as each reply is ready, so callers can save it."""

    def score(
        self, conversations: Sequence[Conversation], answers: Sequence[str], progress: Progress | None = None
    ) -> np.ndarray:
        """Log-probability of each answer as the assistant's reply: shape (conversations, answers)."""
        raise NotImplementedError(f"provider {self.name!r} cannot score answers; use evaluation.method: generate")

    # Fine-tuning lifecycle; a provider that cannot fine-tune keeps these defaults.
    def upload(self, path: Path) -> str:
        raise NotImplementedError(f"provider {self.name!r} cannot fine-tune")

    def create_job(self, training_file: str, settings: dict[str, Any]) -> Job:
        raise NotImplementedError(f"provider {self.name!r} cannot fine-tune")

    def drive(self, job_id: str, console: Console) -> None:
        """Make the job progress. Remote jobs run at the provider: nothing to do. Local ones train here."""
        return None

    def find_job(self, training_file: str) -> Job | None:
        """The job already created from this uploaded file, if any: how a crashed run reattaches."""
        return next((job for job in self.list_jobs() if job.training_file == training_file), None)

    def list_jobs(self, limit: int = 100) -> list[Job]:
        raise NotImplementedError(f"provider {self.name!r} cannot fine-tune")

    def job(self, job_id: str) -> Job:
        raise NotImplementedError(f"provider {self.name!r} cannot fine-tune")

    def events(self, job_id: str) -> list[JobEvent]:
        """Oldest first."""
        raise NotImplementedError(f"provider {self.name!r} cannot fine-tune")

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        return []

    def cancel(self, job_id: str) -> Job:
        raise NotImplementedError(f"provider {self.name!r} cannot fine-tune")

    def delete_model(self, model: str) -> None:
        raise NotImplementedError(f"provider {self.name!r} cannot fine-tune")
