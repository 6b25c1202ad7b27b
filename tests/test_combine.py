"""Calibration chosen per mode and the ensemble row: fitted on the validation split, applied to eval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runner.cli import main
from runner.tasks.classification.combine import (
    Calibration,
    choose_calibration,
    choose_weight,
    ensemble_scores,
    fit_bias,
)
from tests.conftest import write_project
from tests.test_api_scoring import newest, read, scoring_project
from tests.test_remote import rows


def synthetic(n: int, bias: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose true labels are drawn from softmax(logits), seen through a per-label offset `bias`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(n, len(bias)))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    gold = np.array([rng.choice(len(bias), p=p) for p in probabilities])
    return logits - bias, gold


def test_fit_bias_recovers_a_planted_offset():
    planted = np.array([3.0, -1.0, 0.0, -2.0])
    scores, gold = synthetic(4000, planted)
    fitted = fit_bias(scores, gold)
    np.testing.assert_allclose(fitted, planted - planted.mean(), atol=0.25)


def test_auto_picks_bias_for_a_skewed_model_and_the_simplest_for_a_calibrated_one():
    skewed, gold = synthetic(2000, np.array([4.0, 0.0, 0.0, 0.0]))
    chosen, found, why = choose_calibration(skewed, gold)
    assert chosen.method == "bias" and found["bias"] > found["none"] + 0.1 and why is None
    fair = np.eye(4)[gold] * 5.0  # already perfect: nothing to gain, so the simplest candidate
    chosen, found, _ = choose_calibration(fair, gold)
    assert chosen.method == "none" and found == {"none": 1.0, "mean": 1.0, "bias": 1.0}


def test_a_bias_is_not_fitted_on_too_few_lines_and_is_judged_on_held_out_folds():
    skewed, gold = synthetic(7, np.array([4.0, 0.0, 0.0, 0.0]))  # 7 lines < 2 per label × 4
    chosen, found, why = choose_calibration(skewed, gold)
    assert chosen.method in ("none", "mean") and "bias" not in found and "too few to fit a bias" in why
    chosen, found, why = choose_calibration(skewed, gold, ("bias",))  # asked for bias explicitly: mean instead
    assert chosen.method == "mean" and why
    # one validation line per label would make an in-sample bias look perfect; held-out folds do not
    noise = np.random.default_rng(3).normal(0, 1, (40, 4))
    labels = np.arange(40) % 4
    _, found, _ = choose_calibration(noise, labels)
    assert found["bias"] < 0.6


def test_a_bias_calibration_needs_its_values():
    with pytest.raises(ValueError):
        Calibration("bias")
    with pytest.raises(ValueError):
        Calibration("auto")


def test_calibrations_apply_as_documented():
    scores = np.array([[0.0, -1.0], [-2.0, -1.0]])
    np.testing.assert_allclose(Calibration("mean").apply(scores), [[1.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(Calibration("bias", (0.5, -0.5)).apply(scores), [[0.5, -1.5], [-1.5, -1.5]])
    assert Calibration("none").apply(scores) is scores


def test_ensemble_weight_follows_the_better_source():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 600)
    good = np.eye(3)[gold] * 4 + rng.normal(0, 1, (600, 3))
    noise = rng.normal(0, 1, (600, 3))
    to_proba = lambda s: np.exp(s) / np.exp(s).sum(1, keepdims=True)  # noqa: E731
    llm_good, _ = choose_weight(good, to_proba(noise), gold)
    llm_bad, _ = choose_weight(noise, to_proba(good), gold)
    assert llm_good > 0.5 > llm_bad >= 0.05  # the row always uses the LLM
    assert (ensemble_scores(good, to_proba(noise), 1.0).argmax(1) == good.argmax(1)).all()  # w = 1: the LLM alone


def test_ensemble_and_per_mode_calibration_end_to_end(api, tmp_path):
    """Scores through the loopback API; the validation split is answered too, and only it is fitted on."""
    spec = scoring_project(tmp_path, api)
    text = spec.read_text(encoding="utf-8")
    spec = write_project(
        tmp_path,
        {
            **{k: v for k, v in _spec(text).items() if k != "name"},
            "splits": {
                "train": {"take": "first", "n": 9},
                "validation": {"take": "random", "n": 6, "seed": 1},
                "eval": {"take": "rest"},
            },
            "evaluation.ensemble": True,
        },
        rows=rows(8),
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    folder = newest(tmp_path / "runs")
    manifest, metrics = read(folder, "manifest.json"), read(folder, "metrics.json")
    assert manifest["choices"]["zero_shot"]["calibration"]["chosen"] in ("none", "mean", "bias")
    assert set(manifest["choices"]["zero_shot"]["calibration"]["validation_accuracy"]) == {"none", "mean", "bias"}
    ensemble = manifest["choices"]["ensemble"]
    assert ensemble["mode"] == "zero_shot" and ensemble["validation_lines"] == 6 and 0 <= ensemble["llm_weight"] <= 1
    assert metrics["ensemble"]["accuracy"] >= 0.8  # the fake API knows most topics (zero_shot: 8 of 9)
    validation_ids = {json.loads(line)["id"] for line in (folder / "zero_shot_validation.score.jsonl").open()}
    eval_ids = {json.loads(line)["id"] for line in (folder / "zero_shot.score.jsonl").open()}
    assert len(validation_ids) == 6 and not validation_ids & eval_ids
    assert "ensemble" in (folder / "report.md").read_text(encoding="utf-8")


def _spec(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"evaluation.ensemble": True}, "evaluation.ensemble is fitted on a validation split"),
        ({"evaluation.calibration": "bias"}, "evaluation.calibration: bias is fitted on a validation split"),
        (
            {
                "evaluation.ensemble": True,
                "evaluation.method": "generate",
                "evaluation.calibration": "none",
                "splits.validation": {"take": "first", "n": 3},
            },
            "needs method: score",
        ),
    ],
)
def test_what_needs_a_validation_split_or_scores_is_a_spec_error(tmp_path, capsys, overrides, message):
    spec = write_project(tmp_path, overrides)
    assert main(["validate", str(spec)]) == 2
    assert message in capsys.readouterr().err


def test_probe_needs_the_local_model(api, tmp_path, capsys):
    spec = scoring_project(tmp_path, api)
    text = _spec(spec.read_text(encoding="utf-8"))
    text["evaluation"]["probe"] = True
    spec.write_text(json.dumps(text, ensure_ascii=False), encoding="utf-8")
    assert main(["validate", str(spec)]) == 2
    assert "evaluation.probe reads the model's hidden states" in capsys.readouterr().err


@pytest.mark.model  # the tiny gemma borrows the embedded model's tokenizer
def test_probe_and_ensemble_rows_with_a_local_model(tmp_path, tmp_path_factory):
    """A tiny random gemma: the probe reads its hidden states, the ensemble its label scores."""
    from tests.conftest import make_tiny_gemma

    model = make_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"))
    spec = write_project(
        tmp_path,
        {
            "provider": {"name": "local", "model": str(model), "batch_size": 4},
            "splits": {
                "train": {"take": "first", "n": 12},
                "validation": {"take": "random", "n": 6, "seed": 1},
                "eval": {"take": "rest"},
            },
            "evaluation.ensemble": True,
            "evaluation.probe": True,
        },
        rows=rows(8),
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    folder = newest(tmp_path / "runs")
    manifest, metrics = read(folder, "manifest.json"), read(folder, "metrics.json")
    assert {"zero_shot", "ensemble", "probe", "baseline"} <= set(metrics)
    assert manifest["choices"]["probe"]["train_lines"] == 12 and manifest["choices"]["ensemble"]["mode"] == "zero_shot"
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").open()]
    assert len(predictions) == 6 and all(
        p["probe"] in ("news_tech", "news_finance", "news_sports") for p in predictions
    )


def three_train_then(validation: int) -> dict:
    """Splits: the first 3 rows train, the next `validation` rows validation, the rest eval."""
    return {
        "train": {"take": "first", "n": 3},
        "validation": {"take": "first", "n": validation},
        "eval": {"take": "rest"},
    }


def test_dry_run_prices_the_validation_lines_that_will_be_answered(api, tmp_path, capsys):
    spec = scoring_project(tmp_path, api)
    doc = _spec(spec.read_text(encoding="utf-8"))
    doc["splits"] = three_train_then(validation=2)
    spec.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    assert main(["run", str(spec), "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert "evaluating 6 examples (with 2 validation lines calibration is fitted on)" in capsys.readouterr().err
    assert not api.completion_requests  # nothing bought


def test_one_label_in_train_gives_the_baseline_and_probe_that_label():
    from runner.tasks import Example
    from runner.tasks.classification.baseline import baseline_probabilities, probe_predictions

    train = [Example(str(i), f"股市{i}", "news_finance", {}) for i in range(3)]
    other = [Example("9", "球赛", "news_sports", {})]
    (table,) = baseline_probabilities(train, [other], ["news_sports", "news_finance"])
    assert table.tolist() == [[0.0, 1.0]]
    assert probe_predictions(np.zeros((3, 4)), ["news_finance"] * 3, np.ones((1, 4))) == ["news_finance"]


def test_explicit_bias_calibration_end_to_end(api, tmp_path):
    spec = scoring_project(tmp_path, api)
    doc = _spec(spec.read_text(encoding="utf-8"))
    doc["splits"] = three_train_then(validation=6)
    doc["evaluation"]["calibration"] = "bias"
    doc.pop("name")
    spec = write_project(tmp_path, doc, rows=rows(4))
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    chosen = read(newest(tmp_path / "runs"), "manifest.json")["choices"]["zero_shot"]["calibration"]
    assert chosen["chosen"] == "bias" and len(chosen["bias"]) == 3 and set(chosen["validation_accuracy"]) == {"bias"}


def test_an_empty_validation_split_is_an_input_error(tmp_path, capsys):
    splits = {
        "train": {"take": "first", "n": 9},  # every labelled row of data.jsonl
        "validation": {"take": "rest"},  # nothing left
        "eval": {"path": "eval.jsonl", "take": "first", "n": 2},
    }
    spec = write_project(tmp_path, {"splits": splits})
    (tmp_path / "eval.jsonl").write_text((tmp_path / "data.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["validate", str(spec)]) == 2
    assert "splits.validation holds no examples" in capsys.readouterr().err


def test_limit_caps_the_validation_split_too(tmp_path):
    from runner.config.spec import load_spec
    from runner.data.dataset import make_splits

    spec = load_spec(
        write_project(
            tmp_path,
            {
                "splits": {
                    "train": {"take": "first", "n": 2},
                    "validation": {"take": "first", "n": 4},
                    "eval": {"take": "rest"},
                }
            },
        )
    )
    splits = make_splits(spec, limit=1)
    assert (len(splits.eval), len(splits.validation)) == (1, 1)


def test_extraction_refuses_the_classification_rows(tmp_path, capsys):
    from tests.test_extraction import write_ner_project

    spec = write_ner_project(tmp_path, {"evaluation.probe": True})
    assert main(["validate", str(spec)]) == 2
    assert "evaluation.probe is a classification row" in capsys.readouterr().err
