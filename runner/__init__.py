"""specrun: declarative, YAML-driven LLM classification and extraction experiments."""

import os
from importlib.resources import files
from pathlib import Path

__version__ = "0.1.0"

#: The checkout's root in an editable install (benchmarks read specs and data from it; a run records
#: its git commit). In a wheel it is site-packages' parent: nothing a command needs is read from it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Files every command needs, shipped inside the package so a wheel carries them: the spec schema
#: (resources/spec.schema.json links to schemas/, its one copy, and the wheel holds the file itself),
#: the price table and tiktoken's rank files. Wheels install unzipped, so this is a real folder.
RESOURCES = Path(str(files(__name__) / "resources"))


def cache_root() -> Path:
    """Where models, tokenizer files, the response cache and the fine-tuning registry live."""
    return Path(os.environ.get("SPECRUN_CACHE", Path.home() / ".cache" / "specrun"))
