"""Task types: everything that differs between classification and extraction lives behind `Task`.

Modelled on lm-evaluation-harness's task contract (doc_to_text / doc_to_target / process_results /
aggregation): the pipeline, evaluation, gates, report, schema, defaults and `specrun init` ask the
task and never branch on its type. A task type is one folder: a built-in is a package here plus one
line in `BUILT_IN`; a plugin is a package installed beside specrun that names its class in the
`specrun.tasks` entry-point group (docs/writing-a-task-type.md walks through one).
"""

from __future__ import annotations

import functools
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from runner.core.errors import InvalidInput
from runner.core.plugins import load_plugin, plugin_table

if TYPE_CHECKING:
    import numpy as np

    from runner.tasks.common import Guess, MistakeSet, Scaffold

Where = Callable[..., str]  # spec.where: key path -> "spec.yaml:12: key.path"
Embed = Callable[[list[str], list[str]], "tuple[np.ndarray, np.ndarray]"]
"""(reference texts, other texts) -> their vectors, normalised using the reference texts alone."""


@dataclass(frozen=True)
class Example:
    id: str  # stable across runs: the row's line in its file
    text: str
    gold: Any  # classification: the dataset label; extraction: a tuple of Entity
    record: dict[str, Any]  # the raw row, for templates


@dataclass
class Decoded:
    """What one evaluation mode produced: predictions per result row, and fields per example."""

    rows: dict[str, list[Any]]  # row name -> one prediction per eval example
    fields: list[dict[str, Any]]  # per example: extra fields for predictions.jsonl
    choices: dict[str, Any] = field(default_factory=dict)  # what was fitted on the validation split, for the manifest
    fitted: Any = None  # the fitted object itself (classification: the chosen calibration), for combined_rows


@dataclass
class Scored:
    """One evaluation mode's raw outputs on the eval split, and on the validation split when it was scored."""

    eval: dict[str, dict[str, Any]]
    validation: dict[str, dict[str, Any]] | None = None
    fitted: Any = None  # what decode fitted for this mode (Decoded.fitted)


