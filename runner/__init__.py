"""specrun: declarative, YAML-driven LLM classification experiments."""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout's root: schemas, templates, data and the price table live beside the package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
