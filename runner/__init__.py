"""specrun: declarative, YAML-driven LLM classification and extraction experiments."""

import os
from pathlib import Path

__version__ = "0.1.0"

#: The checkout's root: schemas, templates, data and the price table live beside the package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """Where models, tokenizer files, the response cache and the fine-tuning registry live."""
    return Path(os.environ.get("SPECRUN_CACHE", Path.home() / ".cache" / "specrun"))