class Task(ABC):
    """One task type, configured by a spec."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # what gates may name; each a share from 0 to 1 (gates check bounds)
    primary_metric: ClassVar[str]  # the headline figure: verdicts, tables
    methods: ClassVar[tuple[str, ...]]  # evaluation methods it supports
    baseline_name: ClassVar[str]  # e.g. "TF-IDF+LR"
    max_tokens: ClassVar[int] = 16  # provider.params.max_tokens when the spec leaves it out: one short answer
    text_keyed: ClassVar[tuple[str, ...]] = ()  # spec sections keyed by dataset values ("labels"): keys read as text

    def __init__(self, doc: dict[str, Any]):
        self.doc = doc

    # Spec: its part of the schema, its defaults, its checks, its rows
    @classmethod
    def schema(cls) -> dict[str, Any]:
        """This task's part of the spec schema (runner/config/schema.py composes them), read from the
        `schema.json` beside the task's module: {"description", "properties" (merged into the spec's),
        "then" (applied when task is this one)}."""
        path = Path(sys.modules[cls.__module__].__file__ or "").parent / "schema.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    @classmethod
    def apply_defaults(cls, doc: dict[str, Any], provider_cls: type) -> None:
        """Fill the defaults that depend on the task (before the schema's generic ones, so they win)."""
        doc["provider"]["params"].setdefault("max_tokens", cls.max_tokens)
        evaluation = doc["evaluation"]
        evaluation.setdefault("method", "generate" if "generate" in cls.methods else cls.methods[0])
        evaluation.setdefault("calibration", "none")

    @classmethod
    @abstractmethod
    def check_spec(cls, doc: dict[str, Any], where: Where) -> None:
        """Task-specific semantic checks of a loaded spec (exit 2 naming the key)."""

    @classmethod
    def check_foreign_rows(cls, doc: dict[str, Any], where: Where) -> None:
        """A row another task type adds (its extra_rows) asked for in this task's spec is exit 2."""
        for other in task_names():
            if other != cls.name:
                for row in task_class(other).extra_rows(doc):
                    raise InvalidInput(
                        f"evaluation.{row} is a {other} row; {cls.name} has none", where=where("evaluation", row)
                    )

    @classmethod
    def result_rows(cls, doc: dict[str, Any]) -> list[str]:
        """The rows the evaluation modes produce, first mode first (baseline and extra rows are added after)."""
        return list(doc["evaluation"]["modes"])

    def row_description(self, row: str, manifest: dict[str, Any]) -> str | None:
        """What produced a row of this task, for tables; None: the generic "model · method"."""
        return None

    # Data
    @abstractmethod
    def read_example(self, row: Any, fmt: str, where: str, example_id: str) -> Example | None:
        """One dataset row as an Example, None when the spec excludes it; InvalidInput naming `where`."""

    def check_read(self, where: Where) -> None:
        """Called once every split is read: problems only the whole data shows (unused exclusions)."""
        return None

    def stratum(self, example: Example) -> str:
        """What stratified splits and balanced few-shot keep in proportion."""
        return ""

    # Prompts
    @abstractmethod
    def prompt_variables(self) -> dict[str, Any]:
        """Template variables shared by every example (label list, entity types...)."""

    @abstractmethod
    def target(self, example: Example) -> str:
        """The answer a model should give: the assistant message in train.jsonl."""

    def shot(self, example: Example) -> dict[str, Any]:
        """A few-shot example as the template's `examples` items see it."""
        return {"text": example.text, "answer": self.target(example)}

    def answers(self) -> list[str] | None:
        """The closed answer set `method: score` ranks, or None when answers are open."""
        return None

    # Evaluation
    @abstractmethod
    def decode(
        self,
        examples: list[Example],
        outputs: dict[str, dict[str, Any]],
        mode: str,
        validation: tuple[list[Example], dict[str, dict[str, Any]]] | None = None,
    ) -> Decoded:
        """Turn raw model outputs (label scores or generated text) into predictions; anything fitted
        (calibration) is fitted on `validation`'s outputs, never on the eval split's gold."""

    def wants_validation_outputs(self) -> bool:
        """Whether each mode should also answer the validation split (to choose calibration, fit an ensemble)."""
        return False

    @classmethod
    def extra_rows(cls, doc: dict[str, Any]) -> list[str]:
        """Names of the rows `combined_rows` will add for this spec (gates may name them)."""
        return []

    def combined_rows(
        self,
        train: list[Example],
        validation: list[Example],
        evaluation: list[Example],
        scored: dict[str, Scored],
        embedder: Callable[[str, int], Embed],
    ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """Rows that combine the modes' outputs with classical models (an ensemble, a probe on the LLM's
        hidden states), and what was chosen for them; none by default. `embedder(what, n_texts)`
        opens the base model's text embeddings, only if a row asks for them."""
        return {}, {}

    @abstractmethod
    def score(self, examples: list[Example], predicted: list[Any]) -> dict[str, Any]:
        """Metrics of one result row: every name in `metrics`, plus the counts behind them."""

    @abstractmethod
    def baseline(self, train: list[Example], evaluation: list[Example]) -> list[Any]:
        """The classical rival's predictions for `evaluation`, trained on `train`."""

    def gold_field(self, example: Example) -> Any:
        """The gold answer as predictions.jsonl records it."""
        return example.gold

    def prediction_files(self, examples: list[Example], rows: dict[str, list[Any]]) -> dict[str, str]:
        """Files written beside predictions.jsonl (name -> text), each row's predictions in the layout the
        data's own tools read (extraction: conlleval's, for data read from CoNLL); none by default."""
        return {}

    # Uncertainty (runner/core/stats.py resamples examples; lm-evaluation-harness's per-example results + aggregation)
    def example_stats(self, examples: list[Example], predicted: list[Any]) -> np.ndarray | None:
        """One row of counts per example, shape (n, k), whose column sums `aggregate` turns into every metric.

        Counts, not per-example scores: macro-F1 and entity F1 divide summed TP/FP/FN, so a resample's
        metric is only right when its counts are summed first. None: this task has no intervals.
        """
        return None

    def aggregate(self, totals: np.ndarray) -> dict[str, Any]:
        """Every name in `metrics` from column sums of `example_stats`: totals of shape (k,) give numbers,
        (resamples, k) give one value per resample. aggregate(stats.sum(axis=0)) equals `score`'s metrics."""
        raise NotImplementedError(f"{self.name} has no per-example statistics")

    # Report
    @abstractmethod
    def table_columns(self) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
        """(header, cell) pairs for the results table, after `row` and `what`."""

    @abstractmethod
    def report_section(self, metrics: dict[str, Any], row: str) -> list[str]:
        """Markdown lines about the primary row: per class or per type, errors with examples."""

    def comparison_section(self, metrics: dict[str, dict[str, Any]], primary: str) -> list[str]:
        """Markdown lines setting rows side by side (metrics: every row's), after `report_section`; none by default."""
        return []

    def trivial(self, metrics: dict[str, Any]) -> tuple[str, float] | None:
        """(what it answers, its `primary_metric`) for the predictor that never reads the text, from one
        row's metrics on this eval split: the floor a headline row must beat (a row that always answers
        the most frequent label can top accuracy on an unbalanced set). None: the task knows no floor."""
        return None

    # summary.json's `breakdown` and report.html's table and figure of it (None: the task has none)
    breakdown_key: ClassVar[str | None] = None  # the metrics.json key of per-item precision/recall/F1/support
    breakdown_title: ClassVar[str] = "Per item"  # the page's heading
    breakdown_column: ClassVar[str] = "item"  # the table's first column
    breakdown_chart: ClassVar[str | None] = None  # axis label of a bar chart of it when there is no confusion matrix
    breakdown_nothing: ClassVar[str] = "Nothing found"  # said instead of that chart when every bar would be 0

    @classmethod
    def display_names(cls, spec: dict[str, Any]) -> dict[str, str]:
        """Dataset label or type -> the name the model sees, for the page."""
        return {}

    def mistakes(self, records: list[dict[str, Any]], row: str, manifest: dict[str, Any]) -> MistakeSet | None:
        """The row's wrong answers from predictions.jsonl, for the page; None: none to show."""
        return None

    # `specrun init`: each registered task is asked, lowest guess_order first; the first Guess wins
    guess_order: ClassVar[int] = 50

    @classmethod
    def guess(cls, path: Path, rows: list[dict[str, Any]], container: str, flags: dict[str, Any]) -> Guess | None:
        """What this task would read from these rows, or None when they are not its kind of data
        (flags["claimed"]: the user named this task, so say why not instead, as InvalidInput)."""
        if flags.get("claimed"):
            raise InvalidInput(f"specrun init cannot write a {cls.name} spec; write it by hand", where=str(path))
        return None

    @classmethod
    def scaffold(cls, guess: Guess) -> Scaffold:
        """The task's parts of the spec and template init writes."""
        raise NotImplementedError(f"{cls.name} has no init scaffold")

    def generation_guide(self, example: Example) -> Any:
        """An object that restricts what a local model may generate for this example, or None."""
        return None


ENTRY_POINT_GROUP = "specrun.tasks"
BUILT_IN = {
    "classification": "runner.tasks.classification:ClassificationTask",
    "extraction": "runner.tasks.extraction:ExtractionTask",
}


@functools.cache
def task_table() -> dict[str, str]:
    """name -> "module:Class", built-ins first; a plugin cannot replace a built-in name."""
    return plugin_table(ENTRY_POINT_GROUP, BUILT_IN)


def task_names() -> list[str]:
    """Every registered task type: the spec schema's `task` values and `specrun init --task` choices."""
    return list(task_table())


def task_class(name: str) -> type[Task]:
    """The class registered under `name`; InvalidInput naming `task` for an unknown one or a non-Task."""
    return load_plugin(task_table(), name, Task, "task type", "task")


def make_task(doc: dict[str, Any]) -> Task:
    return task_class(doc["task"])(doc)


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def pct_ci(metrics: dict[str, Any], key: str) -> str:
    """'41.1% (38.0–44.2)': a percentage with its 95% bootstrap interval when the row has one."""
    bounds = (metrics.get("ci95") or {}).get(key)
    text = pct(metrics[key])
    return f"{text} ({100 * bounds[0]:.1f}–{100 * bounds[1]:.1f})" if bounds else text
