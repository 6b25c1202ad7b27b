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
from typing import Any, ClassVar

import numpy as np

from runner.core.cache import ResponseCache, cache_key
from runner.core.errors import InvalidInput, RuntimeFailure, SpecrunError
from runner.core.secrets import redact, register
from runner.providers import ID_SHAPE, Checkpoint, Completion, Conversation, Job, JobEvent, Progress, Provider, check_id
from runner.providers.api.fleet import Fleet
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
from runner.providers.api.transport import (  # check_base_url: imported from here by callers
    AnswerTooLarge,
    attempt_deadline,
    caused_by,
    check_base_url,
    json_answer,
)

_json_answer = json_answer
_caused_by = caused_by

#: An answer's text is cut to this many characters per `max_tokens` (no token is longer): a server that
#: ignores max_tokens cannot fill the run folder and the cache.
CHARS_PER_TOKEN = 64
ANSWER_SLACK_CHARS = 256
DEFAULT_MAX_TOKENS = 4096


def preflight(config: dict[str, Any]) -> None:
    """Check a remote provider section without touching the network: model, API key, base URL.

    Raises InvalidInput naming the spec key (provider.model, provider.api_key_env, provider.base_url),
    so a missing key or a mistyped URL is found before a run folder is made or anything is spent.
    """
    from runner.providers.registry import provider_class, provider_table

    name = config.get("name")
    cls = provider_class(name) if isinstance(name, str) and name in provider_table() else None
    if cls is None or not issubclass(cls, ChatAPIProvider):
        raise InvalidInput(f"unknown remote provider {name!r}", where="provider.name")
    cls.preflight(config)


