"""Bootstrap intervals (runner/core/stats.py), the tasks' per-example statistics, and gates that use them."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from rich.console import Console

from runner.cli import main
from runner.config.spec import Gate, load_spec
from runner.core import stats
from runner.core.errors import InvalidInput
from runner.outputs.markdown import describe_gate
from runner.pipeline import run_spec
from runner.pipeline.gates import check_gates
from runner.tasks import Example, make_task
from runner.tasks.extraction.answer import Entity
from tests.conftest import write_project
from tests.test_extraction import write_ner_project


def accuracy(totals: np.ndarray) -> dict[str, np.ndarray]:
    """A one-metric aggregate over [n, correct] stats."""
    return {"accuracy": totals[..., 1] / totals[..., 0]}


def correct_stats(correct: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(correct)), correct])


# Per-example statistics: aggregating all of them is exactly the task's score


def classification_case(tmp_path, seed: int, n: int = 200):
    task = make_task(load_spec(write_project(tmp_path)).doc)
    labels = list(task.labels)
    rng = np.random.default_rng(seed)
    examples = [Example(str(i), "t", labels[rng.integers(len(labels))], {}) for i in range(n)]
    choices = [*labels, None]  # None: an invalid answer
    predicted = [e.gold if rng.random() < 0.5 else choices[rng.integers(len(choices))] for e in examples]
    return task, examples, predicted


def extraction_case(tmp_path, seed: int, n: int = 120):
    task = make_task(load_spec(write_ner_project(tmp_path)).doc)
    types = list(task.types)
    rng = np.random.default_rng(seed)
    examples, predicted = [], []
    for i in range(n):
        # the last type is never gold, only guessed: macro-F1 must leave it out, as entity_metrics does
        gold = tuple(
            sorted({Entity(s, s + 2, types[rng.integers(len(types) - 1)], "xx") for s in rng.integers(0, 8, 2)})
        )
        spans = [[e.type, e.start, e.end] for e in gold if rng.random() < 0.6]
        spans += [[types[rng.integers(len(types))], int(s), int(s) + 1] for s in rng.integers(0, 8, rng.integers(0, 2))]
        invalid = rng.random() < 0.1
        predicted.append({
            "spans": [] if invalid else spans, "invalid": bool(invalid),
            "hallucinated": ["某"] * int(rng.integers(0, 2)), "unknown_types": [], "n_strings": len(spans) + 1,
        })  # fmt: skip
        examples.append(Example(str(i), "x" * 10, gold, {}))
    return task, examples, predicted


@pytest.mark.parametrize("case", [classification_case, extraction_case])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregating_every_example_gives_the_tasks_score(tmp_path, case, seed):
    task, examples, predicted = case(tmp_path, seed)
    example_stats = task.example_stats(examples, predicted)
    assert example_stats.shape[0] == len(examples)
    scored = task.score(examples, predicted)
    aggregated = task.aggregate(example_stats.sum(axis=0))
    for metric in task.metrics:
        assert aggregated[metric] == pytest.approx(scored[metric], abs=1e-12), metric


def test_aggregate_of_a_batch_of_totals_is_one_value_per_total(tmp_path):
    task, examples, predicted = classification_case(tmp_path, 3)
    example_stats = task.example_stats(examples, predicted)
    totals = np.stack([example_stats[:50].sum(axis=0), example_stats.sum(axis=0)])
    batch = task.aggregate(totals)
    assert batch["accuracy"].shape == (2,)
    assert batch["macro_f1"][1] == pytest.approx(task.score(examples, predicted)["macro_f1"])
    assert batch["accuracy"][0] == pytest.approx(task.score(examples[:50], predicted[:50])["accuracy"])


# Intervals


def test_intervals_are_reproducible_with_a_seed_and_change_with_another():
    example_stats = correct_stats(np.random.default_rng(7).random(300) < 0.4)
    first = stats.ci95(example_stats, accuracy, ("accuracy",), seed=11)
    assert first == stats.ci95(example_stats, accuracy, ("accuracy",), seed=11)
    assert first != stats.ci95(example_stats, accuracy, ("accuracy",), seed=12)
    low, high = first["accuracy"]
    assert low < example_stats[:, 1].mean() < high


def test_resamples_are_the_same_indices_whatever_the_row():
    drawn = np.concatenate(list(stats.multiplicities(40, resamples=250, seed=3)))
    again = np.concatenate(list(stats.multiplicities(40, resamples=250, seed=3)))
    assert drawn.shape == (250, 40) and (drawn.sum(axis=1) == 40).all()
    assert (drawn == again).all()


def test_the_95_interval_covers_the_true_accuracy_in_most_synthetic_datasets():
    """200 datasets of 150 examples each with true accuracy 0.7: a 95% interval should miss it ~5% of the time."""
    rng = np.random.default_rng(2026)
    covered = 0
    trials = 200
    for trial in range(trials):
        example_stats = correct_stats(rng.random(150) < 0.7)
        low, high = stats.ci95(example_stats, accuracy, ("accuracy",), resamples=400, seed=trial)["accuracy"]
        covered += low <= 0.7 <= high
    assert 0.9 * trials <= covered <= trials - 1  # covers it nearly always, but it is an interval, not a certainty


def test_the_interval_narrows_with_more_examples():
    rng = np.random.default_rng(5)
    widths = []
    for n in (50, 2000):
        low, high = stats.ci95(correct_stats(rng.random(n) < 0.5), accuracy, ("accuracy",))["accuracy"]
        widths.append(high - low)
    assert widths[1] < widths[0] / 3


def test_no_examples_no_interval():
    assert stats.ci95(np.zeros((0, 2)), accuracy, ("accuracy",)) == {}


# Paired differences


def test_paired_difference_is_tighter_than_unpaired_rows_would_suggest():
    """Two rows that agree on most examples: the paired interval of their difference is narrow and above 0."""
    rng = np.random.default_rng(1)
    base = rng.random(400) < 0.5
    better = base | (rng.random(400) < 0.1)  # right everywhere base is, and on ~5% more
    diffs = stats.paired_difference(correct_stats(better), correct_stats(base), accuracy, "accuracy")
    low, high = stats.interval(diffs)
    assert 0 < low < high < 0.12
    assert stats.holds(diffs, ">", 0.95) and not stats.holds(diffs, "<", 0.95)


def test_a_difference_inside_the_noise_does_not_hold():
    rng = np.random.default_rng(4)
    one, other = rng.random(100) < 0.5, rng.random(100) < 0.52
    diffs = stats.paired_difference(correct_stats(other), correct_stats(one), accuracy, "accuracy")
    low, high = stats.interval(diffs)
    assert low < 0 < high
    assert not stats.holds(diffs, ">", 0.95) and not stats.holds(diffs, "<", 0.95)


def test_paired_rows_must_cover_the_same_examples():
    with pytest.raises(ValueError, match="same examples"):
        stats.paired_difference(correct_stats(np.ones(5)), correct_stats(np.ones(6)), accuracy, "accuracy")


# Gates over a run: syntax, paired bootstrap, --against


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("accuracy >= 0.4", (None, "accuracy", ">=", 0.4, 0.0, None, False)),
        ("fine_tuned.accuracy > zero_shot.accuracy (95%)", ("fine_tuned", "accuracy", ">", ("zero_shot", "accuracy"), 0.0, 0.95, False)),
        ("accuracy > baseline.accuracy + 0.02 ( 99.5 % )", (None, "accuracy", ">", ("baseline", "accuracy"), 0.02, 0.995, False)),
        ("accuracy >= against.accuracy - 0.01", (None, "accuracy", ">=", (None, "accuracy"), -0.01, None, True)),
        ("zero_shot.macro_f1>=against.baseline.macro_f1-1e-3", ("zero_shot", "macro_f1", ">=", ("baseline", "macro_f1"), -0.001, None, True)),
        ("accuracy >= 1e-3", (None, "accuracy", ">=", 0.001, 0.0, None, False)),
        ("invalid_rate <= -0", (None, "invalid_rate", "<=", 0.0, 0.0, None, False)),  # a sign reads; -0.5 is out of range
    ],
)  # fmt: skip
def test_gate_syntax(text, parsed):
    gate = Gate.parse(text, "spec.yaml:1", ("accuracy", "macro_f1", "invalid_rate"))
    assert (gate.row, gate.metric, gate.op, gate.threshold, gate.offset, gate.confidence, gate.against) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accuracy > baseline.accuracy (100%)", "from 50 to 99.9"),
        ("accuracy > baseline.accuracy (40%)", "from 50 to 99.9"),
        ("accuracy > baseline.accuracy (lots%)", "from 50 to 99.9"),
        ("accuracy == baseline.accuracy (95%)", "not =="),
        ("accuracy >= 0.4 + 0.1", "one number"),
        ("against.accuracy >= 0.4", "right-hand side"),
        ("accuracy >= baseline.accuracy * 2", "cannot read gate"),
        ("accuracy >= inf", "finite"),
    ],
)
def test_bad_gates_are_one_line_naming_the_gate(text, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        Gate.parse(text, "spec.yaml:7: evaluation.gates[0]", ("accuracy", "macro_f1"))
    assert "\n" not in str(caught.value) and "spec.yaml:7" in str(caught.value)


def test_new_gate_syntax_passes_the_schema(tmp_path):
    gates = ["accuracy > baseline.accuracy + 0.02 (95%)", "accuracy >= against.accuracy - 0.01"]
    spec = load_spec(write_project(tmp_path, {"evaluation.gates": gates}))
    assert [g.against for g in spec.gates] == [False, True]


class Rows:
    """A synthetic classification run: rows whose correctness per example is chosen, scored through the task."""

    def __init__(self, tmp_path, gates: list[str], n: int = 300):
        self.spec = load_spec(write_project(tmp_path, {"evaluation.gates": gates}))
        self.task = make_task(self.spec.doc)
        labels = list(self.task.labels)
        self.examples = [Example(str(i), "t", labels[i % len(labels)], {}) for i in range(n)]
        self.predicted: dict[str, list] = {}

    def add(self, row: str, correct: np.ndarray) -> None:
        labels = list(self.task.labels)
        self.predicted[row] = [
            e.gold if ok else labels[(labels.index(e.gold) + 1) % len(labels)]
            for e, ok in zip(self.examples, correct, strict=True)
        ]

    def gates(self, against=None) -> list[dict]:
        metrics, example_stats = {}, {}
        for row, predicted in self.predicted.items():
            example_stats[row] = self.task.example_stats(self.examples, predicted)
            metrics[row] = self.task.score(self.examples, predicted)
            metrics[row]["ci95"] = stats.ci95(example_stats[row], self.task.aggregate, self.task.metrics)
        return check_gates(self.spec, metrics, example_stats, self.task, self.examples, against)


def test_a_paired_gate_passes_on_a_real_difference_and_fails_on_noise(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.random(300) < 0.5
    run = Rows(tmp_path, ["accuracy > baseline.accuracy (95%)", "baseline_all_data.accuracy > baseline.accuracy (95%)"])
    run.add("zero_shot", base | (rng.random(300) < 0.3))  # clearly better than baseline
    run.add("baseline", base)
    shuffled = base.copy()  # 12 more right, 10 fewer: better on the point value by 2 examples in 300
    shuffled[np.flatnonzero(base)[:10]] = False
    shuffled[np.flatnonzero(~base)[:12]] = True
    run.add("baseline_all_data", shuffled)
    real, noise = run.gates()
    assert real["passed"] and real["confidence"] == 0.95 and real["difference_ci95"][0] > 0
    assert noise["left"] > noise["right"] and noise["difference"] == pytest.approx(2 / 300)
    assert noise["difference_ci95"][0] < 0 < noise["difference_ci95"][1]
    assert not noise["passed"] and "does not hold at 95% confidence" in describe_gate(noise)
    assert "within_noise" not in noise  # a (95%) gate's verdict already accounts for the noise


def test_a_plain_gate_that_passes_on_noise_says_so(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.random(200) < 0.5
    run = Rows(tmp_path, ["accuracy > baseline.accuracy", "accuracy > baseline.accuracy - 0.3"], n=200)
    flipped = base.copy()
    flipped[np.flatnonzero(~base)[:3]] = True  # three more right: better on the point value, not beyond noise
    run.add("zero_shot", flipped)
    run.add("baseline", base)
    noisy, clear = run.gates()
    assert noisy["passed"] and noisy["within_noise"] is True
    low, high = noisy["difference_ci95"]
    assert low <= 0 <= high
    assert "passed, but the difference (+0.0150) is inside the noise" in describe_gate(noisy)
    assert clear["passed"] and clear["within_noise"] is False
    assert clear["right"] == pytest.approx(clear["left"] - 0.015 - 0.3)


def test_a_number_gate_inside_the_rows_interval_is_within_noise(tmp_path):
    run = Rows(tmp_path, ["accuracy >= 0.49", "accuracy >= 0.2", "accuracy >= 0.49 (95%)"], n=200)
    run.add("zero_shot", np.arange(200) % 2 == 0)  # accuracy 0.5
    noisy, clear, sure = run.gates()
    assert noisy["passed"] and noisy["within_noise"] is True
    assert clear["passed"] and clear["within_noise"] is False
    assert not sure["passed"] and sure["confidence"] == 0.95


@pytest.fixture
def keyword_model(monkeypatch):
    from tests.test_pipeline import KeywordProvider

    KeywordProvider.calls, KeywordProvider.crash_after = [], None
    monkeypatch.setattr("runner.providers.registry.open_provider", lambda config, cache=None: KeywordProvider())
    return KeywordProvider


def project(root, gates: list[str] | None = None):
    root.mkdir(parents=True, exist_ok=True)
    return write_project(root, {"evaluation.gates": gates or [], "evaluation.calibration": "none"})


def only_run(out):
    (folder,) = [p for p in (out / "tiny").iterdir() if p.is_dir()]
    return folder


def test_a_run_stores_and_shows_an_interval_for_every_metric(tmp_path, keyword_model):
    spec = project(tmp_path, ["accuracy > baseline.accuracy - 0.5"])
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 0
    folder = only_run(tmp_path / "runs")
    metrics = json.loads((folder / "metrics.json").read_text())
    task = make_task(load_spec(spec).doc)
    for row, found in metrics.items():
        assert set(found["ci95"]) == set(task.metrics), row
        for metric, (low, high) in found["ci95"].items():
            assert low <= found[metric] <= high, (row, metric)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["bootstrap"] == stats.bootstrap_settings()
    report = (folder / "report.md").read_text()
    low, high = metrics["zero_shot"]["ci95"]["accuracy"]
    assert f"{100 * metrics['zero_shot']['accuracy']:.1f}% ({100 * low:.1f}–{100 * high:.1f})" in report
    assert "95% percentile bootstrap intervals" in report and "difference +" in report


def worse_than(model):
    """The model's scores turned upside down: a regression."""
    original = model.score

    def worse(self, conversations, answers, progress=None):
        return -original(self, conversations, answers, progress)

    return worse


