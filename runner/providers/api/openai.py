"""OpenAI's API: chat, label scoring through chat top_logprobs, fine-tuning while it lasts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runner.core.errors import InvalidInput
from runner.providers.api.client import ChatAPIProvider

WINDING_DOWN = (
    "OpenAI self-serve fine-tuning is winding down (no new jobs after 2027-01-06; some organisations lost "
    "access earlier). Fine-tune the embedded model instead: set provider.name: local."
)


class OpenAIProvider(ChatAPIProvider):
    name = "openai"
    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    can_score = True
    default_scoring = "chat"  # OpenAI returns no prompt log-probabilities: top_logprobs of the reply
    scoring_paths = ("chat",)
    tiktoken_labels = True  # its models' tokenizers ship with tiktoken: labels are checked token by token
    lists_checkpoints = True
    fine_tune_settings = frozenset({"n_epochs", "batch_size", "learning_rate_multiplier", "suffix", "seed"})

    @classmethod
    def check_scoring(cls, doc: dict[str, Any], where: Callable[..., str], answers: Sequence[str] | None) -> None:
        if doc["evaluation"]["method"] == "score" and doc["provider"]["scoring"] != "chat":
            raise InvalidInput(
                "openai scores labels only through chat logprobs (its completions endpoint returns no "
                "prompt log-probabilities for current models); use scoring: chat",
                where=where("provider", "scoring"),
            )
        super().check_scoring(doc, where, answers)

    def fine_tune_hyperparameters(self, hyper: dict[str, Any]) -> dict[str, Any]:
        return {"method": {"type": "supervised", "supervised": {"hyperparameters": hyper}}}

    def refused_job_advice(self, code: int | None) -> str:
        return WINDING_DOWN if code in (400, 403, 404) else ""
