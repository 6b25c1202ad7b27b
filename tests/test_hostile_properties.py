"""Property-based hostile input (hypothesis): generated specs, data, templates and chat files through the CLI.

Each property asserts the contract of issue 8: the command returns one of the documented exit
codes (0 ok, 1 gate failed, 2 invalid input, 3 runtime failure, 130 interrupted) and never
lets an exception (a traceback) escape `runner.cli.main`. No local model is loaded: `validate`,
`check` and `run --dry-run` load none, and `run` goes to tests/fake_api.py on 127.0.0.1.
Run with `--hypothesis-show-statistics` to see how many cases each property ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runner.cli import main
from runner.core.runfolder import RunFolder
from runner.core.tokens import encoding_for_model
from runner.data.chat_checks import TokenCounter, format_errors
from tests.conftest import ROOT, ROWS, write_project
from tests.fake_api import FakeAPI

EXIT_CODES = {0, 1, 2, 3, 130}
QUICK = settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=100)


def cli(*args: str) -> int:
    """main() in-process: any exception escaping it is a traceback the user would have seen."""
    code = main(list(args))
    assert code in EXIT_CODES, code
    event(f"{args[0]} exit {code}")  # the spread of outcomes, in --hypothesis-show-statistics
    return code


# --- values a careless or hostile user writes --------------------------------------------------

TRICKY_PIECES = [
    *"ab Z9/'.\n\r\t ，。、：；！？“”科技金融体育",
    *("\u2028", "\u2029", "\u0085", "\x00", "\x1c", "\ufeff", "\ud7ff", "🙂", "{{", "}}", "{%", "%}", "'s"),
]
TRICKY_TEXT = st.lists(st.sampled_from(TRICKY_PIECES), max_size=20).map("".join) | st.text(max_size=10)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    TRICKY_TEXT,
)
JSONISH = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3), max_leaves=8
)


# --- token counts: exactness of the fast counter ------------------------------------------------


@settings(deadline=None, max_examples=400)
@given(
    text=st.lists(
        st.sampled_from(
            ["\n", "\n\n", " ", "/", "//", "。", ".", "x", "科技", "9", "'s", "\r\n", "\t", "🙂", "\u2028", "  "]
        ),
        max_size=30,
    ).map("".join)
    | TRICKY_TEXT
)
def test_token_counter_matches_encode_ordinary(text: str) -> None:
    for model in ("gpt-4o-mini", "gpt-4"):
        assert TokenCounter(model)(text) == len(encoding_for_model(model).encode_ordinary(text))


# --- specs ----------------------------------------------------------------------------------------

SPEC_KEYS = [
    "name", "task", "description", "data", "data.path", "data.format", "data.text_fields", "data.label_field",
    "data.exclude_labels", "labels", "labels.news_tech", "splits", "splits.train", "splits.train.n", "splits.train.take",
    "splits.train.seed", "splits.eval", "splits.eval.n", "splits.validation", "prompt", "prompt.template",
    "prompt.system", "provider", "provider.name", "provider.model", "provider.params", "provider.params.max_tokens",
    "provider.base_url", "checks", "checks.model", "fine_tune", "fine_tune.enabled", "few_shot", "few_shot.k",
    "evaluation", "evaluation.modes", "evaluation.method", "evaluation.gates", "evaluation.calibration", "zzz_unknown",
]  # fmt: skip


PLAUSIBLE = [
    ("splits.train.n", 2), ("splits.train.take", "random"), ("splits.train.seed", 7), ("splits.eval", {"take": "rest", "n": 2}),
    ("evaluation.gates", ["accuracy >= 0.1"]), ("evaluation.gates", ["zero_shot.macro_f1 > 0.99"]), ("prompt.system", "只回答类别"),
    ("data.exclude_labels", []), ("labels.news_tech", "技术"), ("few_shot.k", 1), ("checks.model", "gpt-4"), ("description", "x"),
    ("evaluation.calibration", "none"), ("data.text_fields", ["sentence", "sentence"]), ("name", "tiny-2"),
]  # fmt: skip


@st.composite
def spec_texts(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    """A valid spec changed a little: plausible edits (most still valid), hostile values, or both."""
    plausible = dict(draw(st.lists(st.sampled_from(PLAUSIBLE), max_size=3)))
    hostile = draw(st.just({}) | st.dictionaries(st.sampled_from(SPEC_KEYS), JSONISH, max_size=2))
    overrides = {**plausible, **hostile}
    raw_line = draw(st.none() | st.none() | TRICKY_TEXT)  # sometimes a line of junk pasted into the YAML
    return overrides, raw_line


@QUICK
@given(case=spec_texts(), dry_run=st.booleans())
def test_generated_specs_exit_cleanly(case: tuple[dict[str, Any], str | None], dry_run: bool) -> None:
    overrides, raw_line = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spec = write_project(root)
        doc = yaml.safe_load(spec.read_text(encoding="utf-8"))
        for key, value in overrides.items():
            target = doc
            *parents, last = key.split(".")
            for part in parents:
                if not isinstance(target.get(part), dict):
                    target[part] = {}
                target = target[part]
            target[last] = value
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
        if raw_line is not None:
            lines = text.split("\n")
            lines.insert(len(raw_line) % (len(lines) + 1), raw_line)
            text = "\n".join(lines)
        spec.write_text(text, encoding="utf-8", errors="surrogatepass")
        if dry_run:
            cli("run", str(spec), "--dry-run", "--out", str(root / "runs"))
        else:
            cli("validate", str(spec))


# --- data rows --------------------------------------------------------------------------------------

ROW = st.one_of(
    st.fixed_dictionaries(
        {
            "sentence": SCALARS | JSONISH,
            "label_desc": st.sampled_from(["news_tech", "news_finance", "news_sports", "news_stock", "nope"]) | SCALARS,
        }
    ),
    JSONISH,
)


@QUICK
@given(
    rows=st.lists(ROW, max_size=12),
    raw=st.just([]) | st.lists(st.binary(max_size=20), max_size=2),  # half the cases without junk bytes
    fmt=st.sampled_from(["jsonl", "json", "csv"]),
)
def test_generated_data_exits_cleanly(rows: list[Any], raw: list[bytes], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spec = write_project(root, {"data.path": f"data.{fmt}", "data.format": fmt})
        good = [row for row in ROWS]  # enough valid rows that the splits can be made
        everything = good + rows
        path = root / f"data.{fmt}"
        if fmt == "jsonl":
            body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in everything).encode(
                "utf-8", "surrogatepass"
            )
        elif fmt == "json":
            body = json.dumps(everything, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass")
        else:
            lines = ["sentence,label_desc"] + [
                f"{json.dumps(r.get('sentence'), ensure_ascii=False)},{r.get('label_desc')}"
                if isinstance(r, dict)
                else str(r)
                for r in everything
            ]
            body = "\n".join(lines).encode("utf-8", "surrogatepass")
        path.write_bytes(body + b"".join(b"\n" + chunk for chunk in raw))
        cli("validate", str(spec))


# --- templates ---------------------------------------------------------------------------------------

EXPRESSIONS = st.sampled_from(
    [
        "text", "labels", "record", "examples", "record.sentence", "labels[0]", "labels[99]", "text[5:]", "1 / 0",
        "10 ** 10 ** 10", "'x' * 10 ** 9", "range(10 ** 9)", "range(3) | list", "text | upper", "text | nosuch",
        "labels | join('、')", "text | center(10 ** 8)", "'%9999999d' % 1", "'{:>99999999}'.format(1)", "text()",
        "record.missing", "1 + 'a'", "[1] * 10 ** 8", "text ~ text", "text | length", "lipsum(10 ** 6)",
        "cycler", "namespace", "self", "joiner()", "dict(a=1)", "text.__class__", "none", "(1, 2)[5]",
    ]
)  # fmt: skip
STATEMENTS = st.sampled_from(
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{% include 'x.jinja' %}",
        "{% extends 'base' %}",
        "{% import 'm' as m %}",
        "{% for x in text %}{{ x }}{% endfor %}",
        "{% if text %}yes{% else %}no{% endif %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% raw %}{{ text }}{% endraw %}",
        "{% for %}",
        "{{",
        "}}",
        "{# comment",
        "{% endfor %}",
    ]
)


@st.composite
def templates(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(TRICKY_TEXT, EXPRESSIONS.map(lambda e: "{{ " + e + " }}"), STATEMENTS), max_size=5))
    return "".join(parts)


@QUICK
@given(template=templates(), in_system=st.booleans())
def test_generated_templates_exit_cleanly(template: str, in_system: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spec = write_project(root, {"prompt.system": template} if in_system else None)
        if not in_system:
            (root / "prompt.jinja").write_text(template, encoding="utf-8", errors="surrogatepass")
        started = time.perf_counter()
        cli("validate", str(spec))
        assert time.perf_counter() - started < 30  # no template may hang validation


# --- chat files for `specrun check` -------------------------------------------------------------------

MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "robot"]) | SCALARS, "content": TRICKY_TEXT | SCALARS},
        optional={"name": TRICKY_TEXT, "weight": SCALARS, "extra": SCALARS},
    ),
    JSONISH,
)
EXAMPLE = st.one_of(st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=4)}), JSONISH)
WELL_FORMED = st.builds(
    lambda question, answer: {
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    },
    TRICKY_TEXT.filter(bool),
    TRICKY_TEXT.filter(bool),
)  # tricky text in a valid shape: U+2028, "/", newlines, BOMs must not change the counts or the verdict


@QUICK
@given(
    examples=st.lists(WELL_FORMED, max_size=10) | st.lists(EXAMPLE, max_size=10),
    junk=st.just([]) | st.lists(st.binary(max_size=30), max_size=2),
    name=st.sampled_from(["t.jsonl", "T.JSONL", "t.json", "t.txt", "t"]),
)
def test_generated_chat_files_exit_cleanly(examples: list[Any], junk: list[bytes], name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        body = "".join(json.dumps(example, ensure_ascii=False) + "\n" for example in examples).encode(
            "utf-8", "surrogatepass"
        )
        path.write_bytes(body + b"\n".join(junk))
        code = cli("check", str(path))
        assert code in (0, 2)
        blank_junk = not any(chunk.strip() for chunk in junk)
        if not examples and blank_junk:
            assert code == 2  # an empty file never passes
        if examples and blank_junk and all(format_errors(example) == [] for example in examples):
            assert code == 0  # well-formed examples pass, whatever separators their strings hold


# --- torn appends in the run folder ------------------------------------------------------------------


@settings(deadline=None, max_examples=150)
@given(
    rows=st.lists(st.fixed_dictionaries({"id": TRICKY_TEXT, "text": TRICKY_TEXT}), min_size=1, max_size=8),
    cut=st.integers(min_value=0, max_value=10**6),
    more=st.lists(st.fixed_dictionaries({"id": TRICKY_TEXT}), min_size=1, max_size=3),
)
def test_a_torn_append_loses_only_the_torn_row(rows: list[dict], cut: int, more: list[dict]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        run, _ = RunFolder.open(Path(folder), "tiny", {"spec_hash": "p"})
        run.append_jsonl("out.jsonl", rows)
        path = run.file("out.jsonl")
        data = path.read_bytes()
        cut %= len(data) + 1
        path.write_bytes(data[:cut])  # what a kill in the middle of the write leaves
        complete = data[:cut].count(b"\n")
        whole_tail = (
            cut < len(data)
            and data[:cut].rsplit(b"\n", 1)[-1] == json.dumps(rows[complete], ensure_ascii=False).encode()
        )
        kept = run.read_jsonl("out.jsonl")
        assert kept[:complete] == rows[:complete]
        assert len(kept) in (complete, complete + 1)
        run.append_jsonl("out.jsonl", more)
        expected = rows[: complete + (1 if whole_tail else 0)] + more
        assert run.read_jsonl("out.jsonl") == expected
        run.close()


# --- against the fake OpenAI-compatible server ---------------------------------------------------------

KEY = "sk-hostile-test-key"


@pytest.fixture(scope="module")
def api():
    os.environ["OPENAI_API_KEY_HOSTILE"] = KEY
    server = FakeAPI(api_key=KEY).start()
    yield server
    server.stop()
    os.environ.pop("OPENAI_API_KEY_HOSTILE", None)


def remote_spec(root: Path, api: FakeAPI, n_per_label: int = 3, **overrides: Any) -> Path:
    rows = [
        {"sentence": f"{text}（{i}）", "label_desc": label}
        for i in range(n_per_label)
        for label, text in (
            ("news_tech", "苹果发布新款手机芯片"),
            ("news_finance", "股市今日大涨"),
            ("news_sports", "国足两球小胜对手"),
        )
    ]
    provider = {
        "name": "openai_compatible",
        "model": "gpt-4o-mini",
        "base_url": api.openai_url,
        "api_key_env": "OPENAI_API_KEY_HOSTILE",
        "timeout_s": 5,
        "concurrency": 2,
    }
    spec = {
        "provider": provider,
        "evaluation.method": "generate",
        "evaluation.calibration": "none",
        "evaluation.baseline": False,
        **overrides,
    }
    return write_project(root, spec, rows=rows)


@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=20)
@given(
    gates=st.lists(
        st.sampled_from(["accuracy >= 0.5", "accuracy > 2", "macro_f1 >= nan", "invalid_rate <= 1", "accuracy >="])
        | TRICKY_TEXT,
        max_size=2,
    ),
    max_tokens=st.sampled_from([1, 8, 64]) | st.integers(min_value=-5, max_value=10**9),
    temperature=st.sampled_from([0, 0.7, 1.5]) | SCALARS,
)
def test_generated_remote_runs_exit_cleanly(api: FakeAPI, gates: list[str], max_tokens: int, temperature: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spec = remote_spec(
            root,
            api,
            **{"evaluation.gates": gates, "provider.params": {"max_tokens": max_tokens, "temperature": temperature}},
        )
        os.environ["SPECRUN_CACHE"] = str(root / "cache")
        try:
            cli("run", str(spec), "--out", str(root / "runs"))
        finally:
            os.environ.pop("SPECRUN_CACHE", None)


# --- processes: a second run of the same spec, and a kill in the middle of a run -----------------------


KILLABLE = """
import sys
from runner.providers.api import client as remote
init = remote.ChatAPIProvider.__init__
def small_chunks(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.chunk_size = 3  # answers reach the run folder three at a time: a kill lands between appends
remote.ChatAPIProvider.__init__ = small_chunks
from runner.cli import main
sys.exit(main(sys.argv[1:]))
"""


def specrun(spec: Path, out: Path, cache: Path, small_chunks: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENAI_API_KEY_HOSTILE": KEY, "SPECRUN_CACHE": str(cache)}
    command = ["-c", KILLABLE] if small_chunks else ["-m", "runner"]
    return subprocess.Popen(
        [sys.executable, *command, "run", str(spec), "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_two_processes_one_spec_the_second_fails_naming_the_first(api, tmp_path):
    spec = remote_spec(tmp_path, api, n_per_label=10)
    out, cache = tmp_path / "runs", tmp_path / "cache"
    api.chat_requests.clear()
    api.delay = 2.0  # the first run takes ~8 s: long enough for the second to start (slowly, under load) and meet it
    try:
        first = specrun(spec, out, cache)
        wait_for(lambda: len(api.chat_requests) >= 2)
        second = specrun(spec, out, cache)
        second_output, _ = second.communicate(timeout=120)
        first_output, _ = first.communicate(timeout=120)
    finally:
        api.delay = 0
    assert second.returncode == 3, second_output
    assert f"pid {first.pid}" in second_output and "Traceback" not in second_output
    assert first.returncode == 0, first_output
    asked = [request["messages"][-1]["content"] for request in api.chat_requests]
    assert len(asked) == len(set(asked)) == 27  # every answer bought once
    assert len(list((out / "tiny").iterdir())) == 1


def test_a_run_killed_mid_write_resumes_and_loses_nothing_before_the_torn_line(api, tmp_path):
    spec = remote_spec(tmp_path, api, n_per_label=10)
    out, cache = tmp_path / "runs", tmp_path / "cache"
    api.chat_requests.clear()
    api.delay = 0.05
    try:
        process = specrun(spec, out, cache, small_chunks=True)
        wait_for(lambda: (out / "tiny").is_dir() and any((out / "tiny").iterdir()))
        (folder,) = (out / "tiny").iterdir()
        raw = folder / "zero_shot.generate.jsonl"
        wait_for(lambda: raw.is_file() and raw.read_bytes().count(b"\n") >= 6)
        process.send_signal(signal.SIGKILL)
        process.communicate()
    finally:
        api.delay = 0
    kept = [json.loads(line) for line in raw.read_text(encoding="utf-8").split("\n") if line.strip()]
    with raw.open("ab") as handle:  # what a kill in the middle of the append leaves behind
        handle.write(b'{"id": "L99", "text": "\xe8\xbf')
    before = len(api.chat_requests)
    assert main(["run", str(spec), "--out", str(out), "--no-cache"]) == 0
    asked_again = [request["messages"][-1]["content"] for request in api.chat_requests[before:]]
    assert 6 <= len(kept) < 27
    data = (tmp_path / "data.jsonl").read_text(encoding="utf-8").split("\n")
    kept_texts = {json.loads(data[int(row["id"][1:]) - 1])["sentence"] for row in kept}
    assert not any(text in prompt for text in kept_texts for prompt in asked_again)  # nothing kept was bought again
    assert len(set(asked_again)) == 27 - len(kept)
    assert len(asked_again) <= 27 - len(kept) + 2  # the killed run's requests in flight may arrive late
    rows = [json.loads(line) for line in raw.read_text(encoding="utf-8").split("\n") if line]
    assert sorted(row["id"] for row in rows) == sorted({row["id"] for row in rows})  # no duplicates
    assert len(rows) == 27
    assert json.loads((folder / "metrics.json").read_text())["zero_shot"]["n"] == 27