def run(spec, out, against=None):
    return run_spec(load_spec(spec), out_dir=out, console=Console(file=io.StringIO()), against=against)


def test_against_gate_fails_with_exit_1_on_a_worse_run_and_passes_on_the_same(tmp_path, keyword_model, monkeypatch):
    assert main(["run", str(project(tmp_path / "a")), "--out", str(tmp_path / "accepted")]) == 0
    accepted = only_run(tmp_path / "accepted")
    spec = project(tmp_path / "b", ["accuracy >= against.accuracy - 0.01"])
    same = run(spec, tmp_path / "same", accepted)
    (gate,) = same.gates
    assert same.exit_code == 0 and gate["passed"] and gate["difference_ci95"] == [0.01, 0.01]  # paired: same answers
    assert "note" not in gate and gate["right"] == pytest.approx(gate["left"] - 0.01)
    assert json.loads(same.run.file("manifest.json").read_text())["against"]["run_id"] == accepted.name
    monkeypatch.setattr(keyword_model, "score", worse_than(keyword_model))
    assert main(["run", str(spec), "--out", str(tmp_path / "worse"), "--against", str(accepted)]) == 1
    assert "**FAIL**" in (only_run(tmp_path / "worse") / "report.md").read_text()


def test_against_a_folder_of_runs_takes_the_newest_succeeded_run_of_this_spec(tmp_path, keyword_model, monkeypatch):
    spec = project(tmp_path, ["accuracy >= against.accuracy"])
    runs = tmp_path / "runs"
    assert main(["run", str(project(tmp_path / "a")), "--out", str(runs)]) == 0
    monkeypatch.setattr(keyword_model, "score", worse_than(keyword_model))
    assert main(["run", str(project(tmp_path / "b", ["accuracy >= 0"])), "--out", str(runs)]) == 0  # newer, worse
    older, newer = sorted((runs / "tiny").iterdir())
    manifest = json.loads((newer / "manifest.json").read_text())
    assert manifest["started"] >= json.loads((older / "manifest.json").read_text())["started"]
    outcome = run(spec, tmp_path / "out", runs)  # the worse model against the newest run: its own answers
    assert outcome.gates[0]["passed"]
    assert json.loads(outcome.run.file("manifest.json").read_text())["against"]["path"] == str(newer)