class ChatAPIProvider(Provider):
    """A chat API reached through an official SDK. The subclasses (openai.py, zhipuai.py, compatible.py)
    say which one and what it can do; what differs between the APIs is a hook method here."""

    needs_key = True
    key_env = "OPENAI_API_KEY"
    base_url_env: ClassVar[str | None] = None  # where the base URL comes from when the spec gives none
    scoring_paths: ClassVar[tuple[str, ...]] = ()  # provider.scoring values it serves; empty: cannot score
    lists_checkpoints: ClassVar[bool] = False  # has a fine-tuning checkpoints endpoint
    tiktoken_labels: ClassVar[bool] = False  # its tokenizers ship with tiktoken (chat scoring checks exact tokens)

    @classmethod
    def preflight(cls, config: dict[str, Any]) -> None:
        model = config.get("model")
        if not isinstance(model, str) or not model.strip():
            raise InvalidInput(f"{cls.name} needs a model name", where="provider.model")
        key_env = config.get("api_key_env") or cls.key_env
        if not os.environ.get(key_env) and cls.needs_key:
            raise InvalidInput(f"environment variable {key_env} is not set", where="provider.api_key_env")
        if config.get("base_url") is not None:
            check_base_url(config["base_url"], "provider.base_url")
        elif (env := cls.base_url_env) and os.environ.get(env):
            check_base_url(os.environ[env], f"provider.base_url (from environment variable {env})")

    @classmethod
    def check_scoring(cls, doc: dict[str, Any], where: Callable[..., str], answers: Sequence[str] | None) -> None:
        """method: score through the API: a path it serves, and labels that path can tell apart."""
        from runner.providers.api.scoring import check_scoring

        if doc["evaluation"]["method"] != "score":
            super().check_scoring(doc, where, answers)
        else:
            check_scoring(cls, doc["provider"], where, answers)

    @classmethod
    def resolve_base_url(cls, config: dict[str, Any]) -> str | list[str] | None:
        """Spec first, then the provider's environment variable, then the SDK's default (None)."""
        return config.get("base_url") or (os.environ.get(cls.base_url_env) if cls.base_url_env else None)

    @classmethod
    def open(cls, config: dict[str, Any], cache: ResponseCache | None = None) -> ChatAPIProvider:
        return cls(config, cache)

    def __init__(self, config: dict[str, Any], cache: ResponseCache | None = None):
        self.preflight(config)
        self.model = config["model"]
        self.base_url = self.resolve_base_url(config)  # a list: a fleet of servers, cached as one
        if isinstance(self.base_url, list) and len(self.base_url) == 1:
            self.base_url = self.base_url[0]  # a fleet of one is that server, cache keys included
        urls = self.base_url if isinstance(self.base_url, list) else [self.base_url]
        self.concurrency = config.get("concurrency", 8) * len(urls)  # concurrency is per server
        # Every answer is cached as it arrives, so large calls lose nothing on a crash and keep
        # all request slots busy (a call waits for its slowest request before the next starts).
        self.chunk_size = 128 * self.concurrency
        self.max_retries = config.get("max_retries", 6)
        self._limiter = RateLimiter(config.get("requests_per_minute"))
        self._cache = cache
        self.config = config  # describe() records the scoring path
        self.scoring: str | None = config.get("scoring") or self.default_scoring
        self.prompts_per_request = int(config.get("prompts_per_request") or 1)
        self.retries = 0
        key_env = config.get("api_key_env") or self.key_env
        register(os.environ.get(key_env))  # from here on, redact() removes it from whatever a server sends back
        api_key = os.environ.get(key_env) or "not-needed"  # local servers (vLLM, Ollama) usually take any key
        self.timeout = float(config.get("timeout_s", 60))  # bounds each attempt's total time
        self._fleet: Fleet | None = None
        if isinstance(self.base_url, list):  # chat and scoring requests spread over the servers
            per_server = config.get("concurrency", 8)
            self._fleet = Fleet(urls, lambda url: self.sdk_client(api_key, url, self.timeout), per_server, self.timeout)
        # fine-tuning jobs and files go to the first server
        self._sdk = self._fleet.servers[0].sdk if self._fleet else self.sdk_client(api_key, urls[0], self.timeout)

    def sdk_client(self, api_key: str, base_url: str | None, timeout: float) -> Any:
        """The SDK client, retrying nothing itself, its HTTP bounded by transport.py."""
        import openai

        from runner.providers.api.transport import openai_http_client

        http = openai_http_client(timeout)
        return openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0, http_client=http)

    def sampling(self, temperature: float) -> dict[str, Any]:
        """The request's sampling arguments for this temperature."""
        return {"temperature": temperature}

    def describe(self) -> dict[str, Any]:
        from runner.providers.api.scoring import describe_scoring

        described = {"model": self.model, "provider": self.name, "base_url": self.base_url}
        if self._fleet:  # answers per server, counted as they come (the manifest holds this very dict)
            described["answered_by"] = self._fleet.answered
        return {**described, **describe_scoring(self.config)}

    # --- chat -------------------------------------------------------------------------------------

    def request(self, call: Callable[[], Any], stop: threading.Event | None = None, *, timed: bool = True) -> Any:
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
        kwargs.update(self.sampling(params.get("temperature", 0)))
        text, usage = parse_chat(self.send_chat(kwargs, stop))
        limit = CHARS_PER_TOKEN * (params.get("max_tokens") or DEFAULT_MAX_TOKENS) + ANSWER_SLACK_CHARS
        if len(text) > limit:
            say_once(
                f"{self.name} sent answers longer than max_tokens allows; "
                f"each is cut to {limit} characters (max_tokens {params.get('max_tokens')})"
            )
            text = text[:limit]
        return {"text": redact(text), "usage": usage}

    def send_chat(self, kwargs: dict[str, Any], stop: threading.Event | None = None) -> Any:
        """One chat-completions attempt after the rate limiter allows it; the answer's JSON as plain values."""
        self._wait_turn(stop)
        return self._route(lambda sdk: _json_answer(lambda: sdk.chat.completions.create(**kwargs)), stop)

    def send_completion(self, kwargs: dict[str, Any], stop: threading.Event | None = None) -> Any:
        """One text-completions attempt (label scoring's echo path), like send_chat."""
        self._wait_turn(stop)
        return self._route(lambda sdk: _json_answer(lambda: sdk.completions.create(**kwargs)), stop)

    def _route(self, call: Callable[[Any], Any], stop: threading.Event | None) -> Any:
        """call(sdk) on the one server, or on one of the fleet's (least outstanding requests, failover)."""
        return self._fleet.send(call, stop) if self._fleet else call(self._sdk)

    def _wait_turn(self, stop: threading.Event | None) -> None:
        self._limiter.wait(stop)
        if stop is not None and stop.is_set():
            raise Stopped

    def cached(self, requests: Sequence[dict[str, Any]]) -> list[Any]:
        """What the response cache holds for each request, in order (None where it holds nothing)."""
        found = self._cache.get_many(requests) if self._cache else {}
        return [found.get(cache_key(request)) for request in requests]

    def remember(self, request: dict[str, Any], answer: Any) -> None:
        """Hand an answer bought from the server to the response cache (committed by `parallel`)."""
        if self._cache:
            self._cache.put(request, answer)

    def parallel(self, n_jobs: int, job: Callable[[int, threading.Event], None]) -> None:
        """Run job(i, stop) for i in range(n_jobs) on `concurrency` threads; return once all are done.

        The first failure, or Ctrl-C (KeyboardInterrupt in the main thread, SIGTERM included), sets
        stop: no request starts after it (jobs pass stop to `request`/`send_chat`, which raise
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
            if self._cache:
                self._cache.flush(timeout=5)
            raise
        if self._cache:
            self._cache.flush()  # answers bought are on disk before anything else happens
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
        results: list[Completion | None] = [None] * len(conversations)
        todo = []
        for index, hit in enumerate(self.cached(requests)):
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
            answer = self.request(lambda: self._complete(conversations[index], params, stop), stop)
            self.remember(requests[index], answer)
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

        if not self.scoring_paths:
            raise InvalidInput(self.cannot_score_reason(), where="evaluation.method")
        return score(self, conversations, answers, progress)

    @classmethod
    def cannot_score_reason(cls) -> str:
        return f"{cls.name} cannot score labels; use method: generate"

    # --- fine-tuning lifecycle ---------------------------------------------------------------------

    def upload(self, path: Path) -> str:
        def send() -> str:
            with path.open("rb") as handle:
                content = handle.read()
            data = _json_answer(lambda: self._sdk.files.create(file=(path.name, content), purpose="fine-tune"))
            return _text(_object(data, "the uploaded file"), "id", "the uploaded file")

        return self.request(send, timed=False)  # a large file may take longer than timeout_s to send

    def create_job(self, training_file: str, settings: dict[str, Any]) -> Job:
        unsupported = sorted(set(settings) - self.fine_tune_settings - {"validation_file"})
        if unsupported:
            raise InvalidInput(f"{self.name} fine-tuning does not take {', '.join(unsupported)}", where="fine_tune")
        hyper = {k: settings[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier") if k in settings}
        kwargs: dict[str, Any] = {"model": self.model, "training_file": training_file}
        for key in ("suffix", "validation_file", "seed"):
            if settings.get(key) is not None:
                kwargs[key] = settings[key]
        kwargs.update(self.fine_tune_hyperparameters(hyper))
        try:
            # Not retried blindly: a create whose answer was lost may have made a job. The caller
            # looks the job up by its training file before creating again.
            with attempt_deadline(self.timeout):
                return _job(_json_answer(lambda: self._sdk.fine_tuning.jobs.create(**kwargs)))
        except Exception as error:
            if is_retryable(error):  # the caller decides: look the job up, then maybe create again
                raise Transient(redact(self._failure(error))) from None
            code = status_code(error)
            advice = self.refused_job_advice(code)
            raise RuntimeFailure(
                f"{self.name} could not create the fine-tuning job"
                f"{f' (HTTP {code})' if code else ''}: {_message(error)}.{f' {advice}' if advice else ''}"
            ) from error

    def fine_tune_hyperparameters(self, hyper: dict[str, Any]) -> dict[str, Any]:
        """How the create-job call carries the hyperparameters."""
        return {"hyperparameters": hyper} if hyper else {}

    def refused_job_advice(self, code: int | None) -> str:
        """What to do instead when the server refuses to create a job (HTTP `code`); '' for nothing."""
        return ""

    def list_jobs(self, limit: int = 100) -> list[Job]:
        def fetch() -> list[Job]:
            return [
                _job(job) for job in _page(_json_answer(lambda: self._sdk.fine_tuning.jobs.list(limit=limit)), "jobs")
            ]

        return self.request(fetch)

    def job(self, job_id: str) -> Job:
        check_id(job_id, "job id")
        return self.request(lambda: _job(_json_answer(lambda: self._sdk.fine_tuning.jobs.retrieve(job_id))))

    def events(self, job_id: str) -> list[JobEvent]:
        check_id(job_id, "job id")

        def fetch() -> list[JobEvent]:
            page = _page(_json_answer(lambda: self._sdk.fine_tuning.jobs.list_events(job_id, limit=100)), "events")
            return [_event(item) for item in page]

        return sorted(self.request(fetch), key=lambda event: (event.created_at, event.id))

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        check_id(job_id, "job id")
        if not self.lists_checkpoints:
            return []

        def fetch() -> list[Checkpoint]:
            answer = _json_answer(lambda: self._sdk.fine_tuning.jobs.checkpoints.list(job_id, limit=100))
            return [_checkpoint(item) for item in _page(answer, "checkpoints")]

        return sorted(self.request(fetch), key=lambda checkpoint: checkpoint.step)

    def cancel(self, job_id: str) -> Job:
        check_id(job_id, "job id")
        return self.request(lambda: _job(_json_answer(lambda: self._sdk.fine_tuning.jobs.cancel(job_id))))

    def delete_model(self, model: str) -> None:
        check_id(model, "model id")
        self.request(lambda: _json_answer(lambda: self._sdk.models.delete(model)))


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
    job_id = _text(record, "id", "a fine-tuning job") or ""
    if not ID_SHAPE.fullmatch(job_id):  # it is put into the next request's path: a server cannot steer that
        raise MalformedAnswer(f"a fine-tuning job's 'id' {job_id[:80]!r} is not an id")
    return Job(
        id=job_id,
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
