"""Property: whatever a server answers, the CLI ends with a documented exit code and no traceback.

Hypothesis generates hostile answers (any status, any Retry-After, any content type; bodies that
are chat completions with fields of the wrong JSON type, arbitrary JSON, text or bytes) for the
chat route (`specrun run`) and the fine-tuning jobs routes (`specrun jobs …`). Every example runs
the real CLI in-process against tests/fake_api.py on 127.0.0.1 and must exit with a code in
{0, 1, 2, 3, 130} and print no traceback, nor a Python message such as "'str' object has no
attribute 'usage'". SPECRUN_HYPOTHESIS_EXAMPLES raises the example count
(default 40 per property, to stay quick on a shared 2-core machine).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli import main
from tests.fake_api import FakeAPI
from tests.test_faults_remote import hostile
from tests.test_remote import CANARY, remote_project

EXAMPLES = int(os.environ.get("SPECRUN_HYPOTHESIS_EXAMPLES", "40"))
EXIT_CODES = {0, 1, 2, 3, 130}
# What Python says when code trusted a field's type: never what a user should read.
PYTHON_MESSAGES = re.compile(
    r"object has no attribute|object is not (subscriptable|iterable|callable)|NoneType|unhashable type"
    r"|not supported between instances|list index out of range|Expecting value|\b(Key|Type|Attribute|Index)Error\b"
)
_examples = itertools.count()  # each example's own folder (tmp_path is shared by a test's examples)
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16,
)
texts = st.text(max_size=60) | st.sampled_from(["这条新闻属于科技类别。", "科技", "体育", "金融", "", " "])
messages = (
    st.fixed_dictionaries({"role": st.sampled_from(["assistant", "user", 5, None]), "content": texts | json_values})
    | json_values
)
choices = st.lists(st.fixed_dictionaries({"index": json_values, "message": messages}), max_size=2) | json_values
usages = st.fixed_dictionaries({"prompt_tokens": json_values, "completion_tokens": json_values}) | json_values
chat_answers = st.fixed_dictionaries(
    {"id": json_values, "object": st.just("chat.completion"), "choices": choices}, optional={"usage": usages}
)
job_fields = st.fixed_dictionaries(
    {"id": st.text(max_size=12) | json_values, "status": st.sampled_from(["running", "succeeded"]) | json_values},
    optional={
        "model": json_values,
        "fine_tuned_model": json_values,
        "error": json_values,
        "trained_tokens": json_values,
        "message": json_values,
        "created_at": json_values,
        "data": json_values,
        "step_number": json_values,
        "metrics": json_values,
    },
)
job_answers = job_fields | st.fixed_dictionaries({"object": st.just("list"), "data": st.lists(job_fields, max_size=3)})


def encoded(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


def bodies(shaped: st.SearchStrategy) -> st.SearchStrategy:
    return (
        shaped.map(encoded)
        | json_values.map(encoded)
        | st.binary(max_size=120)
        | st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass"))
        | st.sampled_from([b"<html><body>Bad gateway</body></html>", b'{"choices": [', b"", b"null"])
    )


retry_afters = (
    st.none()
    | st.sampled_from(
        ["999999", "-5", "nan", "inf", "0", "Fri, 01 Jan 2099 00:00:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"]
    )
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
)
answers = st.fixed_dictionaries(
    {
        "status": st.sampled_from([200, 200, 200, 200, 201, 400, 401, 404, 408, 409, 422, 429, 500, 503]),
        "content_type": st.sampled_from(["application/json", "text/html", "text/plain", "application/json"]),
        "retry_after": retry_afters,
    }
)


def serve(answer: dict[str, Any], body: bytes):
    """A route that answers every request with this status, content type, Retry-After and body."""

    def respond(handler: Any, request: Any) -> None:
        handler.send_response(answer["status"])
        handler.send_header("Content-Type", answer["content_type"])
        handler.send_header("Content-Length", str(len(body)))
        if answer["retry_after"] is not None:
            handler.send_header("Retry-After", answer["retry_after"])
        handler.end_headers()
        handler.wfile.write(body)

    return respond


@pytest.fixture
def quick_retries(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("SPECRUN_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr("runner.providers.api.retry.BACKOFF_BASE_S", 0.001)
    monkeypatch.setattr("runner.providers.api.retry.RETRY_AFTER_CAP_S", 0.01)
    return monkeypatch


def check(code: int, err: str) -> None:
    assert code in EXIT_CODES, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert not PYTHON_MESSAGES.search(err), err


@PROPERTY
@given(answer=answers, body=bodies(chat_answers), use_cache=st.booleans())
def test_any_chat_answer_ends_with_a_documented_exit_code(quick_retries, tmp_path, capfd, answer, body, use_cache):
    api = hostile(FakeAPI(api_key=CANARY).start(), chat=serve(answer, body))
    try:
        root = tmp_path / f"example-{next(_examples)}"
        root.mkdir()
        quick_retries.setenv("SPECRUN_CACHE", str(root / "cache"))
        spec = remote_project(
            root,
            api,
            n_per_label=2,
            **{"provider.max_retries": 1, "provider.concurrency": 2, "provider.timeout_s": 5},
        )
        capfd.readouterr()
        code = main(["run", str(spec), "--out", str(root / "runs"), *([] if use_cache else ["--no-cache"])])
        check(code, capfd.readouterr().err)
    finally:
        api.stop()


@PROPERTY
@given(
    answer=answers,
    body=bodies(job_answers),
    action=st.sampled_from(["list", "show", "events", "checkpoints", "cancel"]),
)
def test_any_jobs_answer_ends_with_a_documented_exit_code(quick_retries, capfd, answer, body, action):
    api = hostile(FakeAPI(api_key=CANARY).start(), jobs=serve(answer, body))
    try:
        capfd.readouterr()
        argv = ["jobs", action, *([] if action == "list" else ["ftjob-1"]), "--base-url", api.openai_url]
        check(main(argv), capfd.readouterr().err)
    finally:
        api.stop()
