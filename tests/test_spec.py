from pathlib import Path

import pytest

from runner.config.spec import load_spec, result_rows
from runner.core.errors import EXIT_INVALID, InvalidInput
from tests.conftest import DELETE, ROOT, write_project


def invalid(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        load_spec(path, overrides)
    assert caught.value.exit_code == EXIT_INVALID
    return str(caught.value)


def test_shipped_specs_are_valid():
    for spec_path in sorted((ROOT / "specs").glob("*.yaml")):
        spec = load_spec(spec_path)
        assert Path(spec.data["path"]).is_file()


def test_defaults_are_filled(project):
    spec = load_spec(project)
    assert spec.provider == {
        "name": "local",
        "model": "gemma-3-270m",
        "batch_size": 8,
        "params": {"temperature": 0, "max_tokens": 16},
    }
    assert spec.evaluation["method"] == "score"
    assert spec.evaluation["calibration"] == "auto"
    assert spec.data["format"] == "jsonl"
    assert result_rows(spec) == ["zero_shot", "zero_shot_uncalibrated", "baseline", "baseline_all_data"]


def test_relative_paths_resolve_against_the_spec_file(project, monkeypatch, tmp_path):
    monkeypatch.chdir("/")
    spec = load_spec(project)
    assert spec.data["path"] == str(tmp_path / "data.jsonl")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\ndata: [unclosed\n", encoding="utf-8")
    message = invalid(path)
    assert message.startswith(f"{path}:")
    assert "invalid YAML" in message


def test_unknown_key_names_key_and_line(tmp_path):
    path = write_project(tmp_path, {"data.txt_field": "sentence"})
    message = invalid(path)
    assert "unknown key 'txt_field'" in message
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "txt_field" in text)
    assert f"spec.yaml:{line}: data.txt_field" in message


def test_wrong_type_names_key_path(tmp_path):
    path = write_project(tmp_path, {"provider.batch_size": "eight"})
    message = invalid(path)
    assert "provider.batch_size" in message and "'eight' is not of type 'integer'" in message


def test_a_value_matching_no_alternative_lists_the_alternatives(tmp_path):
    message = invalid(write_project(tmp_path, {"fine_tune.local.lora_layers": "few"}))
    assert "fine_tune.local.lora_layers: 'few' is not valid here: expected an integer ≥ 1 or 'all'" in message
    message = invalid(write_project(tmp_path, {"fine_tune.hyperparameters.learning_rate_multiplier": "x"}))
    assert "expected a number > 0 and ≤ 10 or 'auto'" in message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_infinity_are_spec_errors(tmp_path, value):
    path = write_project(tmp_path, {})
    path.write_text(path.read_text() + f"\nprovider:\n  name: local\n  params:\n    temperature: {value}\n")
    message = invalid(path)
    assert "provider.params.temperature: must be a finite number, not NaN or infinity" in message


def test_missing_required_key(tmp_path):
    message = invalid(write_project(tmp_path, {"prompt": DELETE}))
    assert "'prompt' is required" in message


def test_missing_dataset_file(tmp_path):
    message = invalid(write_project(tmp_path, {"data.path": "nope.jsonl"}))
    assert "dataset file not found" in message and "data.path" in message


def test_missing_template_file(tmp_path):
    message = invalid(write_project(tmp_path, {"prompt.template": "nope.jinja"}))
    assert "template file not found" in message and "prompt.template" in message


def test_set_overrides_any_key(project):
    spec = load_spec(project, ["splits.train.n=2", "provider.batch_size=4", "evaluation.calibration=none"])
    assert spec.doc["splits"]["train"]["n"] == 2
    assert spec.provider["batch_size"] == 4
    assert result_rows(spec) == ["zero_shot", "baseline", "baseline_all_data"]


def test_set_override_is_validated(project):
    message = invalid(project, ["evaluation.method=guess"])
    assert "evaluation.method" in message and "'guess' is not one of" in message


def test_set_override_needs_key_and_value(project):
    assert "dotted.key=value" in invalid(project, ["nonsense"])


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("fine_tune.seed=2024-13-45", "--set fine_tune.seed: invalid YAML value: month must be in 1..12"),
        ("description=&a [*a]", "recursive YAML alias"),
        ("description=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
         "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
         "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]", "expands to more than"),
        ("data.path=~nosuchuser-specrun/x.jsonl", "--set data.path: cannot resolve the path"),
    ],
)  # fmt: skip
def test_set_values_are_read_under_the_spec_files_limits(project, override, problem):
    """--set went through plain yaml.safe_load: a bad date, a recursive alias or an unknown ~user were tracebacks."""
    assert problem in invalid(project, [override])


