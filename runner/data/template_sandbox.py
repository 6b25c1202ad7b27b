"""The Jinja sandbox prompts render in, bounded so a template can neither crash nor hang specrun.

Jinja's SandboxedEnvironment stops attribute escapes, but a template can still
- raise plain Python errors at render (1/0, `range(10**9)`'s OverflowError, infinite macro
  recursion, `text()`), which reached the user as tracebacks;
- include/import/extend other templates (no loader: a TypeError);
- use unbounded time or memory: nested loops, `"x" * 10**9`, `9**9**9`, `"{:>999999999}".format(1)`,
  `x|center(10**9)`, a string doubled in a loop.
Here every render runs with a step budget (each loop item and each call costs one), bounded
ranges, size checks on arithmetic, concatenation, calls and filters, refused include/import/
extends, and an output cap; `render` turns every failure into one InvalidInput naming the
template and, where Jinja knows it, the line.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from runner.core.errors import InvalidInput

MAX_OUTPUT_CHARS = 1_000_000  # a prompt; a million characters is far past any model's context
MAX_STEPS = 1_000_000  # loop items + calls in one render
MAX_RANGE = 100_000  # items in one range()
MAX_ARGUMENT = 100_000  # an integer passed to a call or filter: a width, a count, a length
MAX_INT_BITS = 4096  # integers a template computes (2**4096 is plenty for a prompt)

_SIZED_FILTERS = frozenset({"center", "indent", "truncate", "wordwrap", "batch", "slice"})
_LOOP_GUARD = "__specrun_loop"
_SIZE_GUARD = "__specrun_size"
_WIDE_FORMAT = re.compile(r"%[^a-zA-Z%]*\d{7}|\{[^{}]*:[^{}]*\d{7}")  # a field width or precision ≥ 1,000,000


class _Budget(threading.local):
    steps = 0


_budget = _Budget()


def _spend(n: int = 1) -> None:
    _budget.steps += n
    if _budget.steps > MAX_STEPS:
        raise SecurityError(f"template takes more than {MAX_STEPS:,} steps (loop items and calls); is a loop runaway?")


def _check_size(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple | dict) and len(value) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"template builds a value of {len(value):,} items; the limit is {MAX_OUTPUT_CHARS:,}")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"template computes an integer of {value.bit_length():,} bits; the limit is {MAX_INT_BITS}")
    return value


def _check_args(args: Iterable[Any]) -> None:
    """A huge integer argument (a width, a count, a length) is how most size bombs start."""
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_ARGUMENT:
            raise SecurityError(f"argument {arg} is larger than the template limit {MAX_ARGUMENT:,}")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _WIDE_FORMAT.search(text):
        raise SecurityError("format width or precision of a million or more characters")


def _loop(iterable: Any) -> Iterator[Any]:
    """Every `{% for %}` iterates through this: each item costs a step."""
    for item in iterable:
        _spend()
        yield item


def _range(*args: int) -> range:
    _check_args(args)
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise SecurityError(f"range of {len(result):,} items; the limit is {MAX_RANGE:,}")
    return result


def _guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    value_at = 1 if hasattr(function, "jinja_pass_arg") else 0  # after the context/environment Jinja passes

    @functools.wraps(function)  # keeps Jinja's pass_context/pass_environment markers
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _spend()
        if name in _SIZED_FILTERS:  # their numbers are widths and counts; elsewhere a number is just data
            _check_args((*args[value_at + 1 :], *kwargs.values()))
        if name == "format" and len(args) > value_at:
            _check_format(args[value_at])
        if name == "join" and len(args) > value_at:
            items = list(args[value_at])
            delimiter = args[value_at + 1] if len(args) > value_at + 1 else kwargs.get("d", "")
            if isinstance(delimiter, str) and len(items) * len(delimiter) > MAX_OUTPUT_CHARS:
                raise SecurityError("join would build a string past the template limit")
            args = (*args[:value_at], items, *args[value_at + 1 :])
        return _check_size(function(*args, **kwargs))

    return guarded


def _too_big_power(operator: str, left: Any, right: Any) -> bool:
    """`9**9**9` would compute for hours: refuse a power whose result has more than MAX_INT_BITS bits."""
    if operator != "**" or not (isinstance(left, int) and isinstance(right, int)) or right <= 0 or abs(left) <= 1:
        return False
    return (abs(left).bit_length() - 1) * right > MAX_INT_BITS


class _NoLoader(jinja2.BaseLoader):
    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, None]:
        raise jinja2.TemplateNotFound(
            f"{template} (a prompt template cannot include, import or extend other templates)"
        )


class BoundedSandbox(SandboxedEnvironment):
    """SandboxedEnvironment with budgets on steps, sizes and integers (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(loader=_NoLoader(), **options)
        self.globals["range"] = _range
        del self.globals[
            "lipsum"
        ]  # generates text in a Python loop the step budget cannot see (lipsum(10**6): minutes)
        self.globals[_LOOP_GUARD] = _loop
        self.globals[_SIZE_GUARD] = _check_size
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _spend()
        if _too_big_power(operator, left, right):
            raise SecurityError(f"{left} ** {right} is too large for a template")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(times, int)
                    and len(sequence) * times > MAX_OUTPUT_CHARS
                ):
                    raise SecurityError("repeating a string or list past the template limit")
        if operator == "%":
            _check_format(left)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        target = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if name in ("format", "format_map"):
            _check_format(owner)  # the values formatted may be any number; the widths may not
        elif isinstance(owner, str | bytes | list | tuple):  # "x".ljust(10**9), "x".zfill(…), expandtabs(…)
            _check_args((*args, *kwargs.values()))
            if isinstance(owner, str) and name == "join" and args:  # sep.join(range(10**5)) with a long sep
                items = list(args[0])
                if len(items) * len(owner) > MAX_OUTPUT_CHARS:
                    raise SecurityError("join would build a string past the template limit")
                args = (items, *args[1:])
            if isinstance(owner, str) and name == "replace" and len(args) >= 2:
                old, new = args[0], args[1]
                if isinstance(old, str) and isinstance(new, str):
                    growth = (owner.count(old) if old else len(owner) + 1) * len(new)
                    if len(owner) + growth > MAX_OUTPUT_CHARS:
                        raise SecurityError("replace would build a string past the template limit")
        return _check_size(super().call(__context, __obj, *args, **kwargs))


