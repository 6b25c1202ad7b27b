"""Chat APIs through their official SDKs: OpenAI, ZhipuAI, and any OpenAI-compatible server.

The SDK clients do no retrying of their own (max_retries=0): `retry.with_retries` does it, once,
with backoff and Retry-After. Requests run concurrently on a thread pool under an optional
requests-per-minute limit, and every answer goes through the response cache.

This is the boundary with servers that may misbehave, so nothing they send passes unchecked:
each attempt is bounded in total time and body size (transport.py), answers are parsed from
their JSON by hand (a wrong type, a missing field or an HTML page is a malformed answer:
retried, then one clear line and exit 3, never a Python message), and every text that comes
back (answers, error messages, job fields) has the API key's value redacted (secrets.py)
before anything prints, caches or writes it. Ctrl-C starts no new request (`parallel`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from runner.core.cache import ResponseCache, cache_key
from runner.core.errors import InvalidInput, RuntimeFailure, SpecrunError
from runner.core.secrets import redact, register
from runner.providers import Checkpoint, Completion, Conversation, Job, JobEvent, Progress, Provider
from runner.providers.api.retry import (
    MALFORMED_ERRORS,
    MalformedAnswer,
    RateLimiter,
    Stopped,
    Transient,
    is_retryable,
    say_once,
    status_code,
    with_retries,
)
from runner.providers.api.transport import AnswerTooLarge, attempt_deadline, caused_by, json_answer

_json_answer = json_answer
_caused_by = caused_by

DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "zhipuai": "ZHIPUAI_API_KEY", "openai_compatible": "OPENAI_API_KEY"}
DEFAULT_BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "zhipuai": "ZHIPUAI_BASE_URL"}

WINDING_DOWN = (
    "OpenAI self-serve fine-tuning is winding down (no new jobs after 2027-01-06; some organisations lost "
    "access earlier). Fine-tune the embedded model instead: set provider.name: local."
)


#: An answer's text is cut to this many characters per `max_tokens` (no token is longer): a server that
#: ignores max_tokens cannot fill the run folder and the cache.
CHARS_PER_TOKEN = 64
ANSWER_SLACK_CHARS = 256
DEFAULT_MAX_TOKENS = 4096


def resolve_base_url(config: dict[str, Any]) -> str | None:
    """Spec first, then the provider's environment variable, then the SDK's default (None)."""
    env = DEFAULT_BASE_URL_ENV.get(config["name"])
    return config.get("base_url") or (os.environ.get(env) if env else None)


def check_base_url(url: Any, where: str) -> None:
    """An http(s) URL with a host and a valid port, or InvalidInput naming `where`: no network needed."""
    shown = repr(url)
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{shown} is not a URL; expected e.g. http://localhost:8000/v1", where=where)
    if url != url.strip() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidInput(f"{shown} contains spaces or control characters", where=where)
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. "Invalid IPv6 URL" for http://[::1
        raise InvalidInput(f"{shown} is not a URL ({error})", where=where) from None
    if parts.username is not None or parts.password is not None:  # the spec, manifest and logs would keep it
        raise InvalidInput(
            "the URL carries credentials (user:key@host); give the key in the environment variable "
            "provider.api_key_env names, never in a spec",
            where=where,
        )
    if parts.scheme.lower() not in ("http", "https"):
        hint = f" (did you mean http://{url}?)" if "://" not in url and not url.startswith("/") else ""
        raise InvalidInput(f"{shown} does not start with http:// or https://{hint}", where=where)
    if not url.lower().startswith(f"{parts.scheme.lower()}://") or not parts.hostname:
        raise InvalidInput(f"{shown} has no host; expected e.g. {parts.scheme}://localhost:8000/v1", where=where)
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in 0..65535)
    except ValueError:
        raise InvalidInput(f"{shown} has an invalid port", where=where) from None


def preflight(config: dict[str, Any]) -> None:
    """Check a remote provider section without touching the network: model, API key, base URL.

    Raises InvalidInput naming the spec key (provider.model, provider.api_key_env, provider.base_url),
    so a missing key or a mistyped URL is found before a run folder is made or anything is spent.
    """
    name = config.get("name")
    if name not in DEFAULT_KEY_ENV:
        raise InvalidInput(f"unknown remote provider {name!r}", where="provider.name")
    model = config.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidInput(f"{name} needs a model name", where="provider.model")
    key_env = config.get("api_key_env") or DEFAULT_KEY_ENV[name]
    if not os.environ.get(key_env) and name != "openai_compatible":
        raise InvalidInput(f"environment variable {key_env} is not set", where="provider.api_key_env")
    if config.get("base_url") is not None:
        check_base_url(config["base_url"], "provider.base_url")
    elif (env := DEFAULT_BASE_URL_ENV.get(name)) and os.environ.get(env):
        check_base_url(os.environ[env], f"provider.base_url (from environment variable {env})")


class ChatAPIProvider(Provider):
    """A chat API reached through an official SDK; the subclasses below say which one and what it can do."""

    needs_key = True

    @classmethod
    def preflight(cls, config: dict[str, Any]) -> None:
        preflight(config)

    @classmethod
    def open(cls, config: dict[str, Any], cache: ResponseCache | None = None) -> ChatAPIProvider:
        return cls(config, cache)

    def __init__(self, config: dict[str, Any], cache: ResponseCache | None = None):
        preflight(config)
        self.name = config["name"]
        self.model = config["model"]
        self.base_url = resolve_base_url(config)
        self.concurrency = config.get("concurrency", 8)
        # Every answer is cached as it arrives, so large calls lose nothing on a crash and keep
        # all request slots busy (a call waits for its slowest request before the next starts).
        self.chunk_size = 128 * self.concurrency
        self.max_retries = config.get("max_retries", 6)
        self.limiter = RateLimiter(config.get("requests_per_minute"))
        self.cache = cache
        self.config = config  # api_scoring reads provider.scoring and prompts_per_request
        self.retries = 0
        key_env = config.get("api_key_env") or DEFAULT_KEY_ENV[self.name]
        register(os.environ.get(key_env))  # from here on, redact() removes it from whatever a server sends back
        api_key = os.environ.get(key_env) or "not-needed"  # local servers (vLLM, Ollama) usually take any key
        self.timeout = timeout = float(config.get("timeout_s", 60))  # bounds each attempt's total time
        if self.name == "zhipuai":
            from zhipuai import ZhipuAI

            from runner.providers.api.transport import zhipuai_http_client

            http = zhipuai_http_client(timeout)
            self.client = ZhipuAI(
                api_key=api_key, base_url=self.base_url, timeout=timeout, max_retries=0, http_client=http
            )
        else:
            import openai

            from runner.providers.api.transport import openai_http_client

            http = openai_http_client(timeout)
            self.client = openai.OpenAI(
                api_key=api_key, base_url=self.base_url, timeout=timeout, max_retries=0, http_client=http
            )

    def describe(self) -> dict[str, Any]:
        from runner.providers.api.scoring import describe_scoring

        return {"model": self.model, "provider": self.name, "base_url": self.base_url, **describe_scoring(self.config)}

    # --- chat -------------------------------------------------------------------------------------

    def _call(self, call: Callable[[], Any], stop: threading.Event | None = None, *, timed: bool = True) -> Any:
        """call() with retries, each attempt within timeout_s in total (unless not timed: uploads).

        Failures become one redacted RuntimeFailure line; Stopped (Ctrl-C, or another request failed)
        and specrun's own errors pass through.
        """

        def count_retry(error: BaseException, wait_s: float) -> None:
            self.retries += 1

        def attempt() -> Any:
            with attempt_deadline(self.timeout if timed else None):
                return call()

        try:
            return with_retries(attempt, self.max_retries, count_retry, stop)
        except (Stopped, SpecrunError):
            raise
        except Exception as error:
            raise RuntimeFailure(redact(self._failure(error))) from None

    def _failure(self, error: BaseException) -> str:
        """One line saying why a request failed for good, with no Python in it."""
        code = status_code(error)
        tries = f" (after {self.max_retries + 1} tries)" if self.max_retries and is_retryable(error) else ""
        if isinstance(error, MALFORMED_ERRORS):
            return f"{self.name} sent a malformed answer{tries}: {_message(error)}"
        if _caused_by(error, AnswerTooLarge):
            return f"{self.name} request failed{tries}: {_message(error)}"
        if "timeout" in type(error).__name__.lower():
            return f"{self.name} request failed{tries}: no complete answer within timeout_s={self.timeout:g}"
        return f"{self.name} request failed{f' with HTTP {code}' if code else ''}{tries}: {_message(error)}"

    def _complete(
        self, messages: Conversation, params: dict[str, Any], stop: threading.Event | None = None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": params.get("max_tokens")}
        if "top_p" in params:
            kwargs["top_p"] = params["top_p"]
        temperature = params.get("temperature", 0)
        if self.name == "zhipuai" and not temperature:
            kwargs["do_sample"] = False  # ZhipuAI's greedy decoding; it rejects temperature 0
        else:
            kwargs["temperature"] = temperature
        self.limiter.wait(stop)
        if stop is not None and stop.is_set():
            raise Stopped
        data = _json_answer(lambda: self.client.chat.completions.create(**kwargs))
        text, usage = parse_chat(data)
        limit = CHARS_PER_TOKEN * (params.get("max_tokens") or DEFAULT_MAX_TOKENS) + ANSWER_SLACK_CHARS
        if len(text) > limit:
            say_once(
                f"{self.name} sent answers longer than max_tokens allows; "
                f"each is cut to {limit} characters (max_tokens {params.get('max_tokens')})"
            )
            text = text[:limit]
        return {"text": redact(text), "usage": usage}

    def parallel(self, n_jobs: int, job: Callable[[int, threading.Event], None]) -> None:
        """Run job(i, stop) for i in range(n_jobs) on `concurrency` threads; return once all are done.

        The first failure, or Ctrl-C (KeyboardInterrupt in the main thread, SIGTERM included), sets
        stop: no request starts after it (jobs pass stop to `_call`/`limiter.wait`, which raise
        Stopped). After a failure the requests in flight finish, their answers cached, then the
        failure is raised; after Ctrl-C they are abandoned (daemon threads) and it is re-raised at
        once. Answers handed to the cache are committed before this returns or raises.
        """
        stop = threading.Event()
        failures: list[BaseException] = []
        lock = threading.Lock()
        indices = iter(range(n_jobs))

        def worker() -> None:
            while not stop.is_set():
                with lock:
                    index = next(indices, None)
                if index is None:
                    return
                try:
                    job(index, stop)
                except Stopped:
                    return
                except BaseException as error:
                    with lock:
                        failures.append(error)
                    stop.set()
                    return

        threads = [
            threading.Thread(target=worker, name=f"specrun-request-{n}", daemon=True)
            for n in range(min(self.concurrency, n_jobs))
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)
        except BaseException:
            stop.set()  # Ctrl-C: nothing new starts; requests in flight are left behind
            if self.cache:
                self.cache.flush(timeout=5)
            raise
        if self.cache:
            self.cache.flush()  # answers bought are on disk before anything else happens
        if failures:
            raise failures[0]

    def chat(
        self,
        conversations: Sequence[Conversation],
        params: dict[str, Any],
        progress: Progress | None = None,
        guides: Sequence[Any] | None = None,  # constrained decoding is the local model's; APIs ignore it
        on_answer: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        """One reply per conversation. on_answer(index, completion), if given, is called (one call at a
        time) as each answer arrives, cached ones first: a caller that saves there loses nothing when a
        later request fails or the run is interrupted."""
        requests = [
            {"provider": self.name, "model": self.model, "base_url": self.base_url, "messages": m, "params": params}
            for m in conversations
        ]
        cached = self.cache.get_many(requests) if self.cache else {}
        results: list[Completion | None] = [None] * len(conversations)
        todo = []
        for index, request in enumerate(requests):
            hit = cached.get(cache_key(request))
            if hit is None or not isinstance(hit.get("text"), str):  # a damaged cache row is asked again
                todo.append(index)
            else:
                results[index] = Completion(redact(hit["text"]), _usage(hit.get("usage")), cached=True)
                if on_answer:
                    on_answer(index, results[index])
        if progress and len(todo) < len(requests):
            progress(len(requests) - len(todo))
        delivering = threading.Lock()

        def one(number: int, stop: threading.Event) -> None:
            index = todo[number]
            answer = self._call(lambda: self._complete(conversations[index], params, stop), stop)
            if self.cache:
                self.cache.put(requests[index], answer)
            results[index] = completion = Completion(answer["text"], answer["usage"])
            if on_answer:
                with delivering:
                    on_answer(index, completion)
            if progress:
                progress(1)

        self.parallel(len(todo), one)
        return [result for result in results if result is not None]

    def score(
        self, conversations: Sequence[Conversation], answers: Sequence[str], progress: Progress | None = None
    ) -> np.ndarray:
        """Label log-probabilities through the API: completions echo or chat top_logprobs (api_scoring.py)."""
        from runner.providers.api.scoring import score

        return score(self, conversations, answers, progress)

    # --- fine-tuning lifecycle ---------------------------------------------------------------------

    def upload(self, path: Path) -> str:
        def send() -> str:
            with path.open("rb") as handle:
                content = handle.read()
            data = _json_answer(lambda: self.client.files.create(file=(path.name, content), purpose="fine-tune"))
            return _text(_object(data, "the uploaded file"), "id", "the uploaded file")

        return self._call(send, timed=False)  # a large file may take longer than timeout_s to send

    def create_job(self, training_file: str, settings: dict[str, Any]) -> Job:
        unsupported = sorted(set(settings) - self.fine_tune_settings - {"validation_file"})
        if unsupported:
            raise InvalidInput(f"{self.name} fine-tuning does not take {', '.join(unsupported)}", where="fine_tune")
        hyper = {k: settings[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier") if k in settings}
        kwargs: dict[str, Any] = {"model": self.model, "training_file": training_file}
        for key in ("suffix", "validation_file", "seed"):
            if settings.get(key) is not None:
                kwargs[key] = settings[key]
        if self.name == "openai":
            kwargs["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
        elif hyper:
            kwargs["hyperparameters"] = hyper
        try:
            # Not retried blindly: a create whose answer was lost may have made a job. The caller
            # looks the job up by its training file before creating again.
            with attempt_deadline(self.timeout):
                return _job(_json_answer(lambda: self.client.fine_tuning.jobs.create(**kwargs)))
        except Exception as error:
            if is_retryable(error):  # the caller decides: look the job up, then maybe create again
                raise Transient(redact(self._failure(error))) from None
            code = status_code(error)
            advice = f" {WINDING_DOWN}" if self.name == "openai" and code in (400, 403, 404) else ""
            raise RuntimeFailure(
                f"{self.name} could not create the fine-tuning job"
                f"{f' (HTTP {code})' if code else ''}: {_message(error)}.{advice}"
            ) from error

    def list_jobs(self, limit: int = 100) -> list[Job]:
        def fetch() -> list[Job]:
            return [
                _job(job) for job in _page(_json_answer(lambda: self.client.fine_tuning.jobs.list(limit=limit)), "jobs")
            ]

        return self._call(fetch)

    def job(self, job_id: str) -> Job:
        return self._call(lambda: _job(_json_answer(lambda: self.client.fine_tuning.jobs.retrieve(job_id))))

    def events(self, job_id: str) -> list[JobEvent]:
        def fetch() -> list[JobEvent]:
            page = _page(_json_answer(lambda: self.client.fine_tuning.jobs.list_events(job_id, limit=100)), "events")
            return [_event(item) for item in page]

        return sorted(self._call(fetch), key=lambda event: (event.created_at, event.id))

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        if self.name != "openai":  # ZhipuAI has no checkpoints endpoint
            return []

        def fetch() -> list[Checkpoint]:
            answer = _json_answer(lambda: self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=100))
            return [_checkpoint(item) for item in _page(answer, "checkpoints")]

        return sorted(self._call(fetch), key=lambda checkpoint: checkpoint.step)

    def cancel(self, job_id: str) -> Job:
        return self._call(lambda: _job(_json_answer(lambda: self.client.fine_tuning.jobs.cancel(job_id))))

    def delete_model(self, model: str) -> None:
        if self.name == "zhipuai":
            self._call(lambda: _json_answer(lambda: self.client.fine_tuning.models.delete(fine_tuned_model=model)))
        else:
            self._call(lambda: _json_answer(lambda: self.client.models.delete(model)))


# --- answers, parsed by hand: a server's JSON is checked before it is believed ---------------------


def _kind(value: Any) -> str:
    """A JSON value's type in JSON's words (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedAnswer(f"{what} is {_kind(value)}, not an object")
    return value


def _text(record: dict[str, Any], key: str, what: str, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise MalformedAnswer(f"{what}'s {key!r} is {_kind(value)}, not a non-empty string")
    return redact(_clean(value))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _usage(value: Any) -> dict[str, int]:
    """Token counts the API reported; counts that are not whole numbers are left out (cost unknown)."""
    if not isinstance(value, dict):
        return {}
    counts = {key: _count(value.get(key)) for key in ("prompt_tokens", "completion_tokens")}
    return {key: count for key, count in counts.items() if count is not None}


def parse_chat(data: Any) -> tuple[str, dict[str, int]]:
    """(answer text, usage) from a chat completion's JSON, or MalformedAnswer saying which field is wrong."""
    answer = _object(data, "the answer")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedAnswer(f"'choices' is {_kind(choices)}, not a non-empty list")
    message = _object(_object(choices[0], "choices[0]").get("message"), "choices[0].message")
    content = message.get("content")
    if content is None:  # no text (a refusal or a tool call): an answer naming no label
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):  # content parts: [{"type": "text", "text": "..."}]
        parts = [part if isinstance(part, str) else _object(part, "a content part").get("text") for part in content]
        if not all(isinstance(part, str) for part in parts):
            raise MalformedAnswer("choices[0].message.content has a part without text")
        text = "".join(parts)
    else:
        raise MalformedAnswer(f"choices[0].message.content is {_kind(content)}, not text")
    return _clean(text), _usage(answer.get("usage"))


def _clean(text: str) -> str:
    """Text that can be written as UTF-8: JSON may carry lone surrogates (\\ud800), which cannot."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _safe(value: Any) -> Any:
    """A JSON value from a server, made writable (`_clean`) and redacted, for event data and metrics."""
    if isinstance(value, str):
        return redact(_clean(value))
    if isinstance(value, dict):
        return {_safe(k): _safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_safe(v) for v in value]
    return value


def _page(data: Any, what: str) -> list[Any]:
    items = _object(data, f"the list of {what}").get("data")
    if not isinstance(items, list):
        raise MalformedAnswer(f"the list of {what}'s 'data' is {_kind(items)}, not a list")
    return items


def _job(data: Any) -> Job:
    record = _object(data, "a fine-tuning job")
    error = record.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return Job(
        id=_text(record, "id", "a fine-tuning job") or "",
        status=_text(record, "status", "a fine-tuning job") or "",
        model=_text(record, "model", "a fine-tuning job", required=False) or "",
        training_file=_text(record, "training_file", "a fine-tuning job", required=False),
        fine_tuned_model=_text(record, "fine_tuned_model", "a fine-tuning job", required=False),
        error=redact(_clean(str(message))) if message else None,
        trained_tokens=_count(record.get("trained_tokens")),
    )


def _event(data: Any) -> JobEvent:
    record = _object(data, "a job event")
    message = record.get("message")
    details = record.get("data")
    return JobEvent(
        id=_text(record, "id", "a job event") or "",
        created_at=_count(record.get("created_at")) or 0,
        message=redact(_clean(message)) if isinstance(message, str) else "",
        data=_safe(details) if isinstance(details, dict) else {},
    )


def _checkpoint(data: Any) -> Checkpoint:
    record = _object(data, "a checkpoint")
    step = _count(record.get("step_number"))
    if step is None:
        raise MalformedAnswer(f"a checkpoint's 'step_number' is {_kind(record.get('step_number'))}, not a count")
    metrics = record.get("metrics")
    return Checkpoint(
        id=_text(record, "id", "a checkpoint") or "",
        step=step,
        metrics=_safe(metrics) if isinstance(metrics, dict) else {},
        model=_text(record, "fine_tuned_model_checkpoint", "a checkpoint", required=False),
    )


def _message(error: BaseException) -> str:
    """The server's own message (or the error's first line), on one line, at most 300 characters."""
    text = ""
    if too_large := _caused_by(error, AnswerTooLarge):
        text = str(too_large)
    body = getattr(error, "body", None)
    if not text and isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            text = str(inner["message"])
    if not text:
        text = str(error) or type(error).__name__
    text = " ".join(_clean(text).split())
    return redact(text if len(text) <= 300 else text[:297] + "…")


class OpenAIProvider(ChatAPIProvider):
    name = "openai"
    key_env = "OPENAI_API_KEY"
    can_score = True
    default_scoring = "chat"  # OpenAI returns no prompt log-probabilities: top_logprobs of the reply
    fine_tune_settings = frozenset({"n_epochs", "batch_size", "learning_rate_multiplier", "suffix", "seed"})


class ZhipuAIProvider(ChatAPIProvider):
    name = "zhipuai"
    key_env = "ZHIPUAI_API_KEY"
    fine_tune_settings = frozenset({"n_epochs", "suffix"})


class OpenAICompatibleProvider(ChatAPIProvider):
    """vLLM, Ollama, llama.cpp's server or any server speaking OpenAI's HTTP API at provider.base_url."""

    name = "openai_compatible"
    key_env = "OPENAI_API_KEY"
    needs_key = False  # local servers usually take any key
    can_score = True
    default_scoring = "completions"  # echo + logprobs over prompt and label
