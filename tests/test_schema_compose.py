"""The spec schema is composed from the base and each task type's part; the shipped file is that composition."""

from __future__ import annotations

import json

import pytest

from runner.config.schema import BASE_PATH, COMPOSED_PATH, built_in_schema, compose, render, spec_schema
from runner.core.errors import InvalidInput
from runner.tasks import BUILT_IN, task_class


def test_the_shipped_schema_is_the_built_ins_composition():
    assert COMPOSED_PATH.read_text(encoding="utf-8") == render(built_in_schema()), (
        "schemas/spec.schema.json is stale: run python -m runner.config.schema"
    )


def test_validation_reads_the_composition_of_the_registered_task_types():
    assert spec_schema() == built_in_schema()  # no plugin installed here
    assert spec_schema()["properties"]["task"]["enum"] == list(BUILT_IN)


def test_each_task_type_brings_its_own_keys_and_rules():
    base = json.loads(BASE_PATH.read_text(encoding="utf-8"))
    for name in BUILT_IN:
        fragment = task_class(name).schema()
        assert fragment["properties"] and fragment["then"]
        for key in fragment["properties"]:
            if key not in ("data", "evaluation"):
                assert key not in base["properties"], f"{key} belongs to {name} alone"


def test_a_task_type_that_redefines_a_key_is_refused():
    base = {"properties": {"task": {}, "data": {"properties": {"path": {"type": "string"}}}}}
    same = {"properties": {"data": {"properties": {"path": {"type": "string"}}}}}
    assert compose(base, {"a": same})["properties"]["data"]["properties"]["path"] == {"type": "string"}
    other = {"properties": {"data": {"properties": {"path": {"type": "integer"}}}}}
    with pytest.raises(InvalidInput, match=r"defines spec key data\.path differently"):
        compose(base, {"a": other})
