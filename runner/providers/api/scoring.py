"""Label scoring (`evaluation.method: score`) through an API instead of the embedded model.

Two paths, chosen by `provider.scoring`:

- `completions` (openai_compatible's default: vLLM, llama-cpp-python's server, any server with
  `/v1/completions`, `echo` and `logprobs`): each label is appended to the rendered prompt and sent
  with `echo: true, max_tokens: 1, logprobs: 1`; the server returns the log-probability of every
  token of prompt + label under its own tokenizer, and the label's tokens are found by their
  `text_offset` against the prompt's length. The score is the sum of those tokens' log-probabilities:
  the same quantity the embedded scorer computes. `provider.prompts_per_request` strings go in one
  request as a prompt list (servers that take lists: vLLM; llama-cpp-python's takes one).
- `chat` (openai's only path; openai_compatible on request): one request per example with
  `logprobs: true, top_logprobs: 20, max_tokens: 1`. A label scores the log-probability of its first
  token in that list; a label whose first token is not among the 20 gets the floor: the smallest
  listed log-probability minus FLOOR_MARGIN (it is less likely than every listed token; how much
  less is unknown). This separates labels only when their first tokens differ, which is checked at
  validation (exit 2): with tiktoken for OpenAI models, by first character when the server's
  tokenizer is unknown (labels with different first characters cannot share a first token under
  any tokenizer; there every listed token consistent with the label's start counts, summed).

ZhipuAI's chat API has no logprobs (the zhipuai SDK's chat.completions.create takes no `logprobs`
or `top_logprobs`, its Completion type carries none) and there is no text-completions endpoint,
so `method: score` with zhipuai is refused at validation.

Requests reuse the provider's thread pool size, rate limiter, retries and response cache, so a
rerun asks nothing twice and an interrupted evaluation resumes like `generate`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from runner.core.errors import InvalidInput, RuntimeFailure
from runner.core.tokens import encoding_for_model, encoding_name
from runner.providers import Conversation, Progress
from runner.providers.api.retry import MalformedAnswer
from runner.providers.registry import provider_class


class ScoringClient(Protocol):
    """What label scoring needs of the API client (ChatAPIProvider): its public surface, no more."""

    name: str
    model: str
    base_url: str | None
    scoring: str | None
    prompts_per_request: int | None

    def request(self, call: Callable[[], Any], stop: threading.Event | None = None, *, timed: bool = True) -> Any: ...
    def send_chat(self, kwargs: dict[str, Any], stop: threading.Event | None = None) -> Any: ...
    def send_completion(self, kwargs: dict[str, Any], stop: threading.Event | None = None) -> Any: ...
    def cached(self, requests: Sequence[dict[str, Any]]) -> list[Any]: ...
    def remember(self, request: dict[str, Any], answer: Any) -> None: ...
    def parallel(self, n_jobs: int, job: Callable[[int, threading.Event], None]) -> None: ...


COMPLETIONS = "completions-echo-logprobs"
CHAT = "chat-top-logprobs"
PATHS = {"completions": COMPLETIONS, "chat": CHAT}
TOP_LOGPROBS = 20  # OpenAI's maximum, and vLLM's default --max-logprobs
FLOOR_MARGIN = 1.0  # nats below the least likely listed token, for a label not listed at all


# --- validation ------------------------------------------------------------------------------------


def check_scoring(cls: Any, provider: dict[str, Any], where: Callable[..., str], answers: Sequence[str] | None) -> None:
    """Exit-2 checks for `method: score` through `cls`'s API (provider.scoring is filled in by then:
    it is part of the spec hash). `answers`: the labels, as the task gives them."""
    if not cls.scoring_paths:
        raise InvalidInput(cls.cannot_score_reason(), where=where("evaluation", "method"))
    if provider["scoring"] == "chat":
        if "prompts_per_request" in provider:
            raise InvalidInput(
                "prompts_per_request applies only to scoring: completions (chat scoring sends one conversation a request)",
                where=where("provider", "prompts_per_request"),
            )
        shared = shared_first_tokens(list(answers or []), cls.name, provider["model"])
        if shared:
            raise InvalidInput(shared, where=where("labels"))


def first_token_keys(labels: Sequence[str], provider: str, model: str | None) -> tuple[str, list[bytes | str]]:
    """How labels are matched to chat top_logprobs entries, and each label's key.

    OpenAI models with a shipped tiktoken encoding: the exact bytes of the label's first token.
    Any other tokenizer: the label's first character (whitespace and sentencepiece's '▁' stripped).
    """
    encoding = encoding_name(model) if _uses_tiktoken(provider) and model else None
    if encoding:
        enc = encoding_for_model(model)
        keys: list[bytes | str] = []
        for label in labels:
            ids = enc.encode(label)
            if not ids:
                raise InvalidInput(f"label {label!r} encodes to no tokens", where="labels")
            keys.append(enc.decode_single_token_bytes(ids[0]))
        return f"first token ({encoding})", keys
    stripped = [_clean(label) for label in labels]
    if not all(stripped):
        raise InvalidInput("a label name is empty or only whitespace", where="labels")
    return "first character (server tokenizer unknown)", [text[0] for text in stripped]


def shared_first_tokens(labels: Sequence[str], provider: str, model: str | None) -> str | None:
    """A one-line explanation when two labels cannot be told apart by their first token, else None."""
    how, keys = first_token_keys(labels, provider, model)
    seen: dict[bytes | str, str] = {}
    for label, key in zip(labels, keys, strict=True):
        if key in seen:
            shown = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
            advice = (
                "rename one of them"
                if "completions" not in _scoring_paths(provider)
                else "rename one of them, or use provider.scoring: completions (scores every token of each label)"
            )
            return (
                f"labels {seen[key]!r} and {label!r} share their {how} {shown!r}; chat scoring reads only the "
                f"first answer token, so it cannot separate them: {advice}"
            )
        seen[key] = label
    return None


def _uses_tiktoken(provider: str) -> bool:
    return bool(getattr(provider_class(provider), "tiktoken_labels", False))


def _scoring_paths(provider: str) -> tuple[str, ...]:
    return tuple(getattr(provider_class(provider), "scoring_paths", ()))


def describe_scoring(config: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records about the scoring path ({} when the spec does not score)."""
    scoring = config.get("scoring")
    if not scoring:
        return {}
    if scoring == "completions":
        return {"scoring": COMPLETIONS, "prompts_per_request": config.get("prompts_per_request", 1)}
    how, _ = first_token_keys([], config["name"], config.get("model"))
    return {
        "scoring": CHAT,
        "top_logprobs": TOP_LOGPROBS,
        "label_match": how,
        "unlisted_label_score": f"smallest listed logprob - {FLOOR_MARGIN}",
    }


