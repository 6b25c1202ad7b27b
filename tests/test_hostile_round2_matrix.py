"""Issue 21, class 5 for matrix: a key with 90k values, or thousands of keys, is refused at once.

The duplicate check counted each value in the list (quadratic: 229 s for 90k values) and the
overlap check compared every pair of keys; both are one pass now, and a key with more values than
a matrix may have cells is refused before any per-value work.
"""

from __future__ import annotations

import re
import time

import pytest

from runner.cli import main
from runner.commands.matrix import MAX_CELLS, read_matrix
from runner.core.errors import InvalidInput
from tests.conftest import write_project


def test_a_key_with_90k_values_is_refused_at_once(tmp_path, capsys):
    spec = write_project(tmp_path, {"matrix": {"few_shot.k": list(range(90_000))}})
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match=f"90000 values; a matrix may have at most {MAX_CELLS}"):
        read_matrix(spec)
    assert main(["validate", str(spec)]) == 2
    assert time.perf_counter() - started < 30  # YAML reading 90k values dominates; the check itself is instant
    assert "matrix.few_shot.k" in capsys.readouterr().err


def test_a_duplicate_value_is_found_in_one_pass(tmp_path):
    values = [*range(MAX_CELLS - 1), 5]
    with pytest.raises(InvalidInput, match="value 5 is listed twice"):
        read_matrix(write_project(tmp_path, {"matrix": {"few_shot.k": values}}))


def test_thousands_of_one_value_keys_are_checked_for_overlaps_in_linear_time(tmp_path):
    keys = {f"prompt.system{i}": ["x"] for i in range(20_000)}
    spec = write_project(tmp_path, {"matrix": {**keys, "prompt.system19999.deeper": ["y"]}})
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match=r"overlaps matrix key prompt\.system19999"):
        read_matrix(spec)
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize(
    ("matrix", "other"),
    [({"a.b": [1, 2], "a": [{"b": 1}, {"b": 2}]}, "a.b"), ({"a": [1, 2], "a.b.c": [1, 2]}, "a")],
)
def test_overlaps_are_found_whichever_key_comes_first(tmp_path, matrix, other):
    spec = write_project(tmp_path, {"matrix": {f"prompt.{k}": v for k, v in matrix.items()}})
    with pytest.raises(InvalidInput, match=re.escape(f"overlaps matrix key prompt.{other}")):
        read_matrix(spec)


def test_nan_is_not_a_matrix_value(tmp_path):
    spec = write_project(tmp_path)
    spec.write_text(spec.read_text(encoding="utf-8") + "matrix:\n  evaluation.temperature: [.nan, 0.5]\n")
    with pytest.raises(InvalidInput, match="JSON value"):
        read_matrix(spec)
