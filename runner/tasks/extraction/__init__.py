"""Entity extraction (NER): the model answers {type name: [entity strings]}, scored on (type, span).

Rows come as CLUENER2020 ({text, label: {type: {entity: [[start, end_inclusive], ...]}}}), plain
entity lists ({text, entities: [{type, text, start, end}]}, end exclusive), the legacy
{prompt, completion} JSONL, or CoNLL/BIO tagged tokens (bio.py). Every span is checked against its
text while reading.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runner.core.errors import InvalidInput
from runner.providers.registry import capability
from runner.tasks import Decoded, Embed, Example, Scored, Task, Where, pct_ci
from runner.tasks.common import Guess, MistakeSet, Scaffold, join_text
from runner.tasks.extraction import bio, combine
from runner.tasks.extraction import report as page
from runner.tasks.extraction.answer import AnswerGuide, Entity, locate, name_key, parse, render
from runner.tasks.extraction.baseline import crf_predictions
from runner.tasks.extraction.metrics import entity_aggregate, entity_metrics, entity_stats
from runner.tasks.extraction.rows import cluener_entities, detect_format, listed_entities

ROW_FORMATS = ("cluener", "entities", "prompt_completion", "conll")
LEGACY_MARKER = "Text:"  # the notebook's prompt: 请抽取给定Text中的实体…\nText:<文本>\n


class ExtractionTask(Task):
    name = "extraction"
    metrics = ("entity_f1", "entity_precision", "entity_recall", "macro_f1", "invalid_rate", "hallucination_rate")
    primary_metric = "entity_f1"
    methods = ("generate",)
    baseline_name = "char CRF"
    max_tokens = 128  # a JSON answer is longer than a label
    text_keyed = ("entities",)

    def __init__(self, doc: dict[str, Any]):
        super().__init__(doc)
        self.types: dict[str, dict[str, str]] = {
            t: ({"name": v, "description": ""} if isinstance(v, str) else {"description": "", **v})
            for t, v in doc["entities"].items()
        }
        self.names = {t: v["name"] for t, v in self.types.items()}
        self.ignored = set(doc["data"].get("ignore_types", []))
        self.text_fields = doc["data"]["text_fields"]
        self.conll = {"tag_column": -1, "scheme": "auto", "lenient": False, **doc["data"].get("conll", {})}
        self.conll_schemes: dict[str, tuple[set[str], str]] = {}  # file -> (the schemes it fits, its first row)

    @classmethod
    def apply_defaults(cls, doc: dict[str, Any], provider_cls: type) -> None:
        super().apply_defaults(doc, provider_cls)
        doc["data"].setdefault("text_fields", ["text"])
        # Measured on CLUENER (bench/RESULTS.md): a fine-tuned model scores higher decoding freely,
        # since forcing a substring where it would have named something else costs more than the
        # rare hallucination that reading the answer drops anyway.
        doc["evaluation"].setdefault("constrained", False)

    @classmethod
    def check_spec(cls, doc: dict[str, Any], where: Where) -> None:
        if "labels" in doc:
            raise InvalidInput("labels is for task: classification; extraction names its types in entities",
                               where=where("labels"))  # fmt: skip
        names = [v if isinstance(v, str) else v["name"] for v in doc["entities"].values()]
        seen_names: set[str] = set()
        for name in names:
            if name in seen_names:
                raise InvalidInput(f"two entity types share the name {name!r}", where=where("entities"))
            seen_names.add(name)
            if any(char in name for char in '"\\{}[]'):
                raise InvalidInput(f"entity name {name!r} may not contain quotes, brackets or backslashes",
                                   where=where("entities"))  # fmt: skip
        _check_spellings(doc["entities"], where)
        for entity_type in doc["data"].get("ignore_types", []):
            if entity_type in doc["entities"]:
                raise InvalidInput(
                    f"{entity_type!r} is both ignored and in entities", where=where("data", "ignore_types")
                )
        evaluation = doc["evaluation"]
        if evaluation["method"] != "generate":
            raise InvalidInput("extraction answers are generated (method: generate); score ranks a closed label set",
                               where=where("evaluation", "method"))  # fmt: skip
        if evaluation["calibration"] != "none":
            raise InvalidInput("calibration applies to label scores; extraction has none",
                               where=where("evaluation", "calibration"))  # fmt: skip
        cls.check_foreign_rows(doc, where)
        if evaluation.get("llm_crf") and "validation" not in doc["splits"]:
            raise InvalidInput("llm_crf chooses how to merge the LLM's and the CRF's entities on splits.validation; "
                               "add one", where=where("evaluation", "llm_crf"))  # fmt: skip
        for key_path, fmt in [(("data",), doc["data"].get("format"))] + [
            (("splits", name), split.get("format")) for name, split in doc["splits"].items()
        ]:
            if fmt in ("csv", "tsv"):
                raise InvalidInput(
                    f"extraction reads JSON lines ({', '.join(ROW_FORMATS)}, detected from the rows) or a JSON array",
                    where=where(*key_path, "format"),
                )
            if fmt == "conll" and doc["data"]["text_fields"] != ["text"]:
                raise InvalidInput("a CoNLL sentence's text is its tokens joined; it has no fields to choose",
                                   where=where("data", "text_fields"))  # fmt: skip

    # Data
    def read_example(self, row: Any, fmt: str, where: str, example_id: str) -> Example | None:
        if not isinstance(row, dict):
            raise InvalidInput(f"expected an object with fields, got {type(row).__name__}", where=where)
        fmt = fmt if fmt in ROW_FORMATS else detect_format(row, where)
        if fmt == "conll":
            return self._conll(row, where, example_id)
        if fmt == "prompt_completion":
            return self._legacy(row, where, example_id)
        text = join_text(row, self.text_fields, where)
        raw = cluener_entities(row, where) if fmt == "cluener" else listed_entities(row, where)
        entities = []
        for entity_type, string, start, end in raw:
            if not self._wanted_type(entity_type, where):
                continue
            if start == end and 0 <= start <= len(text):
                raise InvalidInput(f"span [{start}, {end}) of {string!r} is an empty span (start equals end)",
                                   where=where)  # fmt: skip
            if not (0 <= start < end <= len(text)):
                raise InvalidInput(f"span [{start}, {end}) of {string!r} is outside the text ({len(text)} characters)",
                                   where=where)  # fmt: skip
            if text[start:end] != string:
                raise InvalidInput(f"span [{start}, {end}) reads {text[start:end]!r}, not {string!r}", where=where)
            entities.append(Entity(start, end, entity_type, string))
        return Example(id=example_id, text=text, gold=tuple(sorted(set(entities))), record=row)

    def _wanted_type(self, entity_type: str, where: str) -> bool:
        """False for an ignored type; an unknown one is a data error."""
        if entity_type in self.ignored:
            return False
        if entity_type not in self.types:
            raise InvalidInput(
                f"entity type {entity_type!r} is not in the spec's entities; add it there or to data.ignore_types",
                where=where,
            )
        return True

    def _conll(self, row: dict[str, Any], where: str, example_id: str) -> Example:
        """A CoNLL sentence (runner/data/dataset.py's conll_sentences): its text is the tokens joined
        (bio.join_tokens) and its entities are the tag column's, each error naming its own line."""
        path = where.rsplit(":", 1)[0]
        lines, columns = row["lines"], row["columns"]
        column = self.conll["tag_column"]
        if not -len(columns[0]) <= column < len(columns[0]) or column in (0, -len(columns[0])):
            raise InvalidInput(
                f"data.conll.tag_column is {column}, but the file's lines hold a token and {len(columns[0]) - 1} "
                "tag column(s) after it",
                where=where,
            )
        tokens, tags = [fields[0] for fields in columns], [fields[column] for fields in columns]
        scheme = self.conll["scheme"]
        if scheme == "auto":  # the schemes every sentence of this file so far fits; a file keeps to one
            earlier, first = self.conll_schemes.get(path, ({"BIO", "BIOES", "BMES"}, where))
            fitting = earlier & bio.schemes_fitting(tags)
            if not fitting:
                before = f", while the sentences from {first} are {' or '.join(sorted(earlier))}" if earlier != {
                    "BIO", "BIOES", "BMES"} else ""  # fmt: skip
                raise InvalidInput(
                    f"the tags {' '.join(sorted(set(tags)))} fit no one scheme (BIO, BIOES, BMES){before}; fix them "
                    "or name the scheme in data.conll.scheme",
                    where=where,
                )
            self.conll_schemes[path] = (fitting, first)
            scheme = min(fitting)  # where several fit, each reads these tags the same
        spans = bio.decode(tags, scheme, self.conll["lenient"], lambda index: f"{path}:{lines[index]}")
        text, offsets = bio.join_tokens(tokens)
        entities = []
        for entity_type, first, last in spans:
            if self._wanted_type(entity_type, f"{path}:{lines[first]}"):
                start, end = offsets[first][0], offsets[last - 1][1]
                entities.append(Entity(start, end, entity_type, text[start:end]))
        record = {"text": text, "tokens": tokens}
        return Example(id=example_id, text=text, gold=tuple(sorted(set(entities))), record=record)

    def _legacy(self, row: dict[str, Any], where: str, example_id: str) -> Example:
        for field in ("prompt", "completion"):
            if not isinstance(row.get(field), str):
                raise InvalidInput(f"a prompt_completion row needs a string {field!r}", where=where)
        prompt = row["prompt"]
        text = prompt.rsplit(LEGACY_MARKER, 1)[1].strip() if LEGACY_MARKER in prompt else prompt.strip()
        parsed = parse(row["completion"], self.names)
        if parsed is None:
            raise InvalidInput('completion is not an entity object such as {"人名": ["张三"]}', where=where)
        if parsed.unknown_types:
            raise InvalidInput(f"completion names unknown entity type {parsed.unknown_types[0]!r}", where=where)
        spans, missing = locate(parsed.entities, text)
        if missing:
            raise InvalidInput(f"completion names {missing[0]!r}, which is not in the text", where=where)
        entities = tuple(sorted(Entity(s, e, t, text[s:e]) for t, s, e in spans))
        return Example(id=example_id, text=text, gold=entities, record={**row, "text": text})

    # specrun init
    guess_order = 10  # rows that carry entities say so

    @classmethod
    def guess(cls, path: Path, rows: list[dict[str, Any]], container: str, flags: dict[str, Any]) -> Guess | None:
        from runner.tasks.extraction import scaffold

        return scaffold.guess(path, rows, container, cls.name, flags.get("text_field"), bool(flags.get("claimed")))

    @classmethod
    def scaffold(cls, guess: Guess) -> Scaffold:
        from runner.tasks.extraction import scaffold

        return scaffold.scaffold(guess)

    # Report
    breakdown_key = "per_type"
    breakdown_title = "Per entity type"
    breakdown_column = "type"
    breakdown_chart = "entity type"
    breakdown_nothing = "No entity found"

    def row_description(self, row: str, manifest: dict[str, Any]) -> str | None:
        if row == "llm_crf" and (chosen := (manifest.get("choices") or {}).get("llm_crf")):
            return f"{chosen['mode']} + char CRF · {chosen['rule'].replace('_', ' ')} (chosen on validation)"
        return page.row_description(row, manifest)

    @classmethod
    def display_names(cls, spec: dict[str, Any]) -> dict[str, str]:
        return {str(k): str(v["name"] if isinstance(v, dict) else v) for k, v in (spec.get("entities") or {}).items()}

    def mistakes(self, records: list[dict[str, Any]], row: str, manifest: dict[str, Any]) -> MistakeSet | None:
        return page.extraction_mistakes(records, row, self.display_names(manifest["spec"]))

    # Prompts
    def prompt_variables(self) -> dict[str, Any]:
        shape = "{" + ", ".join(f'"{name}": ["…"]' for name in self.names.values()) + "}"
        return {"entity_types": list(self.types.values()), "answer_format": shape}

    def target(self, example: Example) -> str:
        return render(example.gold, self.names)

    def generation_guide(self, example: Example) -> AnswerGuide | None:
        if not capability(self.doc["provider"]["name"], "can_guide", False):
            return None
        return AnswerGuide(example.text, list(self.names.values()), strict=self.doc["evaluation"]["constrained"])

    # Evaluation
    def decode(
        self,
        examples: list[Example],
        outputs: dict[str, dict[str, Any]],
        mode: str,
        validation: tuple[list[Example], dict[str, dict[str, Any]]] | None = None,
    ) -> Decoded:
        predictions, fields = [], []
        for example in examples:
            answer = outputs[example.id]["text"]
            predictions.append(self.read_answer(answer, example.text))
            fields.append({f"{mode}_answer": answer})
        return Decoded(rows={mode: predictions}, fields=fields)

    def wants_validation_outputs(self) -> bool:
        return bool(self.doc["evaluation"].get("llm_crf"))

    def combined_rows(
        self,
        train: list[Example],
        validation: list[Example],
        evaluation: list[Example],
        scored: dict[str, Scored],
        embedder: Callable[[str, int], Embed],
    ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """`llm_crf`: the mode best on validation merged with a CRF trained on the train split, by the rule
        best on validation (combine.py); no row when a single source is best there."""
        answered = {mode: found for mode, found in scored.items() if found.validation}
        if not self.doc["evaluation"].get("llm_crf") or not answered or not validation:
            return {}, {}

        def answers(examples: list[Example], outputs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
            return [self.read_answer(outputs[e.id]["text"], e.text) for e in examples]

        def score(predicted: list[dict[str, Any]]) -> dict[str, Any]:
            return self.score(validation, predicted)

        on_validation = {mode: answers(validation, found.validation or {}) for mode, found in answered.items()}
        mode = max(on_validation, key=lambda m: score(on_validation[m])["entity_f1"])
        crf = crf_predictions(train, [*validation, *evaluation])
        rule, from_crf, f1 = combine.choose(on_validation[mode], crf[: len(validation)], score, list(self.types))
        choices = {"llm_crf": {"mode": mode, "rule": rule, "crf_types": sorted(from_crf), "validation_f1": f1}}
        if rule in ("llm", "crf"):
            return {}, choices
        llm_eval = answers(evaluation, scored[mode].eval)
        merged = [combine.merge(rule, a, b, from_crf) for a, b in zip(llm_eval, crf[len(validation) :], strict=True)]
        return {"llm_crf": merged}, choices

    def read_answer(self, answer: str, text: str) -> dict[str, Any]:
        parsed = parse(answer, self.names)
        if parsed is None:
            return {"spans": [], "invalid": True, "hallucinated": [], "unknown_types": [], "n_strings": 0}
        spans, hallucinated = locate(parsed.entities, text)
        return {
            "spans": [list(span) for span in sorted(spans, key=lambda s: (s[1], s[2], s[0]))],
            "invalid": False,
            "hallucinated": hallucinated,
            "unknown_types": parsed.unknown_types,
            "n_strings": sum(len(strings) for strings in parsed.entities.values()),
        }

    def gold_field(self, example: Example) -> list[list[Any]]:
        return [[e.type, e.start, e.end, e.text] for e in example.gold]

    def prediction_files(self, examples: list[Example], rows: dict[str, list[Any]]) -> dict[str, str]:
        """predictions.<row>.conll per row when the eval examples were read from CoNLL: token, gold tag,
        predicted tag, both IOB2, so seqeval and conlleval read them as they read the data."""
        joined = [bio.tokens_of(example.record, example.text) for example in examples]
        if not examples or any(found is None for found in joined):
            return {}
        offsets = [found for found in joined if found is not None]
        gold = [bio.bio_tags(self.gold_field(e), found) for e, found in zip(examples, offsets, strict=True)]
        return {
            f"predictions.{row}.conll": bio.conll_text(
                [
                    (example.record["tokens"], gold_tags, bio.bio_tags(prediction["spans"], found))
                    for example, gold_tags, found, prediction in zip(examples, gold, offsets, predicted, strict=True)
                ]
            )
            for row, predicted in rows.items()
        }

    def score(self, examples: list[Example], predicted: list[Any]) -> dict[str, Any]:
        gold = [self.gold_field(e) for e in examples]
        return entity_metrics(gold, predicted, list(self.types), [e.text for e in examples])

    def example_stats(self, examples: list[Example], predicted: list[Any]) -> np.ndarray:
        return entity_stats([self.gold_field(e) for e in examples], predicted, list(self.types))

    def aggregate(self, totals: np.ndarray) -> dict[str, Any]:
        return entity_aggregate(totals, len(self.types))

    def baseline(self, train: list[Example], evaluation: list[Example]) -> list[Any]:
        return crf_predictions(train, evaluation)

    # Report
    def table_columns(self) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
        return [
            ("entity F1", lambda m: pct_ci(m, "entity_f1")),
            ("P", lambda m: pct_ci(m, "entity_precision")),
            ("R", lambda m: pct_ci(m, "entity_recall")),
            ("macro-F1", lambda m: pct_ci(m, "macro_f1")),
            ("invalid", lambda m: str(m["invalid"])),
            ("halluc.", lambda m: str(m["hallucinated"])),
        ]

    def comparison_section(self, metrics: dict[str, dict[str, Any]], primary: str) -> list[str]:
        """Per type, the LLM's row, the CRF's and the merged one side by side: F1 and the error classes
        (missed / spurious / wrong type / wrong boundary), so where each source wins is one table."""
        rows = [row for row in (primary, "baseline", "llm_crf") if row in metrics]
        if len(rows) < 2:
            return []
        header = " | ".join(f"{row} F1 | {row} m/s/t/b" for row in rows)
        lines = [
            f"## Per type, side by side ({', '.join(rows)})",
            "",
            "Errors as missed / spurious / wrong type / wrong boundary.",
            "",
            f"| type | name | support | {header} |",
            "|---|---|---:|" + "---:|---|" * len(rows),
        ]
        for entity_type in self.types:
            cells = []
            for row in rows:
                found = metrics[row]["per_type"][entity_type]
                errors = found["errors"]
                kinds = ("missed", "spurious", "wrong_type", "wrong_boundary")
                cells.append(f"{found['f1']:.2f} | " + "/".join(str(errors.get(kind, 0)) for kind in kinds))
            support = metrics[rows[0]]["per_type"][entity_type]["support"]
            lines.append(f"| {entity_type} | {self.names[entity_type]} | {support} | {' | '.join(cells)} |")
        return [*lines, ""]

    def trivial(self, metrics: dict[str, Any]) -> tuple[str, float] | None:
        """Answering no entity at all: nothing found, so entity F1 0."""
        return "answering no entity", 0.0

    def report_section(self, metrics: dict[str, Any], row: str) -> list[str]:
        lines = [
            f"## Per type ({row})",
            "",
            f"Strict (type, span) matching: {metrics['tp']} correct, {metrics['fp']} spurious or mistyped, "
            f"{metrics['fn']} missed; {metrics['invalid']} unreadable answers, {metrics['hallucinated']} entities "
            f"not in their text, {metrics['unknown_types']} unknown types dropped.",
            "",
            "| type | name | precision | recall | F1 | support | missed | spurious | wrong type | wrong boundary |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for entity_type, found in metrics["per_type"].items():
            errors = found["errors"]
            lines.append(
                f"| {entity_type} | {self.names[entity_type]} | {found['precision']:.2f} | {found['recall']:.2f} | "
                f"{found['f1']:.2f} | {found['support']} | {errors.get('missed', 0)} | {errors.get('spurious', 0)} | "
                f"{errors.get('wrong_type', 0)} | {errors.get('wrong_boundary', 0)} |"
            )
        lines += ["", f"Most frequent errors per type ({row}), with examples:", ""]
        for entity_type, found in metrics["per_type"].items():
            ranked = sorted(found["errors"].items(), key=lambda item: -item[1])[:2]
            if ranked:
                shown = "; ".join(
                    f"{kind.replace('_', ' ')} ×{count}: "
                    + ", ".join(f"「{x}」" for x in found["error_examples"][kind])
                    for kind, count in ranked
                )
                lines.append(f"- {self.names[entity_type]}: {shown}")
        return [*lines, ""]


def _check_spellings(entities: dict[str, Any], where: Where) -> None:
    """Every type key and display name must read as one type only, the way answers' keys are read
    (`name_key`): 「PER」 and 「per」, 「ＰＥＲ」 and 「PER」, or a type shown under another type's
    key (name → "address", address → "name") would file a correct answer under the wrong type."""
    owner: dict[str, str] = {}
    for entity_type, value in entities.items():
        name = value if isinstance(value, str) else value["name"]
        for spelling in (entity_type, name):
            if any(unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs") for char in spelling):
                raise InvalidInput(f"entity name {spelling!r} may not contain line breaks or control characters",
                                   where=where("entities", entity_type))  # fmt: skip
            key = name_key(spelling)
            if not key:
                raise InvalidInput(f"entity name {spelling!r} has no visible text, so no answer can name it",
                                   where=where("entities", entity_type))  # fmt: skip
            other = owner.setdefault(key, entity_type)
            if other != entity_type:
                raise InvalidInput(
                    f"entity types {other!r} and {entity_type!r} are both read from the answer key {key!r} "
                    "(keys and names are compared with case, width and invisible characters folded); "
                    "rename one so a correct answer cannot be filed under the wrong type",
                    where=where("entities", entity_type),
                )
