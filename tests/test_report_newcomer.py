"""The report a newcomer reads (issue 24): an honest headline row, a results table that stays in its
card at 1280 px and on a phone, no empty chart, mistakes that say how many are shown, and cost and
token figures that agree with each other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runner.core.runfolder import RunFolder
from runner.outputs import write_outputs
from runner.outputs.markdown import render_report, verdict
from runner.tasks import make_task
from runner.tasks.classification.metrics import classification_metrics
from runner.tasks.extraction.metrics import entity_metrics
from tests.test_outputs import CHROMIUM, _manifest, _spec, needs_chromium, png_pixels, summary_of, with_ci

GOLD = ["1"] * 21 + ["0"] * 9  # a 2-class eval split: always answering "1" is right 70% of the time
LABELS = {"1": "正面", "0": "负面"}
MAJORITY = ["1"] * 30
BELOW = ["1"] * 14 + ["0"] * 7 + ["0"] * 6 + ["1"] * 3  # 20/30 = 66.7%: reads the text, still below 70%
ABOVE = ["1"] * 15 + ["0"] * 6 + ["0"] * 7 + ["1"] * 2  # 22/30 = 73.3%
BASELINE = ["1"] * 19 + ["0"] * 2 + ["0"] * 5 + ["1"] * 4  # 24/30 = 80%


def classification(rows: dict[str, list[str]], method: str = "score") -> tuple:
    spec = _spec("classification", labels=LABELS)
    spec["evaluation"].update(modes=["zero_shot"], gates=[], method=method)
    task = make_task(spec)
    metrics = {row: with_ci(classification_metrics(GOLD, p, list(LABELS)), task.metrics) for row, p in rows.items()}
    return spec, task, metrics


def test_a_row_that_always_answers_the_majority_label_is_never_the_headline(tmp_path):
    spec, task, metrics = classification({"zero_shot": BELOW, "zero_shot_uncalibrated": MAJORITY, "baseline": BASELINE})
    sentence = verdict(metrics, task)
    assert "zero_shot_uncalibrated" not in sentence and "its best row" not in sentence
    assert "no LLM row does better than always answering the most frequent label 1 (正面), which gets 70.0%" in sentence
    run = RunFolder(tmp_path / "run")
    write_outputs(run, _manifest(spec, n_eval=30), metrics, [], None, task, say=pytest.fail)
    headline = summary_of(run)["headline"]
    assert headline["row"] is None and headline["excluded"] == ["zero_shot", "zero_shot_uncalibrated"]
    assert headline["trivial"]["score"] == pytest.approx(0.7) and headline["metric"] == "accuracy"
    assert headline["rule"] in run.file("report.html").read_text(encoding="utf-8")
    metrics["baseline"]["accuracy"] = 0.7  # the baseline no better either: the verdict blames neither on the other
    assert verdict(metrics, task).startswith("**On this eval split neither the LLM nor the TF-IDF+LR baseline does")


def test_the_headline_names_the_best_row_that_beats_the_majority_rate_and_says_the_rule():
    spec, task, metrics = classification({"zero_shot": ABOVE, "zero_shot_uncalibrated": MAJORITY, "baseline": BASELINE})
    metrics["zero_shot_uncalibrated"]["accuracy"] = 0.7  # ties the majority rate: no better than it
    sentence = verdict(metrics, task)
    assert "its best row, zero_shot, gets accuracy 73.3%" in sentence
    assert "For comparison, always answering the most frequent label 1 (正面) gets 70.0% accuracy." in sentence
    report = render_report(_manifest(spec, n_eval=30), metrics, [], None, task)
    assert (
        "Headline row: the LLM row with the best accuracy among those that beat always answering the most "
        "frequent label 1 (正面), which gets 70.0% accuracy on this eval split; left out as no better: "
        "zero_shot_uncalibrated." in report
    )


def extraction(folder: Path, predicted: list[dict], n: int = 30, usage: bool = True) -> tuple[RunFolder, str]:
    """A local, generated extraction run of n examples with these predictions; (run folder, report.md)."""
    entities = {"name": "人名", "address": "地址", "company": "公司", "organization": "组织机构", "position": "职位"}
    spec = _spec(
        "extraction", entities=entities, data={"path": "ner.json", "text_fields": ["text"], "ignore_types": []}
    )
    spec["evaluation"].update(modes=["zero_shot"], method="generate", gates=[])
    spec["provider"]["model"] = "Qwen2.5-0.5B-Instruct"  # a longer name than the shipped specs' widens "what"
    task = make_task(spec)
    texts = [f"张{i:02d}在北京工作" for i in range(n)]
    gold = [[["name", 0, 3, t[:3]]] for t in texts]
    right = [{"spans": [g[0][:3]], "invalid": False, "hallucinated": [], "unknown_types": []} for g in gold]
    names = ("entity_f1", "entity_precision", "entity_recall", "macro_f1")
    metrics = {
        "zero_shot": with_ci(entity_metrics(gold, predicted, list(entities), texts), names),
        "baseline": with_ci(entity_metrics(gold, right, list(entities), texts), names),
    }
    run = RunFolder(folder)
    run.write_jsonl(
        "predictions.jsonl",
        [
            {"id": str(i), "text": t, "gold": g, "zero_shot": p}
            for i, (t, g, p) in enumerate(zip(texts, gold, predicted, strict=True))
        ],
    )
    manifest = _manifest(spec, n_eval=n)
    if usage:  # the local model counts tokens for generated answers and has no price
        manifest["usage"] = {"zero_shot": {"requests": n, "from_cache": 0, "prompt_tokens": 4200,
                                           "completion_tokens": 900, "estimated_usd": None}}  # fmt: skip
    write_outputs(run, manifest, metrics, [], None, task, say=pytest.fail)
    return run, render_report(manifest, metrics, [], None, task)


def answers(right: int, n: int = 30) -> list[dict]:
    wrong = {"spans": [["address", 0, 2]], "invalid": False, "hallucinated": [], "unknown_types": []}
    return [
        {"spans": [["name", 0, 3]], "invalid": False, "hallucinated": [], "unknown_types": []}
        if i >= n - right
        else wrong
        for i in range(n)
    ]


def test_a_chart_with_every_score_zero_says_no_entity_found_instead(tmp_path):
    run, _ = extraction(
        tmp_path / "run", [{"spans": [], "invalid": True, "hallucinated": [], "unknown_types": []}] * 30
    )
    page = run.file("report.html").read_text(encoding="utf-8")
    assert "No entity found: every precision, recall and F1 is 0." in page and "<svg" not in page
    drawn, _ = extraction(tmp_path / "drawn", answers(right=20))
    assert "<svg" in drawn.file("report.html").read_text(encoding="utf-8")


def test_mistakes_say_how_many_of_the_wrong_ones_are_shown(tmp_path):
    run, _ = extraction(tmp_path / "run", answers(right=20))
    page = run.file("report.html").read_text(encoding="utf-8")
    assert "(10 of 30 wrong)" in page and "Showing 8 of 10, the first ones in eval order." in page
    few, _ = extraction(tmp_path / "few", answers(right=27))
    assert "Shown: all 3, the first ones in eval order." in few.file("report.html").read_text(encoding="utf-8")


def test_a_local_models_cost_is_zero_in_the_usage_table_too(tmp_path):
    run, report = extraction(tmp_path / "run", answers(right=20))
    page = run.file("report.html").read_text(encoding="utf-8")
    assert "$0 (local model)" in page and "unknown" not in page
    assert "4,200 / 900" in page  # generated answers: the tokens the local model counted
    assert "| zero_shot | 30 | 0 | 4200 | 900 | $0 (local model) |" in report and "| unknown |" not in report


def test_a_local_label_scoring_run_shows_no_token_counts_it_never_made(tmp_path):
    spec, task, metrics = classification({"zero_shot": ABOVE, "baseline": BASELINE})
    run = RunFolder(tmp_path / "run")
    write_outputs(run, _manifest(spec, n_eval=30), metrics, [], None, task, say=pytest.fail)
    page = run.file("report.html").read_text(encoding="utf-8")
    assert "$0 (local model)" in page and "prompt / completion tokens" not in page and "<b>0 / 0</b>" not in page


def right_margin_is_blank(screenshot: Path, margin: int) -> bool:
    """Whether the rightmost `margin` pixels of every screenshot row are the page background (#f3f4f6):
    anything drawn there (a table, a cell's text) has spilled out of its card."""
    width, _height, channels, rows = png_pixels(screenshot)
    background = bytes((0xF3, 0xF4, 0xF6))
    return all(row[x * channels : x * channels + 3] == background for row in rows for x in range(width - margin, width))


@needs_chromium
@pytest.mark.parametrize(("width", "margin"), [(1280, 110), (390, 8)])  # the card ends 110 / 8 px from the edge
def test_the_extraction_results_table_stays_inside_its_card(tmp_path, width, margin):
    run, _ = extraction(tmp_path / "run", answers(right=20))
    screenshot = tmp_path / "page.png"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", f"--window-size={width},900",
        run.file("report.html").as_uri(),
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, timeout=120, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert screenshot.is_file()
    assert right_margin_is_blank(screenshot, margin)
