"""Chat APIs through their official SDKs: OpenAI, ZhipuAI, and any OpenAI-compatible server.

The SDK clients do no retrying of their own (max_retries=0): `retry.with_retries` does it, once,
with backoff and Retry-After. Requests run concurrently on a thread pool under an optional
requests-per-minute limit, and every answer goes through the response cache.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from runner.cache import ResponseCache, cache_key
from runner.errors import InvalidInput, RuntimeFailure
from runner.providers import FINE_TUNE_SETTINGS, Checkpoint, Completion, Conversation, Job, JobEvent, Progress, Provider
from runner.providers.retry import RateLimiter, is_retryable, status_code, with_retries

DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "zhipuai": "ZHIPUAI_API_KEY", "openai_compatible": "OPENAI_API_KEY"}
DEFAULT_BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "zhipuai": "ZHIPUAI_BASE_URL"}

WINDING_DOWN = (
    "OpenAI self-serve fine-tuning is winding down (no new jobs after 2027-01-06; some organisations lost "
    "access earlier). Fine-tune the embedded model instead: set provider.name: local."
)


def resolve_base_url(config: dict[str, Any]) -> str | None:
    """Spec first, then the provider's environment variable, then the SDK's default (None)."""
    env = DEFAULT_BASE_URL_ENV.get(config["name"])
    return config.get("base_url") or (os.environ.get(env) if env else None)


class ChatAPIProvider(Provider):
    def __init__(self, config: dict[str, Any], cache: ResponseCache | None = None):
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
        self.retries = 0
        key_env = config.get("api_key_env") or DEFAULT_KEY_ENV[self.name]
        api_key = os.environ.get(key_env)
        if not api_key:
            if self.name != "openai_compatible":
                raise InvalidInput(f"environment variable {key_env} is not set", where="provider.api_key_env")
            api_key = "not-needed"  # local servers (vLLM, Ollama, llama.cpp) usually take any key
        timeout = float(config.get("timeout_s", 60))
        if self.name == "zhipuai":
            from zhipuai import ZhipuAI

            self.client = ZhipuAI(api_key=api_key, base_url=self.base_url, timeout=timeout, max_retries=0)
        else:
            import openai

            self.client = openai.OpenAI(api_key=api_key, base_url=self.base_url, timeout=timeout, max_retries=0)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "provider": self.name, "base_url": self.base_url}

    # --- chat -------------------------------------------------------------------------------------

    def _call(self, call: Callable[[], Any]) -> Any:
        def count_retry(error: BaseException, wait_s: float) -> None:
            self.retries += 1

        try:
            return with_retries(call, self.max_retries, count_retry)
        except Exception as error:
            code = status_code(error)
            raise RuntimeFailure(
                f"{self.name} request failed{f' with HTTP {code}' if code else ''}: {_message(error)}"
            ) from None

    def _complete(self, messages: Conversation, params: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": params.get("max_tokens")}
        if "top_p" in params:
            kwargs["top_p"] = params["top_p"]
        temperature = params.get("temperature", 0)
        if self.name == "zhipuai" and not temperature:
            kwargs["do_sample"] = False  # ZhipuAI's greedy decoding; it rejects temperature 0
        else:
            kwargs["temperature"] = temperature
        self.limiter.wait()
        response = self.client.chat.completions.create(**kwargs)
        usage = response.usage
        return {
            "text": response.choices[0].message.content or "",
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
            if usage
            else {},
        }

    def chat(
        self, conversations: Sequence[Conversation], params: dict[str, Any], progress: Progress | None = None
    ) -> list[Completion]:
        requests = [
            {"provider": self.name, "model": self.model, "base_url": self.base_url, "messages": m, "params": params}
            for m in conversations
        ]
        cached = self.cache.get_many(requests) if self.cache else {}
        results: list[Completion | None] = [None] * len(conversations)
        todo = []
        for index, request in enumerate(requests):
            hit = cached.get(cache_key(request))
            if hit is None:
                todo.append(index)
            else:
                results[index] = Completion(hit["text"], hit["usage"], cached=True)
        if progress and len(todo) < len(requests):
            progress(len(requests) - len(todo))
        failed = threading.Event()  # after one request fails for good, ask nothing more

        def one(index: int) -> None:
            if failed.is_set():
                return
            try:
                answer = self._call(lambda: self._complete(conversations[index], params))
            except BaseException:
                failed.set()
                raise
            if self.cache:
                self.cache.put(requests[index], answer)
            results[index] = Completion(answer["text"], answer["usage"])
            if progress:
                progress(1)

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(one, index) for index in todo]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            if self.cache:
                self.cache.flush()  # answers bought are on disk before anything else happens
            for future in done:
                future.result()  # re-raise the first failure
        return [result for result in results if result is not None]

    # --- fine-tuning lifecycle ---------------------------------------------------------------------

    def upload(self, path: Path) -> str:
        def send() -> Any:
            with path.open("rb") as handle:
                return self.client.files.create(file=(path.name, handle.read()), purpose="fine-tune")

        return self._call(send).id

    def create_job(self, training_file: str, settings: dict[str, Any]) -> Job:
        unsupported = sorted(set(settings) - FINE_TUNE_SETTINGS[self.name] - {"validation_file"})
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
            return _job(self.client.fine_tuning.jobs.create(**kwargs))
        except Exception as error:
            if is_retryable(error):
                raise  # the caller decides: look the job up, then maybe create again
            code = status_code(error)
            advice = f" {WINDING_DOWN}" if self.name == "openai" and code in (400, 403, 404) else ""
            raise RuntimeFailure(
                f"{self.name} could not create the fine-tuning job"
                f"{f' (HTTP {code})' if code else ''}: {_message(error)}.{advice}"
            ) from error

    def list_jobs(self, limit: int = 100) -> list[Job]:
        page = self._call(lambda: self.client.fine_tuning.jobs.list(limit=limit))
        return [_job(job) for job in page.data]

    def job(self, job_id: str) -> Job:
        return _job(self._call(lambda: self.client.fine_tuning.jobs.retrieve(job_id)))

    def events(self, job_id: str) -> list[JobEvent]:
        page = self._call(lambda: self.client.fine_tuning.jobs.list_events(job_id, limit=100))
        events = [
            JobEvent(
                id=event.id,
                created_at=event.created_at or 0,
                message=event.message or "",
                data=_plain(getattr(event, "data", None)),
            )
            for event in page.data
        ]
        return sorted(events, key=lambda event: (event.created_at, event.id))

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        if self.name != "openai":  # ZhipuAI has no checkpoints endpoint
            return []
        page = self._call(lambda: self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=100))
        checkpoints = [
            Checkpoint(
                id=item.id, step=item.step_number, metrics=_plain(item.metrics), model=item.fine_tuned_model_checkpoint
            )
            for item in page.data
        ]
        return sorted(checkpoints, key=lambda checkpoint: checkpoint.step)

    def cancel(self, job_id: str) -> Job:
        return _job(self._call(lambda: self.client.fine_tuning.jobs.cancel(job_id)))

    def delete_model(self, model: str) -> None:
        if self.name == "zhipuai":
            self._call(lambda: self.client.fine_tuning.models.delete(fine_tuned_model=model))
        else:
            self._call(lambda: self.client.models.delete(model))


def _plain(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return {k: v for k, v in value.model_dump().items() if v is not None}
    return dict(value)


def _job(raw: Any) -> Job:
    error = getattr(raw, "error", None)
    message = getattr(error, "message", None) if error else None
    return Job(
        id=raw.id,
        status=raw.status,
        model=raw.model,
        training_file=getattr(raw, "training_file", None),
        fine_tuned_model=raw.fine_tuned_model,
        error=message,
        trained_tokens=getattr(raw, "trained_tokens", None),
    )


def _message(error: BaseException) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(error).splitlines()[0] if str(error) else type(error).__name__