def test_against_other_examples_compares_point_values_and_says_so(tmp_path, keyword_model):
    assert main(["run", str(project(tmp_path / "a")), "--out", str(tmp_path / "accepted"), "--limit", "3"]) == 0
    spec = project(tmp_path / "b", ["accuracy >= against.accuracy - 0.5"])
    (gate,) = run(spec, tmp_path / "out", only_run(tmp_path / "accepted")).gates
    assert "other examples" in gate["note"] and "difference_ci95" not in gate


def cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_against_gate_without_against_is_exit_2_before_a_run_folder(tmp_path, capsys):
    spec = project(tmp_path, ["accuracy >= against.accuracy"])
    err = cli_error(capsys, ["run", str(spec), "--out", str(tmp_path / "runs")])
    assert "no --against RUN_DIR" in err and "evaluation.gates" in err
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def accepted(tmp_path, keyword_model):
    assert main(["run", str(project(tmp_path / "a")), "--out", str(tmp_path / "accepted")]) == 0
    return only_run(tmp_path / "accepted")


@pytest.mark.parametrize(
    ("gate", "damage", "message"),
    [
        ("accuracy >= against.accuracy", lambda f: shutil.rmtree(f), "no such run folder"),
        ("accuracy >= against.accuracy", lambda f: (f / "metrics.json").write_text("{not json"), "cannot read it"),
        ("accuracy >= against.accuracy", lambda f: (f / "manifest.json").write_text("[]"), "expected a JSON object"),
        ("accuracy >= against.accuracy", lambda f: _edit(f / "manifest.json", ("spec", "task"), "extraction"),
         "a extraction run; this spec is classification"),
        ("accuracy >= against.fine_tuned.accuracy", lambda f: None, "needs row 'fine_tuned'"),
        ("accuracy >= against.accuracy", lambda f: _edit(f / "metrics.json", ("zero_shot", "accuracy"), None),
         "needs zero_shot.accuracy"),
        ("accuracy >= against.accuracy", lambda f: [p.unlink() for p in f.iterdir() if p.suffix == ".json"],
         "no run folder"),
        ("accuracy >= against.accuracy", lambda f: _edit(f / "metrics.json", ("zero_shot", "accuracy"), float("nan")),
         "needs zero_shot.accuracy; that run has nan"),
        ("accuracy >= against.accuracy", lambda f: _edit(f / "metrics.json", ("zero_shot", "accuracy"), 10**400),
         "needs zero_shot.accuracy; that run has 1000"),
    ],
)  # fmt: skip
def test_bad_against_folders_are_exit_2_in_one_line(tmp_path, accepted, capsys, gate, damage, message):
    damage(accepted)
    capsys.readouterr()
    err = cli_error(capsys, ["run", str(project(tmp_path / "b", [gate])), "--out", str(tmp_path / "runs"),
                             "--against", str(accepted)])  # fmt: skip
    assert message in err
    assert not (tmp_path / "runs").exists()


