"""The `llm_crf` row: the LLM's entities and the character CRF's, merged by the rule that scores best on
the validation split (what no peer reports, as the ensemble row does for classification).

Candidates: the LLM alone, the CRF alone, their union, their intersection, and per type the source
better on validation. The row exists only when a merge beats both single sources on validation (ties
go to the single source, the simpler answer); the choice and every candidate's validation F1 are
recorded either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RULES = ("llm", "crf", "union", "intersection", "per_type")  # single sources first: they win ties


def merge(rule: str, llm: dict[str, Any], crf: dict[str, Any], crf_types: set[str]) -> dict[str, Any]:
    """One example's merged prediction; `crf_types`: the types per_type takes from the CRF."""
    ours, theirs = {tuple(s) for s in llm["spans"]}, {tuple(s) for s in crf["spans"]}
    chosen = {
        "llm": ours,
        "crf": theirs,
        "union": ours | theirs,
        "intersection": ours & theirs,
        "per_type": {s for s in ours if s[0] not in crf_types} | {s for s in theirs if s[0] in crf_types},
    }[rule]
    spans = sorted(chosen, key=lambda s: (s[1], s[2], s[0]))
    return {"spans": [list(s) for s in spans], "invalid": False, "n_strings": len(spans)}


def choose(
    llm: list[dict[str, Any]],
    crf: list[dict[str, Any]],
    score: Callable[[list[dict[str, Any]]], dict[str, Any]],
    types: list[str],
) -> tuple[str, set[str], dict[str, float]]:
    """(rule, the types per_type takes from the CRF, each rule's validation entity F1), on validation."""
    llm_types, crf_types = score(llm)["per_type"], score(crf)["per_type"]
    from_crf = {t for t in types if crf_types[t]["f1"] > llm_types[t]["f1"]}
    f1 = {
        rule: score([merge(rule, a, b, from_crf) for a, b in zip(llm, crf, strict=True)])["entity_f1"] for rule in RULES
    }
    best = max(RULES, key=lambda rule: (f1[rule], -RULES.index(rule)))
    return best, from_crf, f1
