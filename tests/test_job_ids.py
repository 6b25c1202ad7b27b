"""Issue 21 class 7: ids never reach a request path (or a folder) as anything but the resource meant.

`specrun jobs delete-model ../../files/<id> --provider zhipuai` once sent DELETE /v1/files/<id>. Every id a
user or a server hands us is checked against the id shape before any request; these tests run every jobs
action against every provider on the loopback fake API and read the raw paths the server received.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli import main
from runner.core.errors import InvalidInput, RuntimeFailure
from runner.providers import ID_SHAPE, check_id

HOSTILE_IDS = [
    "../../files/file-0001",
    "..",
    ".",
    "%2e%2e/files/x",
    "%2e%2e",
    "ftjob-1?x=1",
    "ftjob-1#frag",
    "ftjob 1",
    "ftjob-1/cancel",
    "ftjob-１",  # full-width digit
    "ftjob-\u200b1",
    "\u202eftjob",
    "ftjob-1\n",
    "a" * 10_000,
    "_ftjob",
    "-rf",
    "ftjob-1\\..\\x",
]
ACTIONS = ["show", "events", "checkpoints", "cancel", "delete-model"]
REMOTE = ["openai", "zhipuai", "openai_compatible"]


def _cli(argv: list[str]) -> int:
    """main's exit code; argparse's own refusal (an id starting with '-' reads as a flag) is exit 2 too."""
    try:
        return main(argv)
    except SystemExit as error:
        return int(error.code or 0)


def _base(api, provider: str) -> list[str]:
    return ["--provider", provider, "--base-url", api.zhipuai_url if provider == "zhipuai" else api.openai_url]


@pytest.mark.parametrize("provider", REMOTE)
@pytest.mark.parametrize("action", ACTIONS)
def test_a_hostile_id_is_exit_2_naming_it_and_sends_nothing(api, provider, action, capsys):
    for hostile in HOSTILE_IDS:
        assert _cli(["jobs", action, hostile, *_base(api, provider)]) == 2, hostile
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if not hostile.startswith("-"):  # else argparse says "unrecognized arguments: -rf"
            assert "is not an id" in err and ("job id" if action != "delete-model" else "model id") in err
    assert api.raw_paths == []


def test_an_empty_id_is_exit_2(api, capsys):
    assert main(["jobs", "show", "", *_base(api, "openai")]) == 2
    assert "needs an id" in capsys.readouterr().err
    assert api.raw_paths == []


@pytest.mark.parametrize("provider", REMOTE)
def test_the_client_itself_refuses_hostile_ids(api, provider):
    """The check lives where the path is built, not only in the command: the fine-tune stage calls these too."""
    from runner.providers.registry import provider_class

    base_url = api.zhipuai_url if provider == "zhipuai" else api.openai_url
    client = provider_class(provider).open_jobs({"name": provider, "model": "-", "base_url": base_url})
    for hostile in HOSTILE_IDS:
        for call in (client.job, client.events, client.checkpoints, client.cancel, client.delete_model):
            with pytest.raises(InvalidInput, match="is not an id"):
                call(hostile)
    assert api.raw_paths == []


@pytest.mark.parametrize("provider", REMOTE)
def test_real_id_shapes_go_through_to_their_own_path(api, provider):
    job = api.create_job({"model": "gpt-4o-mini", "training_file": "file-x"}, zhipu=provider == "zhipuai")
    base = _base(api, provider)
    assert main(["jobs", "show", job["id"], *base]) == 0
    model = "ft:gpt-4o-mini-2024-07-18:my-org:custom_suffix:9abel2We"
    assert main(["jobs", "delete-model", model, *base]) == 0
    prefix = "/api/paas/v4" if provider == "zhipuai" else "/v1"
    model_path = "/fine_tuning/fine_tuned_models/" if provider == "zhipuai" else "/models/"
    assert api.raw_paths[0] == ("GET", f"{prefix}/fine_tuning/jobs/{job['id']}")
    method, path = api.raw_paths[1]
    assert method == "DELETE" and path in (f"{prefix}{model_path}{model}", f"{prefix}{model_path}{quote(model)}")


def test_a_server_handing_out_a_path_as_job_id_is_a_malformed_answer(api, capsys):
    """A job id from the server is put into the next request's path: a hostile id there is exit 3."""
    job = api.create_job({"model": "gpt-4o-mini", "training_file": "file-x"}, zhipu=False)
    job["id"] = "../../files/file-0001"
    assert main(["jobs", "list", *_base(api, "openai")]) == 3
    err = capsys.readouterr().err
    assert "is not an id" in err and "Traceback" not in err


@pytest.mark.parametrize("action", ["show", "events", "checkpoints", "cancel"])
def test_local_store_ids(api, tmp_path, action, capsys):
    for hostile in HOSTILE_IDS:
        assert _cli(["jobs", action, hostile, "--provider", "local"]) == 2
        assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "files").exists()


def test_local_store_refuses_a_training_file_path(tmp_path):
    from runner.providers.local.store import LocalRegistry

    store = LocalRegistry(tmp_path / "registry")
    with pytest.raises(InvalidInput, match="training file id"):
        store.create_job("../../../etc/passwd", "base", {})


@settings(deadline=None, max_examples=150, suppress_health_check=list(HealthCheck))
@given(st.text(min_size=0, max_size=300))
def test_any_text_is_an_id_or_refused(value):
    try:
        assert check_id(value) == value
    except InvalidInput as error:
        assert "\n" not in str(error) and len(str(error)) < 300
        return
    assert "/" not in value and "%" not in value and "?" not in value and "#" not in value
    assert value not in (".", "..") and quote(value, safe=":") == value


@settings(deadline=None, max_examples=40, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.sampled_from(HOSTILE_IDS), st.text(max_size=40), st.from_regex(ID_SHAPE, fullmatch=True)))
def test_any_id_reaches_the_server_only_as_its_own_path(value):
    """Either exit 2 naming the id with nothing sent, or one request for exactly that job."""
    from tests.fake_api import FakeAPI

    api = FakeAPI(api_key="sk-x").start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OPENAI_API_KEY", "sk-x")
            code = _cli(["jobs", "show", value, "--base-url", api.openai_url])
        if code == 2:
            assert api.raw_paths == []
        else:
            assert ID_SHAPE.fullmatch(value)
            assert api.raw_paths and all(path == ("GET", f"/v1/fine_tuning/jobs/{value}") for path in api.raw_paths)
    except RuntimeFailure:
        raise
    finally:
        api.stop()
