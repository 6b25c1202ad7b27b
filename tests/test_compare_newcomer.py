"""`specrun compare` as a newcomer reads it: whole run names in a narrow terminal, runs over different
eval sets said to be so, and spec keys a run never read not listed as differences (issue 24)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from runner.commands.compare import compare, differing_keys, render_html, render_markdown, render_terminal

ENTITY = {"entity_f1": 0.412, "entity_precision": 0.5, "entity_recall": 0.35, "macro_f1": 0.3, "invalid_rate": 0.1,
          "hallucination_rate": 0.02}  # fmt: skip


def make_run(root: Path, run_id: str, spec: dict | None = None, eval_size: int = 30, limit: int | None = 30) -> Path:
    """An extraction run folder of one spec, as the pipeline leaves it: manifest (eval size, --limit) and metrics."""
    folder = root / "weibo_ner_zh" / run_id
    folder.mkdir(parents=True)
    doc = {"name": "weibo_ner_zh", "task": "extraction", "evaluation": {"modes": ["zero_shot"]}, **(spec or {})}
    manifest = {"name": "weibo_ner_zh", "status": "succeeded", "spec": doc, "limit": limit, "data": {"eval": eval_size}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    ci = {name: [max(0.0, value - 0.05), value + 0.05] for name, value in ENTITY.items()}
    metrics = {row: {**ENTITY, "ci95": ci} for row in ("zero_shot", "zero_shot_constrained", "baseline")}
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def terminal(comparison) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=80, color_system=None).print(render_terminal(comparison))
    return buffer.getvalue()


def test_two_runs_of_one_spec_keep_their_whole_names_in_an_80_column_terminal(tmp_path):
    first, second = make_run(tmp_path, "20261203T101010Z"), make_run(tmp_path, "20261203T111111Z")
    text = terminal(compare([first, second]))
    assert "weibo_ner_zh/20261203T101010Z" in text and "weibo_ner_zh/20261203T111111Z" in text
    assert "…" not in text  # nothing cut with an ellipsis, in any table
    assert max(map(len, text.splitlines())) <= 80


def test_runs_over_different_eval_sets_are_said_to_be_so_in_every_format(tmp_path):
    limited = make_run(tmp_path, "20261203T101010Z", eval_size=30, limit=30)
    full = make_run(tmp_path, "20261203T111111Z", eval_size=1000, limit=None)
    comparison = compare([limited, full])
    warning = comparison.mixed_evaluation()
    assert warning and "30 eval examples (--limit 30)" in warning and "1000 eval examples" in warning
    assert "not evaluated on the same eval examples" in " ".join(terminal(comparison).split())
    assert warning in render_markdown(comparison)
    assert "not evaluated on the same eval examples" in render_html(comparison)
    same = compare([limited, make_run(tmp_path, "20261203T121212Z", eval_size=30, limit=30)])
    assert same.mixed_evaluation() is None
    assert "not evaluated" not in terminal(same) + render_markdown(same) + render_html(same)


def test_keys_a_run_never_read_are_no_difference(tmp_path):
    zero_shot = {"evaluation": {"modes": ["zero_shot"]}}
    few_shot = {"evaluation": {"modes": ["zero_shot", "few_shot"]}}
    docs = [
        {**zero_shot, "few_shot": {"k": 4, "strategy": "similar", "embedding": "llm"}},  # defaults, never read
        {**zero_shot, "few_shot": {"k": 8, "strategy": "similar", "embedding": "tfidf"}},
    ]
    assert differing_keys(docs) == {}
    random = [{**few_shot, "few_shot": {"k": 4, "strategy": "random", "embedding": e}} for e in ("llm", "tfidf")]
    assert differing_keys(random) == {}  # embeddings only choose shots for strategy similar
    similar = [{**few_shot, "few_shot": {"k": 4, "strategy": "similar", "embedding": e}} for e in ("llm", "tfidf")]
    assert differing_keys(similar) == {"few_shot.embedding": ["llm", "tfidf"]}
    mixed = [*similar, {**zero_shot, "few_shot": {"k": 2, "strategy": "similar", "embedding": "tfidf"}}]
    found = differing_keys(mixed)
    assert found["few_shot.embedding"] == ["llm", "tfidf", "(unused)"] and "few_shot.k" not in found
    assert found["evaluation.modes"][2] == ["zero_shot"]
    tuned = [{**zero_shot, "fine_tune": {"enabled": False, "seed": s}} for s in (1, 2)]
    assert differing_keys(tuned) == {}  # no fine-tuning: its seed was never read


def test_the_cli_compare_of_runs_that_never_used_few_shot_lists_no_few_shot_key(tmp_path):
    first = make_run(tmp_path, "20261203T101010Z", {"few_shot": {"k": 4, "strategy": "similar", "embedding": "llm"}})
    second = make_run(tmp_path, "20261203T111111Z", {"few_shot": {"k": 4, "strategy": "similar", "embedding": "tfidf"}})
    comparison = compare([first, second])
    assert comparison.differing == {}
    assert "few_shot" not in render_markdown(comparison) and "few_shot" not in terminal(comparison)
