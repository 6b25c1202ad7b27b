"""Any server speaking OpenAI's HTTP API at provider.base_url: vLLM, Ollama, llama.cpp's server."""

from __future__ import annotations

from runner.providers.api.client import ChatAPIProvider


class OpenAICompatibleProvider(ChatAPIProvider):
    name = "openai_compatible"
    key_env = "OPENAI_API_KEY"
    needs_key = False  # local servers usually take any key
    needs_base_url = True
    can_score = True
    default_scoring = "completions"  # echo + logprobs over prompt and label
    scoring_paths = ("completions", "chat")