def test_a_folder_of_runs_of_other_specs_is_ambiguous(tmp_path, accepted, capsys):
    for name in ("one", "two"):
        copy = tmp_path / "others" / name / "20260101T000000Z"
        shutil.copytree(accepted, copy)
        _edit(copy / "manifest.json", ("name",), name)
    err = cli_error(capsys, ["run", str(project(tmp_path / "b", ["accuracy >= against.accuracy"])),
                             "--against", str(tmp_path / "others"), "--out", str(tmp_path / "runs")])  # fmt: skip
    assert "2 runs below it and none of spec 'tiny'" in err and "name one run folder" in err


def _edit(file, key_path, value):
    document = json.loads(file.read_text())
    target = document
    for key in key_path[:-1]:
        target = target[key]
    target[key_path[-1]] = value
    file.write_text(json.dumps(document))


def test_against_a_matrix_folder_takes_the_cell_with_this_specs_values(tmp_path, accepted, capsys):
    other = tmp_path / "other_cell"
    shutil.copytree(accepted, other)
    _edit(other / "metrics.json", ("zero_shot", "accuracy"), 2.0)  # unbeatable: chosen, this gate would fail
    matrix = tmp_path / "runs" / "tiny" / "matrix-abc"
    matrix.mkdir(parents=True)
    cells = [
        {"label": "calibration=mean", "values": {"evaluation.calibration": "mean"}, "status": "succeeded", "run": str(other)},
        {"label": "calibration=none", "values": {"evaluation.calibration": "none"}, "status": "succeeded", "run": str(accepted)},
    ]  # fmt: skip
    (matrix / "matrix.json").write_text(json.dumps({"cells": cells}))
    spec = project(tmp_path / "b", ["accuracy >= against.accuracy"])
    assert main(["run", str(spec), "--against", str(matrix), "--out", str(tmp_path / "out")]) == 0
    assert "matrix cell calibration=none" in capsys.readouterr().err
    cells[1]["values"] = {"evaluation.calibration": "mean", "few_shot.k": 2}
    (matrix / "matrix.json").write_text(json.dumps({"cells": cells}))
    err = cli_error(capsys, ["run", str(spec), "--against", str(matrix), "--out", str(tmp_path / "out2")])
    assert "a matrix of 2 finished cells and 0 with this spec's values" in err


