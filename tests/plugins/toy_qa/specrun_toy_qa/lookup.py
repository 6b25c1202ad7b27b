"""A toy provider from outside specrun: it answers from a lookup file instead of a model.

Handy for a demo, or for testing a spec's plumbing without loading anything. pyproject.toml declares it
in the `specrun.providers` entry-point group; docs/writing-a-provider.md walks through this file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runner.core.errors import InvalidInput
from runner.providers import Completion, Conversation, Progress, Provider


def read_lookup(path: Path, where: str) -> dict[str, str]:
    """question text -> answer, from JSON lines {"question": ..., "answer": ...}; a bad line names its number."""
    table: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            table[str(row["question"])] = str(row["answer"])
        except (ValueError, TypeError, KeyError):
            raise InvalidInput(f'{path}:{number}: expected {{"question": ..., "answer": ...}}', where=where) from None
    return table


class LookupProvider(Provider):
    name = "toy_lookup"
    default_model = "lookup"  # provider.model: only a label in the manifest and report
    needs_key = False
    can_score = False  # no log-probabilities: the task must generate
    caches_responses = False  # nothing is bought, so nothing to cache
    bills_usage = False  # the reports show an evaluation cost of $0
    ignored_keys = ("concurrency", "timeout_s", "max_retries")  # nothing goes over a network
    path_keys = ("lookup",)  # read relative to the spec, like data.path, and part of the spec's hash

    def __init__(self, table: dict[str, str], model: str):
        self.table = table
        self.model = model

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return {
            "properties": {
                "lookup": {
                    "type": "string",
                    "minLength": 1,
                    "description": "toy_lookup: JSON lines of {question, answer}, relative to the spec.",
                }
            }
        }

    @classmethod
    def check_config(cls, doc: dict[str, Any], where: Callable[..., str], answers: Sequence[str] | None = None) -> None:
        super().check_config(doc, where, answers)  # model, scoring keys, fine_tune: the generic checks
        lookup = doc["provider"].get("lookup")
        if not lookup:
            raise InvalidInput("toy_lookup needs a lookup file", where=where("provider"))
        if not Path(lookup).is_file():
            raise InvalidInput(f"lookup file not found: {lookup}", where=where("provider", "lookup"))
        read_lookup(Path(lookup), where("provider", "lookup"))

    @classmethod
    def open(cls, config: dict[str, Any], cache: Any = None) -> LookupProvider:
        return cls(read_lookup(Path(config["lookup"]), "provider.lookup"), config["model"])

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "questions": len(self.table)}  # recorded in the run's manifest

    def chat(
        self,
        conversations: Sequence[Conversation],
        params: dict[str, Any],
        progress: Progress | None = None,
        guides: Sequence[Any] | None = None,
        on_answer: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        replies = []
        for index, conversation in enumerate(conversations):
            reply = Completion(text=self.answer(conversation[-1]["content"]))
            replies.append(reply)
            if on_answer:
                on_answer(index, reply)  # specrun saves each answer as it comes: what a resumed run reads
            if progress:
                progress(1)
        return replies

    def answer(self, message: str) -> str:
        """The answer of the longest known question the message contains; "" when none is."""
        found = [question for question in self.table if question in message]
        return self.table[max(found, key=len)] if found else ""
