"""Render an example into chat messages through the spec's Jinja template.

Templates run in a sandbox with StrictUndefined: a misspelt variable is an error naming the
template line, found when the spec is validated, never a silently empty prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from runner.data import Example
from runner.errors import InvalidInput

Message = dict[str, str]

#: What a template may use. `examples` is the few-shot list ({text, label}); empty for zero-shot.
TEMPLATE_VARIABLES = ("text", "labels", "record", "examples")

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


class PromptBuilder:
    def __init__(self, template_path: str | Path, system: str | None, label_names: dict[str, str]):
        self.template_path = Path(template_path)
        self.user_template = _compile(self.template_path.read_text(encoding="utf-8"), str(self.template_path))
        self.system_template = _compile(system, "prompt.system") if system else None
        self.label_names = label_names

    def messages(self, example: Example, examples: list[dict[str, str]] | None = None) -> list[Message]:
        """The prompt for one example: optional system message, then the user message."""
        context = {
            "text": example.text,
            "labels": list(self.label_names.values()),
            "record": example.record,
            "examples": examples or [],
        }
        messages = []
        if self.system_template is not None:
            messages.append({"role": "system", "content": self._render(self.system_template, context, "prompt.system")})
        messages.append({"role": "user", "content": self._render(self.user_template, context, str(self.template_path))})
        return messages

    def training_messages(self, example: Example) -> list[Message]:
        """The prompt plus the answer the model should learn: the label's display name."""
        return [*self.messages(example), {"role": "assistant", "content": self.label_names[example.label]}]

    @staticmethod
    def _render(template: jinja2.Template, context: dict[str, Any], where: str) -> str:
        try:
            return template.render(context)
        except jinja2.UndefinedError as error:
            raise InvalidInput(f"template error: {error.message}", where=where) from None
        except jinja2.TemplateError as error:
            raise InvalidInput(f"template error: {error}", where=where) from None


def _compile(source: str, where: str) -> jinja2.Template:
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as error:
        raise InvalidInput(f"template syntax error: {error.message}", where=f"{where}:{error.lineno}") from None
    unknown = sorted(meta.find_undeclared_variables(tree) - set(TEMPLATE_VARIABLES))
    if unknown:
        name = unknown[0]
        line = next((node.lineno for node in tree.find_all(nodes.Name) if node.name == name), None)
        raise InvalidInput(
            f"undefined template variable {name!r} (available: {', '.join(TEMPLATE_VARIABLES)})",
            where=f"{where}:{line}" if line else where,
        )
    return _ENV.from_string(tree)


def check_template(spec) -> None:
    """Compile the spec's templates, so template errors surface at validation time."""
    prompt = spec.doc["prompt"]
    PromptBuilder(prompt["template"], prompt["system"], spec.labels)
