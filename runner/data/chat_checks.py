"""The OpenAI cookbook's chat fine-tuning data checks, done properly.

Format errors by category (with the lines that have them), warnings, exact token
distributions, examples over the model's training limit, the default-epochs rule, billed
tokens and a cost estimate from runner/resources/prices.yaml.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from runner import RESOURCES
from runner.core.errors import InvalidInput
from runner.core.jsonl import lone_surrogate, read_text, split_lines
from runner.core.tokens import encoding_for_model, encoding_name

PRICES_PATH = RESOURCES / "prices.yaml"

ROLES = ("system", "user", "assistant", "function", "tool")
MESSAGE_KEYS = ("role", "content", "name", "function_call", "weight", "tool_calls", "tool_call_id")
_ROLE_SET, _KEY_SET = frozenset(ROLES), frozenset(MESSAGE_KEYS)

# The cookbook's default-epochs rule.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
DEFAULT_MAX_TRAINING_TOKENS = 16_385

FORMAT_ERRORS = (
    "data_type",
    "missing_messages_list",
    "message_missing_key",
    "message_unrecognized_key",
    "unrecognized_role",
    "missing_content",
    "invalid_weight",
    "example_missing_assistant_message",
)


@cache
def price_table() -> dict[str, Any]:
    return yaml.safe_load(PRICES_PATH.read_text(encoding="utf-8"))


def model_prices(model: str) -> dict[str, float] | None:
    models = price_table()["models"]
    if model in models:
        return models[model]
    prefixes = [name for name in models if model.startswith(name)]
    return models[max(prefixes, key=len)] if prefixes else None


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line, value) per non-blank line; a line that is not JSON, or holds a lone surrogate escape (not
    Unicode text), becomes the string itself (a data_type error).

    Lines end at "\\n" only (runner.core.jsonl), so U+2028 and friends inside strings do not split
    rows; bytes that are not UTF-8 are an InvalidInput naming the line (exit 2).
    """
    rows: list[tuple[int, Any]] = []
    # The hot loop of `specrun check` on a big file: the C scanner json.loads wraps, called
    # directly (a quarter faster); anything it does not take whole goes through json.loads.
    scan, loads = json.JSONDecoder().scan_once, json.loads
    for number, line in enumerate(split_lines(read_text(path, "chat JSONL")), start=1):
        if not line or line.isspace():
            continue
        try:
            value, end = scan(line, 0)
            if end != len(line) and not line[end:].isspace():
                raise ValueError("extra data")
        except (StopIteration, ValueError, RecursionError):
            try:
                value = loads(line)
            except (ValueError, RecursionError):  # not JSON, nested too deep, an integer too long to read
                value = line
        if lone_surrogate(line, value) is not None:  # not Unicode text: no API takes it, nothing can write it
            value = line
        rows.append((number, value))
    return rows


SPEC_SUFFIXES = (".yaml", ".yml")
DATA_SUFFIXES = (".jsonl", ".json", ".ndjson")


def check_target_kind(path: Path) -> str:
    """Whether `specrun check PATH` was given a spec ("spec") or a chat JSONL ("data").

    By suffix, case-insensitively; a file with another suffix is a data file only when its
    first non-blank line is a JSON object (a spec is never read as data, nor data as a spec).
    """
    if not path.exists():
        raise InvalidInput("file not found", where=str(path))
    if not path.is_file():
        raise InvalidInput("not a file", where=str(path))
    suffix = path.suffix.lower()
    if suffix in SPEC_SUFFIXES:
        return "spec"
    if suffix in DATA_SUFFIXES:
        return "data"
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    first = next((line.strip() for line in head.split(b"\n") if line.strip()), b"")
    if first.startswith(b"{") and first.endswith(b"}"):
        return "data"
    raise InvalidInput(
        f"cannot tell whether this is a spec or a chat JSONL from its suffix {path.suffix or '(none)'!r}: "
        "name a spec .yaml or .yml and a data file .jsonl",
        where=str(path),
    )


def format_errors(example: Any) -> list[str]:
    """The error categories one example falls into (the cookbook's, plus weight and data-type checks)."""
    if not isinstance(example, dict):
        return ["data_type"]
    messages = example.get("messages")
    if not messages or not isinstance(messages, list):
        return ["missing_messages_list"]
    errors = []
    has_assistant = False
    for message in messages:
        if not isinstance(message, dict):
            errors.append("data_type")
            continue
        role = message.get("role")
        content = message.get("content")
        if "role" not in message or "content" not in message:
            errors.append("message_missing_key")
        if not message.keys() <= _KEY_SET:
            errors.append("message_unrecognized_key")
        if not isinstance(role, str) or role not in _ROLE_SET:
            errors.append("unrecognized_role")
        if (not content and not message.get("function_call") and not message.get("tool_calls")) or (
            content is not None and not isinstance(content, str)
        ):
            errors.append("missing_content")
        if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
            errors.append("invalid_weight")
        has_assistant = has_assistant or role == "assistant"
    if not has_assistant:
        errors.append("example_missing_assistant_message")
    return errors


def distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    return {
        "min": int(array.min()),
        "max": int(array.max()),
        "mean": round(float(array.mean()), 2),
        "median": float(np.median(array)),
        "p5": float(np.percentile(array, 5)),
        "p95": float(np.percentile(array, 95)),
    }


def default_epochs(n_examples: int) -> int:
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def _segments(text: str) -> list[str]:
    """`text` cut after each newline that tiktoken's pre-tokenizer never joins to what follows.

    In both shipped encodings' split patterns no piece holds a "\\n" followed by a character
    that is not whitespace, except o200k's punctuation piece, which may take a "/" after its
    newlines. So cutting after a "\\n" whose next character is neither whitespace nor "/"
    leaves the tokens unchanged: the count of the whole is the sum of the counts of the parts
    (checked against encode_ordinary by a property test). Prompts are mostly a repeated
    template around a short unique text, so the template's lines are encoded once.
    """
    parts = text.split("\n")
    segments = []
    current = parts[0]
    for part in parts[1:]:
        if part and part[0] != "/" and not part[0].isspace():
            segments.append(current + "\n")
            current = part
        else:
            current += "\n" + part
    if current:
        segments.append(current)
    return segments


class TokenCounter:
    """Exact tiktoken counts for many strings, each distinct string and template line encoded once.

    Why not encode_ordinary_batch: it hands every string to a thread pool, 4.5× slower than a
    plain loop on 2 cores (bench/check_speed.py). System prompts, labels and template lines
    repeat across examples, so counts are memoised by string and by line. (Encoding the
    remaining distinct lines joined into a few large strings measured no faster.)
    """

    def __init__(self, model: str):
        self._encode = encoding_for_model(model).encode_ordinary
        self.known: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        known = self.known
        count = known.get(text)
        if count is None:
            if "\n" in text:
                count = 0
                for segment in _segments(text):
                    n = known.get(segment)
                    if n is None:
                        n = known[segment] = len(self._encode(segment))
                    count += n
            else:
                count = len(self._encode(text))
            known[text] = count
        return count


def count_tokens(valid: list[list[dict]], model: str) -> tuple[list[int], list[int]]:
    """Whole-example and assistant-only token counts, with the cookbook's per-message overheads."""
    counter = TokenCounter(model)
    known = counter.known
    totals, assistant = [], []
    for messages in valid:
        total, answer = 3, 0
        for message in messages:
            total += 3
            is_assistant = message.get("role") == "assistant"
            for key, value in message.items():
                if isinstance(value, str):
                    n = known.get(value)
                    if n is None:
                        n = counter(value)
                    total += n
                    if is_assistant and key == "content":
                        answer += n
                if key == "name":
                    total += 1
        totals.append(total)
        assistant.append(answer)
    return totals, assistant


def is_legacy(example: Any) -> bool:
    return isinstance(example, dict) and "messages" not in example and {"prompt", "completion"} <= set(example)


def legacy_to_chat(example: dict[str, Any]) -> dict[str, Any]:
    """A legacy {prompt, completion} line as chat messages: the prompt is the user's, the completion the answer."""
    return {
        "messages": [
            {"role": "user", "content": example["prompt"]},
            {"role": "assistant", "content": example["completion"]},
        ]
    }