def test_a_symlink_loop_as_a_path_names_the_key(tmp_path):
    (tmp_path / "loop.jsonl").symlink_to("loop.jsonl")
    message = invalid(write_project(tmp_path, {"data.path": "loop.jsonl"}))
    assert "data.path: cannot resolve the path" in message and "loop.jsonl" in message


def test_numeric_label_keys_are_text_like_the_data_and_true_or_null_must_be_quoted(tmp_path):
    """YAML reads `102: 科技` as a number: it crashed validation (TypeError), though TNEWS's codes are written so."""
    rows = [{"code": 100 + i % 2, "sentence": f"标题{i}"} for i in range(8)]
    spec_path = write_project(
        tmp_path, {"data.label_field": "code", "labels": {100: "科技", 101: "金融"}}, rows=rows
    )  # fmt: skip
    spec = load_spec(spec_path)
    assert spec.doc["labels"] == {"100": "科技", "101": "金融"}
    for key in (True, None, 1.5):
        message = invalid(write_project(tmp_path, {"labels": {key: "科技", 101: "金融"}}, rows=rows))
        assert "is not text" in message and "quote the key" in message and "labels" in message
    message = invalid(write_project(tmp_path, {"labels": {100: "科技", "100": "金融"}}, rows=rows))
    assert "written twice" in message


def test_a_gate_with_a_long_run_of_spaces_is_refused_at_once(tmp_path):
    """The confidence group backtracked in cubic time: 4,000 spaces took 44 s, 50,000 never ended."""
    message = invalid(write_project(tmp_path, {"evaluation.gates": ["accuracy >= 0.4 (" + " " * 50_000 + "x"]}))
    assert "evaluation.gates[0]" in message


def test_gate_with_unknown_metric(tmp_path):
    message = invalid(write_project(tmp_path, {"evaluation.gates": ["precision >= 0.5"]}))
    assert "unknown metric 'precision'" in message and "evaluation.gates[0]" in message


@pytest.mark.parametrize("gate", ["accuracy >= 40", "invalid_rate < -0.1", "accuracy > baseline.accuracy + 5"])
def test_a_gate_outside_a_shares_range_is_refused(tmp_path, gate):
    """'accuracy >= 40' (meaning 40%) was accepted and could never pass."""
    message = invalid(write_project(tmp_path, {"evaluation.gates": [gate]}))
    assert "every metric is a share from 0 to 1" in message and "evaluation.gates[0]" in message


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        ({"news_tech": " ", "news_finance": "金融"}, "cannot be answered"),
        ({"news_tech": "科\n技", "news_finance": "金融"}, "cannot be answered"),
        ({"news_tech": " 科技", "news_finance": "科技 "}, "read the same"),
    ],
)
def test_label_words_must_be_answerable_and_apart_once_trimmed(tmp_path, labels, says):
    message = invalid(write_project(tmp_path, {"labels": labels}))
    assert says in message and "labels" in message


def test_gate_with_unknown_row(tmp_path):
    message = invalid(write_project(tmp_path, {"evaluation.gates": ["few_shot.accuracy >= baseline.accuracy"]}))
    assert "gate names row 'few_shot'" in message


