"""The provider interface: what the pipeline asks of any model backend.

Every provider answers `chat`; a local model can also `score` fixed answers, which is how a
small model is made to always return a label from the label set. Providers that fine-tune
share one job lifecycle: upload, create, find, retrieve, events, checkpoints, cancel, delete.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from rich.console import Console

from runner.core.errors import InvalidInput

Message = dict[str, str]
Conversation = list[Message]
Progress = Callable[[int], None]  # called with the number of items just finished


@dataclass
class Completion:
    text: str
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens
    cached: bool = False


TERMINAL = ("succeeded", "failed", "cancelled")

#: What a job, model, file or checkpoint id may be before it is put into a request path or a folder name.
#: Every id these APIs hand out fits (ftjob-abc, ft:gpt-4o-mini:org:suffix:id, file-local-1a2b-3c4d); nothing
#: that fits can leave its path segment: no '/', '%', '?', '#', space, and no leading '.' (so no '..').
ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}")


def check_id(value: str, what: str = "id") -> str:
    """`value` when it has the shape of an id, else exit 2 naming it: a path such as `../../files/x` or a
    query `x?y=` would otherwise reach a URL (or a folder) as something other than the resource meant."""
    if not isinstance(value, str) or not ID_SHAPE.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "…"
        raise InvalidInput(
            f"{what} {shown} is not an id: ids are 1-256 letters, digits, '.', '_', ':' or '-', starting with "
            "a letter or digit"
        )
    return value


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
    """One model backend. What it can do is written as class attributes, so the rest of specrun asks
    the class (`provider_class(name).can_score`) and never compares a provider's name.

    Modelled on simonw/llm's `Model`: a small class per backend, registered by name
    (runner/providers/registry.py, plus the `specrun.providers` entry-point group for plugins).
    """

    name: ClassVar[str]  # the spec's provider.name
    default_model: ClassVar[str | None] = None  # provider.model when the spec gives none; None: the spec must
    needs_key: ClassVar[bool] = False  # refuse to start without the key in the environment
    key_env: ClassVar[str | None] = None  # environment variable holding the key (provider.api_key_env overrides)
    needs_base_url: ClassVar[bool] = False  # the spec must give provider.base_url
    can_score: ClassVar[bool] = False  # evaluation.method: score (log-probabilities of fixed answers)
    scores_by_default: ClassVar[bool] = False  # a closed answer set is scored, not generated, unless the spec says
    default_scoring: ClassVar[str | None] = None  # provider.scoring filled in when method is score (API paths)
    can_embed: ClassVar[bool] = False  # hidden-state text embeddings (probe rows, few_shot.embedding: llm)
    can_guide: ClassVar[bool] = False  # constrained decoding (evaluation.constrained)
    fine_tune_settings: ClassVar[frozenset[str]] = frozenset()  # what fine_tune may set; empty: cannot fine-tune
    caches_responses: ClassVar[bool] = True  # answers bought from a server go through the response cache
    bills_usage: ClassVar[bool] = True  # tokens cost money (False: counted, nothing bought)
    ignored_keys: ClassVar[tuple[str, ...]] = ()  # provider keys with no use here, dropped when defaults are filled
    path_keys: ClassVar[tuple[str, ...]] = ()  # its own keys naming files: relative to the spec, hashed with it
    model: str
    chunk_size: int | None = None  # examples per call between saves to the run folder; None: the default

    @classmethod
    def check_config(cls, doc: dict[str, Any], where: Callable[..., str], answers: Sequence[str] | None = None) -> None:
        """This provider's own exit-2 checks of a loaded spec (`where(*key path)` names the spec line;
        `answers`: the task's closed answer set, None when answers are open)."""
        provider = doc["provider"]
        if cls.default_model is None and not provider.get("model"):
            raise InvalidInput(f"provider {cls.name} needs a model name", where=where("provider", "model"))
        if cls.needs_base_url and not provider.get("base_url"):
            raise InvalidInput(f"{cls.name} needs the server's base_url", where=where("provider"))
        if provider.get("base_url") is not None:  # its form needs no network: `specrun validate` finds a typo
            from runner.providers.api.transport import check_base_url

            check_base_url(provider["base_url"], where("provider", "base_url"))
        cls.check_scoring(doc, where, answers)
        cls.check_fine_tune(doc, where)

    @classmethod
    def check_scoring(cls, doc: dict[str, Any], where: Callable[..., str], answers: Sequence[str] | None) -> None:
        """The provider keys of API label scoring are refused by providers that do not score through an API."""
        given = [key for key in ("scoring", "prompts_per_request") if key in doc["provider"]]
        if given:
            raise InvalidInput(
                f"provider.{given[0]} applies only to method: score with an API provider",
                where=where("provider", given[0]),
            )

    @classmethod
    def check_fine_tune(cls, doc: dict[str, Any], where: Callable[..., str]) -> None:
        """fine_tune sets only what this provider's fine-tuning takes."""
        fine_tune, accepted = doc["fine_tune"], cls.fine_tune_settings
        if not fine_tune["enabled"]:
            return
        if not accepted:
            raise InvalidInput(f"provider {cls.name} has no fine-tuning API", where=where("fine_tune", "enabled"))
        for key, path in [(k, ("fine_tune", "hyperparameters", k)) for k in fine_tune["hyperparameters"]] + [
            (k, ("fine_tune", k)) for k in ("suffix", "seed", "local") if k in fine_tune
        ]:
            if key not in accepted:
                raise InvalidInput(
                    f"{cls.name} fine-tuning does not take {key} (it takes: {', '.join(sorted(accepted))})",
                    where=where(*path),
                )

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """Keys of its own in the spec's `provider` section, as a JSON Schema fragment
        ({"properties": {key: schema}}), composed into the spec schema (runner/config/schema.py)."""
        return {}

    @classmethod
    def preflight(cls, config: dict[str, Any]) -> None:
        """Fail now, naming the spec key, on what would fail later (a missing key, a model that is not
        there). Loads nothing and sends nothing."""
        return None

    @classmethod
    def open(cls, config: dict[str, Any], cache: Any = None) -> Provider:
        """The provider a spec's `provider` section describes, ready to answer (a local model is loaded).
        Every registered provider has it (tests/test_layout_providers.py); a stand-in built directly
        (a test's fake model) need not."""
        raise NotImplementedError(f"provider {cls.name!r} cannot be opened from a spec")

    @classmethod
    def open_jobs(cls, config: dict[str, Any]) -> Any:
        """What `specrun jobs` asks about fine-tuning jobs (list_jobs, job, events, checkpoints, cancel,
        delete_model): the provider itself unless it can answer without opening a model."""
        return cls.open(config)

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
