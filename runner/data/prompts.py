"""Render an example into chat messages through the spec's Jinja template.

Templates run in a sandbox with StrictUndefined: a misspelt variable is an error naming the
template line, found when the spec is validated, never a silently empty prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes

from runner.core.errors import InvalidInput
from runner.core.jsonl import read_text
from runner.data.template_sandbox import ENV as _ENV
from runner.data.template_sandbox import compile_template, render, undeclared_variables
from runner.tasks import Example, Task

Message = dict[str, str]

#: What every template may use, besides the task's own variables (labels, entity_types...).
#: `examples` is the few-shot list (task.shot of each); empty for zero-shot.
TEMPLATE_VARIABLES = ("text", "record", "examples")

# _ENV: a SandboxedEnvironment with step, size and output budgets, no include/import/extends
# (runner/data/template_sandbox.py); any render failure is one InvalidInput naming template and line.


class PromptBuilder:
    def __init__(self, template_path: str | Path, system: str | None, task: Task):
        self.template_path = Path(template_path)
        self.task = task
        self.shared = task.prompt_variables()
        allowed = (*TEMPLATE_VARIABLES, *self.shared)
        self.user_template = _compile(read_text(self.template_path, "template"), str(self.template_path), allowed)
        self.system_template = _compile(system, "prompt.system", allowed) if system else None

    def messages(self, example: Example, examples: list[Example] | None = None) -> list[Message]:
        """The prompt for one example (and its few-shot examples): optional system message, then the user message."""
        context = {
            **self.shared,
            "text": example.text,
            "record": example.record,
            "examples": [self.task.shot(shown) for shown in examples or []],
        }
        messages = []
        if self.system_template is not None:
            messages.append({"role": "system", "content": self._render(self.system_template, context, "prompt.system")})
        messages.append({"role": "user", "content": self._render(self.user_template, context, str(self.template_path))})
        return messages

    def training_messages(self, example: Example) -> list[Message]:
        """The prompt plus the answer the model should learn (the task's target)."""
        return [*self.messages(example), {"role": "assistant", "content": self.task.target(example)}]

    @staticmethod
    def _render(template: jinja2.Template, context: dict[str, Any], where: str) -> str:
        return render(template, context, where)


def _compile(source: str, where: str, allowed: tuple[str, ...] = TEMPLATE_VARIABLES) -> jinja2.Template:
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as error:
        raise InvalidInput(f"template syntax error: {error.message}", where=f"{where}:{error.lineno}") from None
    unknown = sorted(undeclared_variables(tree, where) - set(allowed))
    if unknown:
        name = unknown[0]
        line = next((node.lineno for node in tree.find_all(nodes.Name) if node.name == name), None)
        raise InvalidInput(
            f"undefined template variable {name!r} (available: {', '.join(allowed)})",
            where=f"{where}:{line}" if line else where,
        )
    return compile_template(tree, where)