ENV = BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


def refuse_includes(tree: nodes.Template, where: str) -> None:
    """Prompt templates stand alone: include/import/extends is an error at the line that asks."""
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        keyword = {"Include": "include", "Import": "import", "FromImport": "import", "Extends": "extends"}
        raise InvalidInput(
            f"template uses {{% {keyword[type(node).__name__]} %}}: a prompt template must stand alone",
            where=f"{where}:{node.lineno}",
        )


def guard_tree(tree: nodes.Template) -> nodes.Template:
    """Route every for-loop's items and every `~` concatenation through the budget checks."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name(_LOOP_GUARD, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
    for parent in [tree, *tree.find_all(nodes.Node)]:
        for field in parent.fields:
            value = getattr(parent, field, None)
            if isinstance(value, nodes.Concat):
                setattr(parent, field, _sized(value))
            elif isinstance(value, list):
                setattr(parent, field, [_sized(v) if isinstance(v, nodes.Concat) else v for v in value])
    return tree


def _sized(node: nodes.Concat) -> nodes.Call:
    return nodes.Call(nodes.Name(_SIZE_GUARD, "load"), [node], [], None, None, lineno=node.lineno)


def undeclared_variables(tree: nodes.Template, where: str) -> set[str]:
    """jinja2.meta.find_undeclared_variables, whose compile pass also reports an unknown filter or test."""
    try:
        return meta.find_undeclared_variables(tree)
    except jinja2.TemplateSyntaxError as error:
        raise InvalidInput(f"template error: {error.message}", where=f"{where}:{error.lineno}") from None


def compile_template(tree: nodes.Template, where: str) -> jinja2.Template:
    """The checked, guarded template; Jinja's compile-time errors (an unknown filter) as InvalidInput."""
    refuse_includes(tree, where)
    try:
        return ENV.from_string(guard_tree(tree))
    except jinja2.TemplateSyntaxError as error:  # TemplateAssertionError: unknown filter or test
        raise InvalidInput(f"template error: {error.message}", where=f"{where}:{error.lineno}") from None


def render(template: jinja2.Template, context: dict[str, Any], where: str) -> str:
    """Render within the budgets; any failure is one InvalidInput naming the template (and line)."""
    _budget.steps = 0
    parts: list[str] = []
    size = 0
    try:
        for part in template.generate(context):
            size += len(part)
            if size > MAX_OUTPUT_CHARS:
                raise SecurityError(f"template output passes {MAX_OUTPUT_CHARS:,} characters")
            parts.append(part)
    except jinja2.UndefinedError as error:
        raise InvalidInput(f"template error: {error.message}", where=_where(where, error)) from None
    except (jinja2.TemplateError, ArithmeticError, RecursionError, MemoryError) as error:
        message = (error.message if isinstance(error, jinja2.TemplateError) else None) or str(error)
        kind = (
            "template error" if isinstance(error, jinja2.TemplateError) else f"template error ({type(error).__name__})"
        )
        if isinstance(error, RecursionError):
            message = "recursion too deep (a macro calling itself?)"
        raise InvalidInput(f"{kind}: {message}", where=_where(where, error)) from None
    except Exception as error:  # TypeError, ValueError, AttributeError…: the template's bug, not specrun's
        raise InvalidInput(f"template error ({type(error).__name__}): {error}", where=_where(where, error)) from None
    return "".join(parts)


def _where(where: str, error: BaseException) -> str:
    """`where:line` from the innermost template frame of the traceback (Jinja rewrites those to template lines)."""
    line = getattr(error, "lineno", None)
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{where}:{line}" if line else where