def test_against_reaches_every_cell_of_a_matrix_and_a_bad_one_is_one_exit_2_before_any_cell(tmp_path, accepted, capsys):
    """cli refused --against for a matrix although run_matrix passes it to every cell: a matrix with an
    against gate could never run. Now it is checked once before any cell, and a finished cell is reused
    only when its gates compared with the same run."""
    (tmp_path / "m").mkdir()
    spec = write_project(tmp_path / "m", {"matrix": {"few_shot.seed": [1, 2]}, "evaluation.calibration": "none",
                                          "evaluation.gates": ["accuracy >= against.accuracy"]})  # fmt: skip
    out = tmp_path / "m" / "runs"
    err = cli_error(capsys, ["run", str(spec), "--out", str(out)])
    assert "matrix cell few_shot.seed=1" in err and "no --against RUN_DIR" in err and not out.exists()
    err = cli_error(capsys, ["run", str(spec), "--out", str(out), "--against", str(tmp_path / "nowhere")])
    assert "no such run folder" in err and not out.exists()
    assert main(["run", str(spec), "--out", str(tmp_path / "dry"), "--against", str(accepted), "--dry-run"]) == 0
    assert main(["run", str(spec), "--out", str(out), "--against", str(accepted)]) == 0
    folders = [p for p in (out / "tiny").iterdir() if not p.name.startswith("matrix-")]
    assert len(folders) == 2
    assert all(json.loads((f / "manifest.json").read_text())["against"]["path"] == str(accepted) for f in folders)
    capsys.readouterr()
    assert main(["run", str(spec), "--out", str(out), "--against", str(accepted)]) == 0
    assert capsys.readouterr().err.count("finished earlier") == 2
    other = tmp_path / "other_accepted"
    shutil.copytree(accepted, other)
    assert main(["run", str(spec), "--out", str(out), "--against", str(other)]) == 0  # other gates: run again
    assert "finished earlier" not in capsys.readouterr().err


