"""Single-label classification: one dataset label per example, answered as its display name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runner.core.errors import InvalidInput
from runner.providers.registry import capability
from runner.tasks import Decoded, Embed, Example, Scored, Task, Where, pct_ci
from runner.tasks.classification import report as page
from runner.tasks.classification.baseline import baseline_predictions, baseline_probabilities, probe_predictions
from runner.tasks.classification.combine import (
    Calibration,
    accuracy,
    choose_calibration,
    choose_weight,
    ensemble_scores,
)
from runner.tasks.classification.metrics import classification_aggregate, classification_metrics, classification_stats
from runner.tasks.classification.normalize import first_twins, normalize_answer, unreadable
from runner.tasks.common import Guess, MistakeSet, Scaffold, join_text, word_problem


class ClassificationTask(Task):
    name = "classification"
    metrics = ("accuracy", "macro_f1", "invalid_rate")
    primary_metric = "accuracy"
    methods = ("score", "generate")
    baseline_name = "TF-IDF+LR"
    text_keyed = ("labels",)

    def __init__(self, doc: dict[str, Any]):
        super().__init__(doc)
        self.labels: dict[str, str] = doc["labels"]
        self.data = doc["data"]
        self.calibration = doc["evaluation"]["calibration"]
        self.excluded_seen: set[str] = set()

    @classmethod
    def apply_defaults(cls, doc: dict[str, Any], provider_cls: type) -> None:
        doc["provider"]["params"].setdefault("max_tokens", cls.max_tokens)
        evaluation = doc["evaluation"]
        # Label scoring needs a closed answer set (this task's) and token log-probabilities (the provider's).
        evaluation.setdefault("method", "score" if getattr(provider_cls, "scores_by_default", False) else "generate")
        evaluation.setdefault("calibration", "auto" if evaluation["method"] == "score" else "none")

    @classmethod
    def check_spec(cls, doc: dict[str, Any], where: Where) -> None:
        labels = doc["labels"]
        if len(labels) < 2:
            raise InvalidInput("classification needs at least two labels", where=where("labels"))
        for label, name in labels.items():
            if problem := word_problem(name):
                raise InvalidInput(
                    f"{name!r} cannot be answered: a label's word needs visible text on one line ({problem})",
                    where=where("labels", label),
                )
        if (silent := unreadable(labels)) is not None:
            raise InvalidInput(
                f"{labels[silent]!r} cannot be answered: once case, width, invisible characters, a 'label:' "
                "prefix and edge punctuation are set aside (as answers are read) nothing is left",
                where=where("labels", silent),
            )
        if twins := first_twins({label: (label, name) for label, name in labels.items()}):
            first, second, form = twins
            raise InvalidInput(
                f"labels {first!r} and {second!r} read the same once case, width and edges are folded "
                f"({form!r}); answers could not tell them apart",
                where=where("labels", second),
            )
        if doc["data"].get("label_field") in doc["data"].get("text_fields", []):
            raise InvalidInput(
                f"{doc['data']['label_field']!r} is both the label field and a text field: the prompt would show "
                "the answer",
                where=where("data", "text_fields"),
            )
        for label in doc["data"].get("exclude_labels", []):
            if label in labels:
                raise InvalidInput(f"{label!r} is both excluded and in labels", where=where("data", "exclude_labels"))
        for key in ("entities",):
            if key in doc:
                raise InvalidInput(f"{key} is for task: extraction", where=where(key))
        evaluation, has_validation = doc["evaluation"], "validation" in doc["splits"]
        needs_validation = {
            "evaluation.ensemble": evaluation["ensemble"],
            "evaluation.calibration: bias": evaluation["calibration"] == "bias",
        }
        for what, wanted in needs_validation.items():
            if wanted and not has_validation:
                raise InvalidInput(
                    f"{what} is fitted on a validation split; add splits.validation (e.g. {{take: random, n: 300, seed: 7}})",
                    where=where("evaluation"),
                )
        if evaluation["ensemble"] and evaluation["method"] != "score":
            raise InvalidInput(
                "evaluation.ensemble combines label scores: it needs method: score",
                where=where("evaluation", "ensemble"),
            )
        if evaluation["probe"] and not capability(doc["provider"]["name"], "can_embed", False):
            raise InvalidInput(
                "evaluation.probe reads the model's hidden states: it needs provider: local",
                where=where("evaluation", "probe"),
            )
        if doc["data"].get("format") in ("cluener", "entities", "prompt_completion", "conll"):
            raise InvalidInput(
                f"format {doc['data']['format']} holds entities; classification reads jsonl, json, csv or tsv",
                where=where("data", "format"),
            )

    def read_example(self, row: Any, fmt: str, where: str, example_id: str) -> Example | None:
        if not isinstance(row, dict):
            raise InvalidInput(f"expected an object with fields, got {type(row).__name__}", where=where)
        for field in (*self.data["text_fields"], self.data["label_field"]):
            if field not in row:
                raise InvalidInput(f"missing field {field!r} (fields here: {', '.join(map(str, row))})", where=where)
        label = row[self.data["label_field"]]
        if isinstance(label, (dict, list)) or label is None:
            raise InvalidInput(f"label field {self.data['label_field']!r} holds {label!r}, not a label", where=where)
        label = str(label)
        if label in self.data["exclude_labels"]:
            self.excluded_seen.add(label)
            return None
        if label not in self.labels:
            raise InvalidInput(
                f"label {label!r} is not in the spec's labels; add it there or to data.exclude_labels", where=where
            )
        text = join_text(row, self.data["text_fields"], where)
        if not text.strip():  # nothing to classify (a blank review): dropped and counted as excluded rows are
            return None
        return Example(id=example_id, text=text, gold=label, record=row)

    def stratum(self, example: Example) -> str:
        return example.gold

    def check_read(self, where: Where) -> None:
        unseen = [label for label in self.data["exclude_labels"] if label not in self.excluded_seen]
        if unseen:
            raise InvalidInput(
                f"exclude_labels names {unseen[0]!r}, which no row has; a misspelt label excludes nothing",
                where=where("data", "exclude_labels"),
            )

    def prompt_variables(self) -> dict[str, Any]:
        return {"labels": list(self.labels.values())}

    def target(self, example: Example) -> str:
        return self.labels[example.gold]

    def shot(self, example: Example) -> dict[str, Any]:
        return {"text": example.text, "label": self.labels[example.gold], "answer": self.labels[example.gold]}

    def answers(self) -> list[str]:
        return list(self.labels.values())

    def decode(
        self,
        examples: list[Example],
        outputs: dict[str, dict[str, Any]],
        mode: str,
        validation: tuple[list[Example], dict[str, dict[str, Any]]] | None = None,
    ) -> Decoded:
        labels = list(self.labels)
        fields: list[dict[str, Any]] = [{} for _ in examples]
        rows: dict[str, list[Any]] = {}
        choices: dict[str, Any] = {}
        calibration = None
        if "scores" in outputs[examples[0].id]:
            scores = score_matrix(examples, outputs)
            if self.calibration in ("auto", "bias"):
                if not validation:  # auto without a validation split: mean, the default for a base model
                    calibration = Calibration("mean")
                    choices["calibration"] = {"chosen": "mean", "why": "no validation split to choose on"}
                else:
                    among = ("none", "mean", "bias") if self.calibration == "auto" else ("bias",)
                    calibration, found, why = choose_calibration(
                        score_matrix(*validation), self.gold_indices(validation[0]), among
                    )
                    choices["calibration"] = {"chosen": calibration.method, "validation_accuracy": found}
                    if why:
                        choices["calibration"]["why"] = why
                    if calibration.bias:
                        choices["calibration"]["bias"] = dict(
                            zip(labels, np.round(calibration.bias, 4).tolist(), strict=True)
                        )
            else:
                calibration = Calibration(self.calibration)
            if self.calibration == "none":
                rows[mode] = [labels[i] for i in scores.argmax(axis=1)]
            else:
                rows[mode] = [labels[i] for i in calibration.apply(scores).argmax(axis=1)]
                rows[f"{mode}_uncalibrated"] = [labels[i] for i in scores.argmax(axis=1)]
            for field, score in zip(fields, scores, strict=True):
                field[f"{mode}_scores"] = dict(zip(labels, score.round(4).tolist(), strict=True))
        else:
            rows[mode] = [normalize_answer(outputs[e.id]["text"], self.labels) for e in examples]
            for field, example in zip(fields, examples, strict=True):
                field[f"{mode}_answer"] = outputs[example.id]["text"]
        return Decoded(rows=rows, fields=fields, choices=choices, fitted=calibration)

    @classmethod
    def result_rows(cls, doc: dict[str, Any]) -> list[str]:
        evaluation = doc["evaluation"]
        rows = list(evaluation["modes"])
        if evaluation["method"] == "score" and evaluation["calibration"] != "none":
            rows += [f"{mode}_uncalibrated" for mode in evaluation["modes"]]
        return rows

    @classmethod
    def extra_rows(cls, doc: dict[str, Any]) -> list[str]:
        return [row for row in ("ensemble", "probe") if doc["evaluation"].get(row)]

    def row_description(self, row: str, manifest: dict[str, Any]) -> str | None:
        return page.row_description(row, manifest, self.baseline_name)

    guess_order = 90  # any table with a column of a few values can be classified: asked last

    @classmethod
    def guess(cls, path: Path, rows: list[dict[str, Any]], container: str, flags: dict[str, Any]) -> Guess | None:
        from runner.tasks.classification import scaffold

        return scaffold.guess(path, rows, container, cls.name, flags.get("text_field"), flags.get("label_field"))

    @classmethod
    def scaffold(cls, guess: Guess) -> Scaffold:
        from runner.tasks.classification import scaffold

        return scaffold.scaffold(guess)

    breakdown_key = "per_class"
    breakdown_title = "Per class"
    breakdown_column = "label"

    @classmethod
    def display_names(cls, spec: dict[str, Any]) -> dict[str, str]:
        return {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}

    def mistakes(self, records: list[dict[str, Any]], row: str, manifest: dict[str, Any]) -> MistakeSet | None:
        names = self.display_names(manifest["spec"])
        return page.classification_mistakes(records, row, names, page.calibration_of(manifest, row))

    def wants_validation_outputs(self) -> bool:
        evaluation = self.doc["evaluation"]
        return evaluation["method"] == "score" and (
            evaluation["calibration"] in ("auto", "bias") or evaluation["ensemble"]
        )

    def gold_indices(self, examples: list[Example]) -> np.ndarray:
        labels = list(self.labels)
        return np.array([labels.index(example.gold) for example in examples])

    def combined_rows(
        self,
        train: list[Example],
        validation: list[Example],
        evaluation: list[Example],
        scored: dict[str, Scored],
        embedder: Callable[[str, int], Embed],
    ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """`ensemble`: the best-on-validation scoring mode + TF-IDF; `probe`: LR on the LLM's hidden states."""
        labels = list(self.labels)
        rows: dict[str, list[Any]] = {}
        choices: dict[str, Any] = {}
        options = self.doc["evaluation"]
        if options["ensemble"]:
            gold = self.gold_indices(validation)
            candidates = {
                mode: found.fitted.apply(score_matrix(validation, found.validation))
                for mode, found in scored.items()
                if found.validation and "scores" in next(iter(found.validation.values()))
            }
            mode = max(candidates, key=lambda m: accuracy(candidates[m], gold))
            proba_validation, proba_eval = baseline_probabilities(train, [validation, evaluation], labels)
            weight, found = choose_weight(candidates[mode], proba_validation, gold)
            llm_eval = scored[mode].fitted.apply(score_matrix(evaluation, scored[mode].eval))
            rows["ensemble"] = [labels[i] for i in ensemble_scores(llm_eval, proba_eval, weight).argmax(axis=1)]
            choices["ensemble"] = {
                "mode": mode,
                "calibration": scored[mode].fitted.method,
                "llm_weight": weight,
                "validation_accuracy_by_weight": found,
                "validation_lines": len(validation),
            }
        if options["probe"]:
            embed = embedder("probe", len(train) + len(evaluation))
            train_features, eval_features = embed([e.text for e in train], [e.text for e in evaluation])
            rows["probe"] = probe_predictions(train_features, [e.gold for e in train], eval_features)
            choices["probe"] = {"features": "mean hidden state 5/6 of the way up", "train_lines": len(train)}
        return rows, choices

    def score(self, examples: list[Example], predicted: list[Any]) -> dict[str, Any]:
        return classification_metrics([e.gold for e in examples], predicted, list(self.labels))

    def example_stats(self, examples: list[Example], predicted: list[Any]) -> np.ndarray:
        return classification_stats([e.gold for e in examples], predicted, list(self.labels))

    def aggregate(self, totals: np.ndarray) -> dict[str, Any]:
        return classification_aggregate(totals, len(self.labels))

    def baseline(self, train: list[Example], evaluation: list[Example]) -> list[Any]:
        return baseline_predictions(train, evaluation)

    def table_columns(self) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
        return [
            ("accuracy", lambda m: pct_ci(m, "accuracy")),
            ("macro-F1", lambda m: pct_ci(m, "macro_f1")),
            ("invalid", lambda m: str(m["invalid"])),
        ]

    def trivial(self, metrics: dict[str, Any]) -> tuple[str, float] | None:
        """Always answering the eval split's most frequent label: its accuracy is the majority-class rate."""
        return page.majority(metrics, self.labels)

    def report_section(self, metrics: dict[str, Any], row: str) -> list[str]:
        names = self.labels
        lines = [
            f"## Per class ({row})",
            "",
            "| label | name | precision | recall | F1 | support |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for label, scores in metrics["per_class"].items():
            lines.append(
                f"| {label} | {names.get(label, label)} | {scores['precision']:.2f} | {scores['recall']:.2f} | "
                f"{scores['f1']:.2f} | {scores['support']} |"
            )
        confusion = metrics["confusion"]
        short = [names.get(label, label) for label in confusion["labels"]]
        lines += ["", f"Confusion matrix ({row}; rows gold, columns predicted):", ""]
        lines += ["| gold \\ predicted | " + " | ".join(short) + " |", "|---" * (len(short) + 1) + "|"]
        for name, counts in zip(short, confusion["matrix"], strict=True):
            lines.append(f"| {name} | " + " | ".join(str(c) if c else "·" for c in counts) + " |")
        return [*lines, ""]


def score_matrix(examples: list[Example], outputs: dict[str, dict[str, Any]]) -> np.ndarray:
    """(examples, labels) label log-probabilities, in `examples` order."""
    return np.array([outputs[example.id]["scores"] for example in examples])