# --- scoring ---------------------------------------------------------------------------------------


def prompt_text(conversation: Conversation) -> str:
    """What /v1/completions continues: the messages' contents joined, as the embedded scorer does for a
    model without a chat template. An instruct model's markup belongs in the spec's template."""
    return "\n\n".join(message["content"] for message in conversation)


def score(
    provider: ScoringClient,
    conversations: Sequence[Conversation],
    answers: Sequence[str],
    progress: Progress | None = None,
) -> np.ndarray:
    """Log-probability of each answer after each prompt, through the provider's API: (conversations, answers)."""
    if provider.scoring == "completions":
        return _score_completions(provider, conversations, answers, progress)
    return _score_chat(provider, conversations, answers, progress)


def _base_request(provider: ScoringClient, scoring: str) -> dict[str, Any]:
    return {"provider": provider.name, "model": provider.model, "base_url": provider.base_url, "scoring": scoring}


_USAGE_LOCK = threading.Lock()


def _add_usage(provider: ScoringClient, usage: Any) -> None:
    """The API's own token counts, totalled on the provider (`score_usage`): what the bench reports."""
    with _USAGE_LOCK:
        totals = getattr(provider, "score_usage", None)
        if totals is None:
            totals = provider.score_usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        totals["requests"] += 1
        if isinstance(usage, dict):
            for key in ("prompt_tokens", "completion_tokens"):
                if isinstance(usage.get(key), int):
                    totals[key] += usage[key]


