"""The provider interface: what the pipeline asks of any model backend.

Remote chat APIs answer `chat`; a local model can also `score` fixed answers, which is how a
small model is made to always return a label from the label set.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Message = dict[str, str]
Conversation = list[Message]
Progress = Callable[[int], None]  # called with the number of items just finished


@dataclass
class Completion:
    text: str
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens


class Provider(ABC):
    name: str
    model: str

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Model identity for the manifest: resolved path or id, checksum, dtype, device."""

    @abstractmethod
    def chat(
        self, conversations: Sequence[Conversation], params: dict[str, Any], progress: Progress | None = None
    ) -> list[Completion]:
        """One assistant reply per conversation."""

    def score(
        self, conversations: Sequence[Conversation], answers: Sequence[str], progress: Progress | None = None
    ) -> np.ndarray:
        """Log-probability of each answer as the assistant's reply: shape (conversations, answers)."""
        raise NotImplementedError(f"provider {self.name!r} cannot score answers; use evaluation.method: generate")


def open_provider(config: dict[str, Any]) -> Provider:
    """The provider a spec's `provider` section names (loading the model if local)."""
    if config["name"] == "local":
        from runner.providers.local import LocalProvider

        return LocalProvider(config["model"], batch_size=config["batch_size"])
    raise ValueError(f"unknown provider {config['name']!r}")
