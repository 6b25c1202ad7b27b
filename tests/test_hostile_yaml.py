"""runner.config.safe_yaml: duplicate keys, alias bombs, recursive aliases, size, encodings, all as exit-2 errors."""

from __future__ import annotations

import itertools
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from runner.config.safe_yaml import MAX_NODES, MAX_SPEC_BYTES, load_yaml, read_text
from runner.core.errors import InvalidInput
from tests.conftest import ROOT


def alias_bomb(levels: int) -> str:
    """The classic billion-laughs: each line repeats the previous anchor nine times."""
    names = [f"n{i}" for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    for previous, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [7, 9, 30])
def test_an_alias_bomb_is_refused_fast_and_small(levels):
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match=r"bomb\.yaml:\d+: YAML expands to more than"):
        load_yaml(alias_bomb(levels), "bomb.yaml")
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20e6, (elapsed, peak)


def test_modest_anchor_reuse_is_still_allowed():
    doc, lines = load_yaml(alias_bomb(4), "ok.yaml")  # 9**4 leaves: under the bound
    assert len(doc["n3"]) == 9 and lines[("n3",)] == 4
    assert MAX_NODES > 9**4


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "- &x\n  - 1\n  - *x\n"])
def test_a_recursive_alias_is_refused(text):
    with pytest.raises(InvalidInput, match="recursive YAML alias"):
        load_yaml(text, "r.yaml")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: a\nlabels: {x: 1}\nname: b\n", 3),
        ("prompt:\n  template: t.jinja\n  system: s\n  template: u.jinja\n", 4),
        ("labels: {a: 1, b: 2, a: 3}\n", 1),
        ("x:\n  1: a\n  1: b\n", 3),
    ],
)
def test_a_duplicate_key_names_the_line_of_the_second(text, line):
    with pytest.raises(InvalidInput, match=rf"^d\.yaml:{line}: duplicate key"):
        load_yaml(text, "d.yaml")


def test_keys_that_only_look_alike_and_merge_keys_are_not_duplicates():
    doc, _ = load_yaml("x:\n  1: a\n  '1': b\nbase: &b {k: 1}\ny:\n  <<: *b\n  k: 2\n", "m.yaml")
    assert doc["x"] == {1: "a", "1": "b"} and doc["y"] == {"k": 2}


def test_size_is_bounded():
    with pytest.raises(InvalidInput, match="limit is"):
        load_yaml("a: " + "x" * MAX_SPEC_BYTES + "\n", "big.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1, 2\n", r"y\.yaml:2: invalid YAML"),
        ("a: 2024-13-45\n", r"y\.yaml: invalid YAML value"),
        ("a: !!python/object:os.system x\n", r"y\.yaml:1: invalid YAML: could not determine a constructor"),
        ("--- 1\n--- 2\n", r"y\.yaml:2: invalid YAML"),
        ("a:\n" + "".join(" " * i + "- \n" for i in range(1, 1500)), r"y\.yaml"),
        ("[" * 5000, r"y\.yaml:1: invalid YAML"),
    ],
)
def test_bad_yaml_is_one_invalid_input_with_file_and_line(text, message):
    with pytest.raises(InvalidInput, match=message):
        load_yaml(text, "y.yaml")


def test_the_key_line_map_matches_the_shipped_specs():
    for path in (ROOT / "specs").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        doc, lines = load_yaml(text, str(path))
        assert doc == yaml.safe_load(text)
        for key_path, line in lines.items():
            if key_path:
                assert str(key_path[-1]) in text.splitlines()[line - 1] or isinstance(key_path[-1], int)


def test_read_text_refuses_non_utf8_naming_the_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes("name: 名\nlabels: {}\n".encode() + "x: 名\n".encode("gbk"))
    with pytest.raises(InvalidInput, match=r"spec\.yaml:3: not UTF-8"):
        read_text(path, "spec")
    with pytest.raises(InvalidInput, match="spec not found"):
        read_text(tmp_path / "missing.yaml", "spec")
    with pytest.raises(InvalidInput, match="is a directory"):
        read_text(tmp_path, "template")
    path.write_bytes(b"\xef\xbb\xbfname: x\n")  # a BOM is not part of the text
    assert read_text(Path(path), "spec") == "name: x\n"


def test_validate_refuses_bombs_and_duplicates_through_the_cli(tmp_path, capsys):
    from runner.cli import main
    from tests.conftest import write_project

    spec = write_project(tmp_path)
    text = spec.read_text(encoding="utf-8")
    spec.write_text(text + alias_bomb(9).replace("n", "zz_n"), encoding="utf-8")
    started = time.perf_counter()
    assert main(["validate", str(spec)]) == 2
    assert time.perf_counter() - started < 5
    assert "YAML expands to more than" in capsys.readouterr().err
    spec.write_text(text + "name: again\n", encoding="utf-8")
    assert main(["validate", str(spec)]) == 2
    lines = len(text.splitlines()) + 1
    assert f"spec.yaml:{lines}: duplicate key 'name'" in capsys.readouterr().err.replace("\n", "")
    spec.write_bytes(text.encode() + "description: 名\n".encode("gbk"))
    assert main(["validate", str(spec)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
