"""Benchmarks, run by hand; results go to bench/results/ and bench/RESULTS.md."""

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def save_result(name: str, result: Any) -> Path:
    """Print the result and keep it as bench/results/<name>.json."""
    text = json.dumps(result, ensure_ascii=False, indent=2) + "\n"
    print(text, end="")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text, encoding="utf-8")
    return RESULTS / f"{name}.json"
