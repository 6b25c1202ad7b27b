"""What the stages of one run share: the spec, what was read before the run folder existed, the
run folder and manifest, and what each stage leaves for the next (models, rows, metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console

from runner.config.spec import Spec
from runner.core.runfolder import RunFolder
from runner.data.dataset import Splits
from runner.data.prompts import PromptBuilder
from runner.providers import Provider
from runner.providers import registry as providers
from runner.tasks import Scored, Task

if TYPE_CHECKING:
    from runner.pipeline.gates import AgainstRun


@dataclass
class Prepared:
    """Everything read and rendered from a spec before any model is loaded or money spent."""

    task: Task
    splits: Splits
    prompts: PromptBuilder
    training: list[dict[str, Any]]
    validation: list[dict[str, Any]]


@dataclass
class Outcome:
    run: RunFolder
    exit_code: int
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None  # --dry-run: what evaluating would send and cost (usd None: unknown)


@dataclass
class RunContext:
    """One run as its stages see it. A stage reads what earlier stages left and adds its own part."""

    spec: Spec
    prepared: Prepared
    stages: tuple[str, ...]  # what the command asked for (pipeline.COMMAND_STAGES)
    run: RunFolder
    manifest: dict[str, Any]
    console: Console
    outcome: Outcome
    dry_run: bool = False
    cache: Any = None  # the response cache, for providers that buy answers
    against: AgainstRun | None = None
    started: float = field(default_factory=time.perf_counter)
    models: dict[str, str] = field(default_factory=dict)  # evaluation mode -> the model that answers it
    rows: dict[str, list[Any]] = field(default_factory=dict)  # result row -> one prediction per eval example
    records: list[dict[str, Any]] = field(default_factory=list)  # predictions.jsonl, one per eval example
    scored: dict[str, Scored] = field(default_factory=dict)  # each mode's raw outputs
    example_stats: dict[str, Any] = field(default_factory=dict)  # row -> per-example counts, for paired gates
    stopped: bool = False  # a stage ended the run early (--dry-run after its estimate)
    _loaded: dict[str, Provider] = field(default_factory=dict)

    @property
    def task(self) -> Task:
        return self.prepared.task

    @property
    def splits(self) -> Splits:
        return self.prepared.splits

    def wants(self, stage: str) -> bool:
        return stage in self.stages

    @property
    def fine_tuning(self) -> bool:
        return self.spec.doc["fine_tune"]["enabled"] and self.wants("fine_tune")

    def provider_for(self, mode: str) -> Callable[[], Provider]:
        """A loader of the model that answers `mode`, opened once on first use (loading a local model
        takes seconds; a mode whose answers are all in the run folder never loads it)."""

        def load() -> Provider:
            if mode not in self._loaded:
                model = self.models[mode]
                with self.console.status(f"loading {self.spec.provider['name']} model {model}…"):
                    self._loaded[mode] = providers.open_provider({**self.spec.provider, "model": model}, self.cache)
                self.manifest["models"][model] = self._loaded[mode].describe()
            return self._loaded[mode]

        return load

    def timed(self, name: str, started: float) -> None:
        self.manifest["stage_seconds"][name] = round(time.perf_counter() - started, 1)