def test_gate_comparing_rows_is_accepted(tmp_path):
    spec = load_spec(write_project(tmp_path, {"evaluation.gates": ["accuracy > baseline.accuracy"]}))
    (gate,) = spec.gates
    assert (gate.row, gate.metric, gate.op, gate.threshold) == (None, "accuracy", ">", ("baseline", "accuracy"))


@pytest.mark.parametrize("gate", ["accuracy >= zero_shot.accuracy", "zero_shot.accuracy > accuracy"])
def test_gate_comparing_a_metric_with_itself_through_the_implied_row(tmp_path, gate):
    message = invalid(write_project(tmp_path, {"evaluation.gates": [gate]}))
    assert "compares a metric with itself" in message and "evaluation.gates[0]" in message


def test_calibration_needs_score_method(tmp_path):
    message = invalid(write_project(tmp_path, {"evaluation.method": "generate", "evaluation.calibration": "mean"}))
    assert "calibration needs method: score" in message


def test_excluded_label_cannot_also_be_a_label(tmp_path):
    message = invalid(write_project(tmp_path, {"data.exclude_labels": ["news_tech"]}))
    assert "'news_tech' is both excluded and in labels" in message


def test_local_fine_tune_settings_are_refused_for_a_cloud_provider(tmp_path):
    overrides = {
        "provider": {"name": "openai", "model": "gpt-4o-mini"},
        "evaluation.method": "generate",
        "fine_tune": {"enabled": True, "local": {"lora_rank": 4}},
    }
    message = invalid(write_project(tmp_path, overrides))
    assert "openai fine-tuning does not take local" in message and "fine_tune.local" in message


def test_fine_tuned_mode_needs_fine_tuning_enabled(tmp_path):
    message = invalid(write_project(tmp_path, {"evaluation.modes": ["zero_shot", "fine_tuned"]}))
    assert "mode fine_tuned needs fine_tune.enabled: true" in message


def test_validation_split_sits_between_train_and_eval(tmp_path):
    from runner.data.dataset import make_splits

    spec = load_spec(write_project(tmp_path, {"splits.validation": {"take": "first", "n": 2}}))
    splits = make_splits(spec)
    assert [e.id for e in splits.train] == ["L1", "L2", "L3"]
    assert [e.id for e in splits.validation] == ["L4", "L5"]
    assert [e.id for e in splits.eval][:1] == ["L6"]


def test_checks_model_needs_a_shipped_encoding(tmp_path):
    message = invalid(write_project(tmp_path, {"checks.model": "claude-3"}))
    assert "checks.model" in message and "tiktoken" in message


def test_spec_hash_changes_with_data(project, tmp_path):
    before = load_spec(project).hash()
    with (tmp_path / "data.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"sentence": "新闻", "label_desc": "news_tech"}\n')
    assert load_spec(project).hash() != before


def test_openai_compatible_needs_a_base_url(tmp_path):
    overrides = {"provider": {"name": "openai_compatible", "model": "qwen2.5"}, "evaluation.method": "generate"}
    assert "openai_compatible needs the server's base_url" in invalid(write_project(tmp_path, overrides))


def test_label_scoring_needs_token_logprobs_which_zhipuai_lacks(tmp_path):
    overrides = {"provider": {"name": "zhipuai", "model": "glm-4-flash"}, "evaluation.method": "score"}
    message = invalid(write_project(tmp_path, overrides))
    assert "ZhipuAI's chat API returns none" in message and "evaluation.method" in message
    # OpenAI scores through chat logprobs (issue 11; tests/test_api_scoring.py): valid, path filled in
    spec = load_spec(write_project(tmp_path, {**overrides, "provider": {"name": "openai", "model": "gpt-4o-mini"}}))
    assert spec.provider["scoring"] == "chat"


def test_chat_providers_default_to_generation(tmp_path):
    spec = load_spec(write_project(tmp_path, {"provider": {"name": "zhipuai", "model": "glm-4-flash"}}))
    assert (spec.evaluation["method"], spec.evaluation["calibration"]) == ("generate", "none")
    assert spec.provider["concurrency"] == 8 and spec.provider["max_retries"] == 6