def test_against_a_matrix_folder_from_another_directory_reads_its_relative_cell_paths(
    tmp_path, accepted, capsys, monkeypatch
):
    """A matrix run with the default --out records `runs/tiny/<id>`, relative to where it ran."""
    cell = tmp_path / "elsewhere" / "runs" / "tiny" / accepted.name
    shutil.copytree(accepted, cell)
    matrix = cell.parent / "matrix-abc"
    matrix.mkdir()
    cells = [{"label": "calibration=none", "values": {"evaluation.calibration": "none"}, "status": "succeeded",
              "run": f"runs/tiny/{accepted.name}"}]  # fmt: skip
    (matrix / "matrix.json").write_text(json.dumps({"cells": cells}))
    spec = project(tmp_path / "b", ["accuracy >= against.accuracy"])
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(spec), "--against", str(matrix), "--out", str(tmp_path / "out")]) == 0
    assert "matrix cell calibration=none" in capsys.readouterr().err
    cells[0]["values"] = ["not", "a", "mapping"]
    (matrix / "matrix.json").write_text(json.dumps({"cells": cells}))
    err = cli_error(capsys, ["run", str(spec), "--against", str(matrix), "--out", str(tmp_path / "out2")])
    assert "cannot read its cells" in err


def test_a_confidence_gate_on_a_handful_of_examples_does_not_hold(tmp_path):
    """4 of 4 examples going one way gives every bootstrap resample the same sign; an exact sign test
    still leaves chance 1 in 16. The 95% claim needs at least 5 examples, whatever the bootstrap says."""
    for n, holds in ((4, False), (5, True)):
        (tmp_path / str(n)).mkdir()
        run = Rows(tmp_path / str(n), ["accuracy > baseline.accuracy (95%)", "accuracy > 0.5 (95%)"], n=n)
        run.add("zero_shot", np.ones(n, dtype=bool))
        run.add("baseline", np.zeros(n, dtype=bool))
        rows, number = run.gates()
        assert rows["difference_ci95"] == [1.0, 1.0]  # the bootstrap alone would call it certain
        assert rows["passed"] is holds and number["passed"] is holds
        if not holds:
            assert "4 eval examples cannot show a difference at 95% confidence (at least 5" in describe_gate(rows)
    assert stats.fewest_examples(0.95) == 5 and stats.fewest_examples(0.99) == 7 and stats.fewest_examples(0.5) == 1
