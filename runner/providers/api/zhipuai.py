"""ZhipuAI's API (GLM models): chat and fine-tuning; no log-probabilities, so no label scoring."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runner.core.errors import InvalidInput
from runner.providers import check_id
from runner.providers.api.client import ChatAPIProvider
from runner.providers.api.transport import json_answer

REFUSAL = (
    "method: score needs token log-probabilities, and ZhipuAI's chat API returns none (its SDK's "
    "chat.completions.create takes no logprobs/top_logprobs and it has no completions endpoint); "
    "use method: generate with zhipuai"
)


class ZhipuAIProvider(ChatAPIProvider):
    name = "zhipuai"
    key_env = "ZHIPUAI_API_KEY"
    base_url_env = "ZHIPUAI_BASE_URL"
    fine_tune_settings = frozenset({"n_epochs", "suffix"})  # no checkpoints endpoint either

    @classmethod
    def check_scoring(cls, doc: dict[str, Any], where: Callable[..., str], answers: Sequence[str] | None) -> None:
        if doc["evaluation"]["method"] == "score":
            raise InvalidInput(REFUSAL, where=where("evaluation", "method"))
        super().check_scoring(doc, where, answers)

    @classmethod
    def cannot_score_reason(cls) -> str:
        return REFUSAL

    def sdk_client(self, api_key: str, base_url: str | None, timeout: float) -> Any:
        from zhipuai import ZhipuAI

        from runner.providers.api.transport import zhipuai_http_client

        http = zhipuai_http_client(timeout)
        return ZhipuAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0, http_client=http)

    def sampling(self, temperature: float) -> dict[str, Any]:
        if not temperature:
            return {"do_sample": False}  # ZhipuAI's greedy decoding; it rejects temperature 0
        return {"temperature": temperature}

    def delete_model(self, model: str) -> None:
        check_id(model, "model id")  # the SDK puts it into the path as it is
        self.request(lambda: json_answer(lambda: self._sdk.fine_tuning.models.delete(fine_tuned_model=model)))
