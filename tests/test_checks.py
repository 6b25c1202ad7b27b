import json
from pathlib import Path

import pytest

from runner.cli import main
from runner.core.tokens import encoding_for_model
from runner.data.chat_checks import FORMAT_ERRORS, count_tokens, default_epochs, format_errors, model_prices, run_checks

GOOD = {"messages": [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "hi"}]}

# One hand-made example per error category the checks must catch.
BAD = {
    "data_type": ["not an object"],
    "missing_messages_list": {"prompt": "x", "completion": "y"},
    "message_missing_key": {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
    "message_unrecognized_key": {"messages": [{"role": "user", "content": "q", "mood": "x"}, GOOD["messages"][1]]},
    "unrecognized_role": {"messages": [{"role": "robot", "content": "q"}, GOOD["messages"][1]]},
    "missing_content": {"messages": [{"role": "user", "content": ""}, GOOD["messages"][1]]},
    "invalid_weight": {"messages": [GOOD["messages"][0], {"role": "assistant", "content": "a", "weight": 2}]},
    "example_missing_assistant_message": {"messages": [{"role": "user", "content": "q"}]},
}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("category", FORMAT_ERRORS)
def test_each_format_error_category_is_caught(category):
    assert category in format_errors(BAD[category])


def test_good_example_has_no_errors():
    assert format_errors(GOOD) == []
    weighted = {"messages": [GOOD["messages"][0], {"role": "assistant", "content": "a", "weight": 0}]}
    assert format_errors(weighted) == []


def test_weight_on_a_user_message_is_an_error():
    example = {"messages": [{"role": "user", "content": "q", "weight": 1}, GOOD["messages"][1]]}
    assert format_errors(example) == ["invalid_weight"]


def test_non_string_content_is_missing_content():
    example = {"messages": [{"role": "user", "content": ["q"]}, GOOD["messages"][1]]}
    assert "missing_content" in format_errors(example)


def test_report_names_the_lines_with_errors(tmp_path):
    rows = [GOOD, BAD["unrecognized_role"], GOOD, BAD["example_missing_assistant_message"]]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with path.open("a") as handle:
        handle.write("{not json\n")
    checks = run_checks(path, "gpt-4o-mini")
    assert checks["n_examples"] == 5 and checks["n_valid"] == 2
    assert checks["format_errors"] == {
        "unrecognized_role": {"count": 1, "lines": [2]},
        "example_missing_assistant_message": {"count": 1, "lines": [4]},
        "data_type": {"count": 1, "lines": [5]},
    }
    assert checks["warnings"] == {"missing_system_message": 2, "missing_user_message": 0}


def test_token_counts_are_exact_with_cookbook_overheads():
    # cl100k: "hello world" = 2 tokens, "hi" = 1, "user" = 1, "assistant" = 1.
    # Cookbook: 3 per message + its strings, +1 for a name, +3 priming the reply.
    totals, assistant = count_tokens([GOOD["messages"]], "gpt-3.5-turbo")
    assert totals == [3 + (3 + 1 + 2) + (3 + 1 + 1)]
    assert assistant == [1]
    named = [{"role": "user", "name": "bob", "content": "hello world"}, {"role": "assistant", "content": "hi"}]
    assert count_tokens([named], "gpt-3.5-turbo")[0] == [totals[0] + 1 + 1]  # the name's token and its +1


def test_encoding_is_chosen_by_model():
    assert encoding_for_model("gpt-3.5-turbo").name == "cl100k_base"
    assert encoding_for_model("gpt-4").name == "cl100k_base"
    assert encoding_for_model("gpt-4o-mini-2024-07-18").name == "o200k_base"
    assert encoding_for_model("gpt-4.1-nano-2025-04-14").name == "o200k_base"
    assert encoding_for_model("gpt-4o").encode("你好世界") != encoding_for_model("gpt-4").encode("你好世界")


def test_default_epochs_rule():
    assert default_epochs(10) == 10  # 10 × 3 < 100: raise to 100 // 10
    assert default_epochs(2) == 25  # capped at 25
    assert default_epochs(100) == 3
    assert default_epochs(10_000) == 2  # 30k > 25k: lower to 25000 // 10000
    assert default_epochs(30_000) == 1


def test_distribution_limit_billing_and_cost(tmp_path):
    long_text = "token " * 20_000
    rows = [GOOD, GOOD, {"messages": [{"role": "user", "content": long_text}, {"role": "assistant", "content": "x"}]}]
    checks = run_checks(write_jsonl(tmp_path / "t.jsonl", rows), "gpt-3.5-turbo")
    assert checks["max_training_tokens"] == 16385
    assert checks["n_over_limit"] == 1
    assert checks["tokens_per_example"]["min"] == 14
    assert checks["tokens_per_example"]["max"] > 16385
    assert checks["billed_tokens_per_epoch"] == 14 + 14 + 16385  # long example billed at the limit
    assert checks["n_epochs"] == 25 and checks["epochs_rule"] == "cookbook default"  # 3 examples
    assert checks["billed_tokens"] == 25 * checks["billed_tokens_per_epoch"]
    price = model_prices("gpt-3.5-turbo-0125")["training"]
    assert checks["cost"]["training_usd"] == pytest.approx(checks["billed_tokens"] * price / 1e6, abs=1e-4)


def test_spec_epochs_override_the_rule(tmp_path):
    checks = run_checks(write_jsonl(tmp_path / "t.jsonl", [GOOD] * 4), "gpt-4o-mini", n_epochs=2)
    assert (checks["n_epochs"], checks["epochs_rule"], checks["billed_tokens"]) == (2, "spec", 2 * 4 * 14)


def test_unknown_price_gives_no_cost(tmp_path):
    checks = run_checks(write_jsonl(tmp_path / "t.jsonl", [GOOD]), "gpt-4-0613")
    assert checks["cost"] is None


def test_check_command_on_jsonl_exit_codes(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", [GOOD] * 3)
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD, BAD["missing_content"]])
    assert main(["check", str(good)]) == 0
    assert main(["check", str(bad)]) == 2
    assert main(["check", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["check", str(good), "--model", "llama-3"]) == 2


# Issue 8: hostile and careless input to `specrun check`.

TRICKY = [
    "对给定文本进行分类，类别包括：科技、金融。\n\n给定文本：\n苹果发布新款手机芯片\n类别：",
    "x。\n/y",  # o200k joins "/" after punctuation + newlines: no cut before it
    "x.\n//y",
    "。\n/路径\n。\n\n  x\n\t\ny\r\nz",
    "line one\nline two\n\n\n's\n'll\n123456\n 7\n",
    "\n\n\nstarts\nand ends\n\n",
    "emoji 🙂\n🙂\u2028x\u2029\n\u0085y\n\x1cz",
]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4"])
def test_token_counter_matches_tiktoken_on_multiline_text(model):
    from runner.data.chat_checks import TokenCounter

    count, encoding = TokenCounter(model), encoding_for_model(model)
    for text in TRICKY:
        assert count(text) == len(encoding.encode_ordinary(text)), repr(text)
        assert count(text) == len(encoding.encode_ordinary(text))  # second time from the memo


def test_unicode_line_separators_inside_strings_do_not_split_examples(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "a\u2028b\u2029c\u0085d"}, GOOD["messages"][1]]}, GOOD]
    checks = run_checks(write_jsonl(tmp_path / "t.jsonl", rows), "gpt-4o-mini")
    assert (checks["n_examples"], checks["n_valid"], checks["format_errors"]) == (2, 2, {})