def run_checks(path: Path, model: str, n_epochs: int | str | None = None) -> dict[str, Any]:
    rows = read_jsonl(path)
    if not rows:
        raise InvalidInput("no examples: the file is empty (a fine-tuning file needs at least one)", where=str(path))
    errors: dict[str, list[int]] = defaultdict(list)
    valid: list[list[dict]] = []
    n_missing_system = n_missing_user = 0
    n_legacy = 0
    for line, example in rows:
        if is_legacy(example):  # the notebook's {prompt, completion} lines are checked as the chat they become
            example, n_legacy = legacy_to_chat(example), n_legacy + 1
        found = format_errors(example)
        for category in dict.fromkeys(found):
            errors[category].append(line)
        if found:
            continue
        messages = example["messages"]
        valid.append(messages)
        roles = {message["role"] for message in messages}
        n_missing_system += "system" not in roles
        n_missing_user += "user" not in roles

    prices = model_prices(model) or {}
    limit = int(prices.get("max_training_tokens", DEFAULT_MAX_TRAINING_TOKENS))
    totals, assistant = count_tokens(valid, model) if valid else ([], [])
    epochs = default_epochs(len(valid)) if valid and n_epochs in (None, "auto") else (n_epochs or 0)
    billed = sum(min(limit, n) for n in totals)
    result: dict[str, Any] = {
        "file": str(path),
        "model": model,
        "encoding": encoding_for_model(model).name,
        "n_examples": len(rows),
        "n_valid": len(valid),
        "n_legacy_converted": n_legacy,
        "format_errors": {category: {"count": len(lines), "lines": lines[:20]} for category, lines in errors.items()},
        "warnings": {"missing_system_message": n_missing_system, "missing_user_message": n_missing_user},
        "tokens_per_example": distribution(totals),
        "assistant_tokens_per_example": distribution(assistant),
        "max_training_tokens": limit,
        "n_over_limit": sum(n > limit for n in totals),
        "n_epochs": epochs,
        "epochs_rule": "cookbook default" if n_epochs in (None, "auto") else "spec",
        "billed_tokens_per_epoch": billed,
        "billed_tokens": billed * epochs,
        "cost": None,
    }
    if "training" in prices:
        result["cost"] = {
            "training_usd": round(billed * epochs * prices["training"] / 1e6, 4),
            "price_per_million": prices["training"],
            "prices_as_of": price_table()["as_of"],
        }
    return result


def summary_lines(checks: dict[str, Any]) -> list[str]:
    """A few human lines for the console and the report."""
    lines = [
        f"{checks['n_valid']}/{checks['n_examples']} examples well-formed ({checks['encoding']}, {checks['model']})"
    ]
    if checks.get("n_legacy_converted"):
        lines.append(
            f"{checks['n_legacy_converted']} legacy prompt/completion lines checked as chat (user → assistant)"
        )
    for category, found in checks["format_errors"].items():
        lines.append(f"format error {category}: {found['count']} (lines {', '.join(map(str, found['lines'][:5]))})")
    for warning, count in checks["warnings"].items():
        if count:
            lines.append(f"warning {warning}: {count}")
    tokens = checks["tokens_per_example"]
    if tokens:
        lines.append(
            f"tokens/example min {tokens['min']} · median {tokens['median']:g} · p95 {tokens['p95']:g} · max {tokens['max']}"
            f"; over the {checks['max_training_tokens']}-token limit: {checks['n_over_limit']}"
        )
    lines.append(
        f"{checks['n_epochs']} epochs ({checks['epochs_rule']}) × {checks['billed_tokens_per_epoch']} billed tokens"
        f" = {checks['billed_tokens']} tokens"
    )
    cost = checks["cost"]
    lines.append(
        f"estimated training cost on {checks['model']}: ${cost['training_usd']:.4f} (prices as of {cost['prices_as_of']})"
        if cost
        else f"no price known for {checks['model']}: cost not estimated"
    )
    return lines


def _base_model(model: str) -> str:
    """The model a fine-tuned id ('ft:BASE:org:suffix:id') was made from; any other id unchanged."""
    return model.split(":")[1] if model.startswith("ft:") else model


def _price_for(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens; fine-tuned models at their tuned prices."""
    tuned = model.startswith("ft:")
    prices = model_prices(_base_model(model))
    if not prices:
        return None
    prefix = "tuned_" if tuned else ""
    return prices[f"{prefix}input"], prices[f"{prefix}output"]


def inference_estimate(conversations: list[list[dict]], model: str, max_tokens: int) -> dict[str, Any]:
    """Upper bound on what evaluating these prompts costs: exact prompt tokens, max_tokens per answer."""
    base = _base_model(model)
    prompt_tokens = sum(count_tokens(conversations, base)[0]) if encoding_name(base) else None
    completion_tokens = max_tokens * len(conversations)
    price = _price_for(model)
    usd = None
    if price and prompt_tokens is not None:
        usd = round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6, 4)
    return {"prompt_tokens": prompt_tokens, "max_completion_tokens": completion_tokens, "usd": usd}


def usage_summary(outputs: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Requests, cache hits and tokens as the API reported them, with an estimated cost."""
    bought = [row for row in outputs if not row.get("cached")]
    prompt = sum(row.get("usage", {}).get("prompt_tokens", 0) for row in outputs)
    completion = sum(row.get("usage", {}).get("completion_tokens", 0) for row in outputs)
    price = _price_for(model)
    return {
        "requests": len(outputs),
        "from_cache": len(outputs) - len(bought),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "estimated_usd": round((prompt * price[0] + completion * price[1]) / 1e6, 4) if price else None,
    }