def _checked(provider: ScoringClient, data: Any) -> dict[str, Any]:
    """An answer's JSON body, which must be an object; its token counts are added to the provider's."""
    if not isinstance(data, dict):
        raise MalformedAnswer("the answer is not a JSON object")
    _add_usage(provider, data.get("usage"))
    return data


# completions: prompt + label, echoed with token log-probabilities


def _score_completions(
    provider: ScoringClient, conversations: Sequence[Conversation], answers: Sequence[str], progress: Progress | None
) -> np.ndarray:
    prompts = [prompt_text(conversation) for conversation in conversations]
    k = len(answers)
    scores = np.zeros((len(prompts), k), dtype=np.float32)
    base = _base_request(provider, COMPLETIONS)
    requests = [{**base, "prompt": prompt, "answer": answer} for prompt in prompts for answer in answers]
    remaining = [k] * len(prompts)
    todo = []
    for index, hit in enumerate(provider.cached(requests)):
        if not isinstance(hit, dict) or not _finite_number(hit.get("logprob")):  # damaged (or NaN): ask again
            todo.append(index)
        else:
            scores[index // k, index % k] = hit["logprob"]
            remaining[index // k] -= 1
    finished = sum(1 for left in remaining if left == 0)
    if progress and finished:
        progress(finished)
    per_request = provider.prompts_per_request
    groups = [todo[start : start + per_request] for start in range(0, len(todo), per_request)]
    lock = threading.Lock()

    def send(number: int, stop: threading.Event) -> None:
        group = groups[number]
        pairs = [(prompts[i // k], answers[i % k]) for i in group]
        texts = [prompt + answer for prompt, answer in pairs]

        def attempt() -> list[dict[str, Any]]:
            request = {
                "model": provider.model,
                "prompt": texts if len(texts) > 1 else texts[0],
                "max_tokens": 1,  # 0 means "no limit" to llama-cpp-python; the one generated token is ignored
                "temperature": 0,
                "logprobs": 1,
                "echo": True,
            }
            where = [f"prompt {i // k + 1} of {len(prompts)}, label {answers[i % k]!r}" for i in group]
            return parse_completions(
                _checked(provider, provider.send_completion(request, stop)), pairs, provider.name, where
            )

        try:
            results = provider.request(attempt, stop)
        except RuntimeFailure as error:
            if per_request > 1 and "HTTP" in str(error):
                raise RuntimeFailure(
                    f"{error} (if this server takes one prompt per request, as llama-cpp-python's does, "
                    "set provider.prompts_per_request: 1)"
                ) from None
            raise
        for index, result in zip(group, results, strict=True):
            provider.remember(requests[index], result)
            scores[index // k, index % k] = result["logprob"]
        with lock:
            done_now = 0
            for index in group:
                remaining[index // k] -= 1
                done_now += remaining[index // k] == 0
        if progress and done_now:
            progress(done_now)

    provider.parallel(len(groups), send)
    return scores


def parse_completions(
    data: dict[str, Any], pairs: list[tuple[str, str]], provider: str, where: list[str] | None = None
) -> list[dict[str, Any]]:
    """{logprob, label_tokens, tokens} of each (prompt, label) from an echoed completions answer, in order.

    A body of the wrong shape is MalformedAnswer (retried); a server that answers in shape but
    without what scoring needs (no echo, no logprobs, too few choices) is a RuntimeFailure at once.
    A log-probability that is not a finite number (NaN, ±Infinity, -1e309) is malformed too: it
    would score every label alike, and must never reach the cache or a metric. `where` names each
    pair (prompt and label) in that message.
    """
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        raise MalformedAnswer("the completions answer has no list of choices")
    if len(choices) != len(pairs):
        raise RuntimeFailure(
            f"{provider} answered {len(choices)} completions for {len(pairs)} prompts in one request; "
            "set provider.prompts_per_request: 1"
        )
    choices = sorted(choices, key=lambda choice: choice["index"] if isinstance(choice.get("index"), int) else 0)
    results = []
    for number, (choice, (prompt, answer)) in enumerate(zip(choices, pairs, strict=True)):
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict) or not all(
            logprobs.get(key) for key in ("tokens", "text_offset", "token_logprobs")
        ):
            raise RuntimeFailure(
                f"{provider} returned no token log-probabilities for the prompt: label scoring through "
                "completions needs a server that supports echo with logprobs (vLLM, llama-cpp-python); "
                "use provider.scoring: chat or method: generate"
            )
        tokens, offsets, values = logprobs["tokens"], logprobs["text_offset"], logprobs["token_logprobs"]
        if not (
            isinstance(tokens, list)
            and isinstance(offsets, list)
            and isinstance(values, list)
            and len(tokens) == len(offsets) == len(values)
            and all(isinstance(token, str) for token in tokens)
            and all(isinstance(offset, int) and not isinstance(offset, bool) for offset in offsets)
            and all(value is None or isinstance(value, int | float) for value in values)
        ):
            raise MalformedAnswer("the completions logprobs are not equal-length lists of tokens, offsets and numbers")
        if not all(value is None or _finite_number(value) for value in values):
            raise MalformedAnswer(
                "a token log-probability is not a finite number (NaN or Infinity)"
                + (f" for {where[number]}" if where else "")
            )
        text = choice.get("text")
        if not isinstance(text, str) or not text.startswith(prompt + answer):
            raise RuntimeFailure(
                f"{provider} did not echo the prompt and label (echo: true) in its completion text, so its "
                "log-probabilities cannot be placed on the label; use provider.scoring: chat or method: generate"
            )
        total, count = label_logprob(tokens, offsets, values, len(prompt), len(answer))
        if not math.isfinite(total):  # finite parts that overflow their sum (-1e308 twice)
            raise MalformedAnswer(
                "the label's log-probability sums to minus infinity" + (f" for {where[number]}" if where else "")
            )
        results.append({"logprob": total, "label_tokens": count, "tokens": len(tokens)})
    return results


def label_logprob(
    tokens: Sequence[str],
    offsets: Sequence[int],
    logprobs: Sequence[float | None],
    prompt_chars: int,
    label_chars: int,
) -> tuple[float, int]:
    """Sum of the log-probabilities of the tokens that make up the label, and how many there are.

    A token belongs to the label when it starts inside it ([prompt_chars, prompt_chars + label_chars)),
    including zero-width pieces of a character split over byte tokens, or when it straddles the
    prompt's end (a tokenizer that glues the prompt's trailing space to the label's first word: the
    token is then the label's first token as the server sees it). Tokens after the label (the one
    generated token) are not counted.
    """
    end = prompt_chars + label_chars
    total, count = 0.0, 0
    for i, start in enumerate(offsets):
        after = offsets[i + 1] if i + 1 < len(offsets) else start + len(tokens[i])
        inside = prompt_chars <= start < end
        straddles = start < prompt_chars < after
        if not (inside or straddles):
            continue
        if logprobs[i] is None:
            raise RuntimeFailure("the server returned no log-probability for a label token (an empty prompt?)")
        total += float(logprobs[i])
        count += 1
    if not count:
        raise RuntimeFailure(
            "the server's text_offsets place no token on the label; its completions endpoint does not "
            "report offsets the way OpenAI's does; use provider.scoring: chat or method: generate"
        )
    return total, count


# chat: the first answer token's top_logprobs


def _score_chat(
    provider: ScoringClient, conversations: Sequence[Conversation], answers: Sequence[str], progress: Progress | None
) -> np.ndarray:
    _, keys = first_token_keys(answers, provider.name, provider.model)
    exact = any(isinstance(key, bytes) for key in keys)
    base = {**_base_request(provider, CHAT), "top_logprobs": TOP_LOGPROBS}
    requests = [{**base, "messages": messages} for messages in conversations]
    tops: list[Any] = [(hit if isinstance(hit, dict) else {}).get("top") for hit in provider.cached(requests)]
    todo = [index for index, top in enumerate(tops) if not _good_top(top)]  # damaged or NaN: ask again
    if progress and len(todo) < len(requests):
        progress(len(requests) - len(todo))

    def ask(number: int, stop: threading.Event) -> None:
        index = todo[number]

        def attempt() -> list[list[Any]]:
            request = {
                "model": provider.model,
                "messages": conversations[index],
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": TOP_LOGPROBS,
            }
            try:
                return top_entries(_checked(provider, provider.send_chat(request, stop)), provider)
            except MalformedAnswer as error:
                raise MalformedAnswer(f"{error} (prompt {index + 1} of {len(conversations)})") from None

        top = provider.request(attempt, stop)
        provider.remember(requests[index], {"top": top})
        tops[index] = top
        if progress:
            progress(1)

    provider.parallel(len(todo), ask)
    scores = [label_scores(top, answers, keys, exact) for top in tops]
    return np.array(scores, dtype=np.float32).reshape(len(conversations), len(answers))


def top_entries(data: dict[str, Any], provider: ScoringClient) -> list[list[Any]]:
    """[token, logprob, bytes] of the first answer token's top_logprobs, or a clear exit-3 failure."""
    from runner.core.secrets import redact

    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedAnswer("the chat answer has no choices")
    logprobs = choices[0].get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    first = content[0] if isinstance(content, list) and content and isinstance(content[0], dict) else {}
    top = first.get("top_logprobs")
    if not top:
        raise RuntimeFailure(
            f"{provider.name} returned no top_logprobs for model {provider.model!r}, so labels cannot be scored "
            "through chat; use method: generate"
            + (" or provider.scoring: completions" if "completions" in provider.scoring_paths else "")
        )
    if not isinstance(top, list):
        raise MalformedAnswer("top_logprobs is not a list")
    entries = []
    for entry in top:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("token"), str)
            and isinstance(entry.get("logprob"), int | float)
            and (entry.get("bytes") is None or isinstance(entry["bytes"], list))
        ):
            raise MalformedAnswer("a top_logprobs entry is not {token, logprob, bytes}")
        if not _finite_number(entry["logprob"]):
            raise MalformedAnswer(f"the top_logprobs entry {entry['token']!r} has a log-probability that is not finite")
        if not _byte_list(entry.get("bytes")):
            raise MalformedAnswer(f"the top_logprobs entry {entry['token']!r} has bytes that are not 0-255 integers")
        entries.append([redact(entry["token"]), float(entry["logprob"]), entry.get("bytes")])
    return entries


def label_scores(top: list[list[Any]], labels: Sequence[str], keys: Sequence[bytes | str], exact: bool) -> list[float]:
    """Each label's score from one first-token distribution ([token, logprob, bytes] entries).

    exact (tiktoken): the entry whose bytes are the label's first token. Otherwise every entry whose
    text (stripped) is a prefix of the label or starts with it: alternative tokenizations of an
    answer beginning with this label and no other (first characters differ), so their
    probabilities are summed.
    """
    if not top:
        raise RuntimeFailure("the server returned an empty top_logprobs list")
    floor = min(float(entry[1]) for entry in top) - FLOOR_MARGIN
    scores = []
    for label, key in zip(labels, keys, strict=True):
        if exact:
            found = [float(lp) for token, lp, raw in top if (bytes(raw) if raw else _utf8(token)) == key]
            scores.append(found[0] if found else floor)
            continue
        target = _clean(label)
        found = [
            float(lp)
            for token, lp, _ in top
            if (text := _clean(token)) and (target.startswith(text) or text.startswith(target))
        ]
        scores.append(_logsumexp(found) if found else floor)
    return scores


def _utf8(token: str) -> bytes:
    """A token's bytes; a lone surrogate (half a character a server split) cannot be a label's first token."""
    return token.encode("utf-8", "surrogatepass")


def _finite_number(value: Any) -> bool:
    """A real log-probability: a number (not a bool), neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _byte_list(value: Any) -> bool:
    """None, or a list `bytes()` takes: integers 0-255 (a server sent [999], [-1] and ["a"])."""
    return value is None or (
        isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value)
    )


def _good_top(top: Any) -> bool:
    """A cached top_logprobs list that can be scored: [token, finite logprob, bytes] entries, at least one."""
    return (
        isinstance(top, list)
        and bool(top)
        and all(
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and _finite_number(entry[1])
            and _byte_list(entry[2])
            for entry in top
        )
    )


def _clean(text: str) -> str:
    return text.strip().lstrip("\u2581").strip()


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(value - top) for value in values))