def test_hostile_lines_are_format_errors_not_crashes(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [GOOD, {"messages": [{"role": ["x"], "content": "q"}, {"role": {}}]}])
    with path.open("a", encoding="utf-8") as handle:
        handle.write("[" * 100_000 + "\n")  # deeper than the JSON parser recurses
        handle.write('{"n": ' + "9" * 5000 + "}\n")  # more digits than int() converts
        handle.write('{"messages": [{"role": "user", "content": "a\\ud800"}, {"role": "assistant", "content": "b"}]}\n')
        handle.write(
            '{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}, {"role": "assistant", "content": "b"}]}\n'
        )
    checks = run_checks(path, "gpt-4o-mini")
    assert checks["n_examples"] == 6 and checks["n_valid"] == 2  # a lone surrogate is not text; a pair is an emoji
    assert checks["format_errors"]["data_type"]["lines"] == [3, 4, 5]
    assert checks["format_errors"]["unrecognized_role"]["lines"] == [2]


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_an_empty_file_fails_check(tmp_path, capsys, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    assert main(["check", str(path)]) == 2
    assert "no examples" in capsys.readouterr().err


def test_an_empty_model_name_is_an_error_not_the_default(tmp_path, capsys):
    path = write_jsonl(tmp_path / "t.jsonl", [GOOD])
    assert main(["check", str(path), "--model", ""]) == 2
    assert "--model ''" in capsys.readouterr().err


def test_a_non_utf8_file_is_exit_2_naming_the_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "t.jsonl", [GOOD])
    path.write_bytes(path.read_bytes() + '{"messages": "名"}\n'.encode("gbk"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "t.jsonl:2" in err and "UTF-8" in err and "Traceback" not in err


def test_check_decides_spec_or_data_by_suffix_then_content(tmp_path, capsys):
    from runner.data.chat_checks import check_target_kind

    upper = write_jsonl(tmp_path / "TRAIN.JSONL", [GOOD] * 3)
    assert check_target_kind(upper) == "data"
    assert main(["check", str(upper)]) == 0
    text = write_jsonl(tmp_path / "train.txt", [GOOD] * 3)  # chat lines under another suffix
    assert check_target_kind(text) == "data"
    assert main(["check", str(text)]) == 0
    spec_like = tmp_path / "spec.jsonl"  # a spec-looking name with a data suffix is data
    spec_like.write_text("name: x\n", encoding="utf-8")
    assert main(["check", str(spec_like)]) == 2
    assert "data_type" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("name: x\nlabels: {}\n", encoding="utf-8")
    assert main(["check", str(notes)]) == 2
    assert "cannot tell whether this is a spec or a chat JSONL" in capsys.readouterr().err
    (tmp_path / "s.YML").write_text("x", encoding="utf-8")
    assert check_target_kind(tmp_path / "s.YML") == "spec"
    assert main(["check", str(tmp_path)]) == 2
    assert main(["check", str(upper), "--set", "a=1"]) == 2
