"""Label scoring through an API vs the embedded scorer: 2,000 TNEWS lines, 14 labels, concurrency 32.

Run by hand:  .venv/bin/python -m bench.api_score_throughput [--lines 2000] [--concurrency 32] [--delay 0.02]
              [--embedded-lines 2000]

The loopback server (this file with --serve, its own process) speaks /v1/completions with echo and
logprobs (prompt lists too) and /v1/chat/completions with top_logprobs, answering each request
after --delay seconds without holding a thread, with tests/fake_api.py's keyword "model" (one
character = one token). The client is specrun's ChatAPIProvider.score: the real openai SDK, the
thread pool, retries, rate limiter and response cache. Rows: completions scoring with one
prompt + label per request (what llama-cpp-python's server takes: 14 requests a line), with 14 per
request (a prompt list, as vLLM takes), chat top_logprobs (one request a line), a cached rerun,
and the embedded gemma-3-270m scoring the same lines on this CPU. Tokens/s for the API rows are
the server's own prompt_tokens count (prompt + label, every request); for the embedded row, the
gemma tokens of each prompt (run once) plus each label's tokens. Writes bench/results/api_score_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import save_result
from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.core.cache import ResponseCache
from runner.data.dataset import spec_examples, take
from runner.data.prompts import PromptBuilder
from runner.providers.registry import open_provider
from runner.tasks import make_task
from tests.fake_api import keyword_logprobs, keyword_top_logprobs

KEY = "sk-bench"


# --- the loopback server ---------------------------------------------------------------------------


def completions(request: dict[str, Any]) -> dict[str, Any]:
    prompts = request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]]
    choices, prompt_tokens = [], 0
    for index, prompt in enumerate(prompts):
        tokens, offsets, logprobs = keyword_logprobs(prompt)
        prompt_tokens += len(tokens)
        choices.append(
            {
                "index": index,
                "text": prompt + "。",
                "finish_reason": "length",
                "logprobs": {
                    "tokens": [*tokens, "。"],
                    "text_offset": [*offsets, len(prompt)],
                    "token_logprobs": [*logprobs, -0.5],
                    "top_logprobs": None,
                },
            }
        )
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(prompts), "total_tokens": prompt_tokens}
    return {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 0,
        "model": request["model"],
        "choices": choices,
        "usage": usage,
    }


def chat(request: dict[str, Any]) -> dict[str, Any]:
    top = keyword_top_logprobs(request["messages"], request["model"], int(request.get("top_logprobs") or 0))
    entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
    prompt_tokens = sum(len(m["content"]) for m in request["messages"])
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": request["model"],
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": top[0][0]},
                "logprobs": {"content": [{**entries[0], "top_logprobs": entries}]},
            }
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
    }


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            if headers.get("authorization") != f"Bearer {KEY}":
                status, payload = "401 Unauthorized", {"error": {"message": "Incorrect API key provided"}}
            else:
                await asyncio.sleep(delay)
                answer = completions if path.endswith("/completions") and "chat" not in path else chat
                status, payload = "200 OK", answer(json.loads(body))
            data = json.dumps(payload, ensure_ascii=False).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionResetError):
        pass
    finally:
        writer.close()


async def serve(delay: float) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, delay), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# --- the benchmark -------------------------------------------------------------------------------------


def api_row(name: str, config: dict[str, Any], cache: ResponseCache, conversations: list, labels: list[str]) -> dict:
    provider = open_provider(config, cache)
    started = time.perf_counter()
    scores = provider.score(conversations, labels)
    seconds = time.perf_counter() - started
    usage = getattr(provider, "score_usage", None) or {"requests": 0, "prompt_tokens": 0}
    row = {
        "path": name,
        "seconds": round(seconds, 2),
        "requests": usage["requests"],
        "requests_per_s": round(usage["requests"] / seconds, 1),
        "lines_per_s": round(len(conversations) / seconds, 1),
        "tokens_per_s": round(usage["prompt_tokens"] / seconds),
        "retries": provider.retries,
    }
    assert scores.shape == (len(conversations), len(labels))
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--embedded-lines", type=int, default=2000, help="0 skips the embedded scorer")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.delay))
        return

    spec = load_spec(PROJECT_ROOT / "specs" / "tnews.yaml")
    examples, _ = spec_examples(spec)
    lines = take(examples, {"take": "first", "n": args.lines})
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    conversations = [builder.messages(example) for example in lines]
    labels = list(spec.doc["labels"].values())

    server = subprocess.Popen(
        [sys.executable, "-m", "bench.api_score_throughput", "--serve", "--delay", str(args.delay)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    rows = []
    try:
        port = int(server.stdout.readline())
        os.environ["OPENAI_API_KEY"] = KEY
        base = {
            "name": "openai_compatible",
            "model": "bench",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "concurrency": args.concurrency,
            "timeout_s": 60,
            "max_retries": 6,
        }
        with tempfile.TemporaryDirectory() as tmp:
            cache = ResponseCache(Path(tmp) / "responses.sqlite")
            list_config = {**base, "scoring": "completions", "prompts_per_request": len(labels)}
            rows.append(
                api_row(
                    "completions, 1 prompt+label a request",
                    {**base, "scoring": "completions"},
                    cache,
                    conversations,
                    labels,
                )
            )
            rows.append(
                api_row(
                    f"completions, {len(labels)} a request (prompt list)",
                    list_config,
                    ResponseCache(Path(tmp) / "b.sqlite"),
                    conversations,
                    labels,
                )
            )
            rows.append(
                api_row(
                    "chat top_logprobs, 1 line a request", {**base, "scoring": "chat"}, cache, conversations, labels
                )
            )
            rows.append(
                api_row("completions, cached rerun", {**base, "scoring": "completions"}, cache, conversations, labels)
            )
    finally:
        server.kill()

    embedded = None
    if args.embedded_lines:
        from runner.providers.local.provider import LocalProvider

        local = LocalProvider("gemma-3-270m")
        subset = conversations[: args.embedded_lines]
        local.score(subset[:8], labels)  # warm-up
        started = time.perf_counter()
        local.score(subset, labels)
        seconds = time.perf_counter() - started
        prompt_tokens = sum(len(local.tokenizer(local.prompt_text(c))["input_ids"]) for c in subset)
        label_tokens = sum(len(local.tokenizer.encode(label, add_special_tokens=False)) for label in labels)
        embedded = {
            "path": f"embedded gemma-3-270m (bf16, batch {local.batch_size}, {local.device})",
            "lines": len(subset),
            "seconds": round(seconds, 2),
            "lines_per_s": round(len(subset) / seconds, 1),
            "tokens_per_s": round((prompt_tokens + label_tokens * len(subset)) / seconds),
        }
        print(embedded, flush=True)

    result = {
        "what": f"score {len(labels)} TNEWS labels on {len(conversations)} lines through a loopback server",
        "concurrency": args.concurrency,
        "server_delay_s": args.delay,
        "rows": rows,
        "embedded": embedded,
    }
    save_result("api_score_throughput", result)
    print("\n| path | requests | wall s | requests/s | lines/s | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['path']} | {row['requests']} | {row['seconds']} | {row['requests_per_s']} | "
            f"{row['lines_per_s']} | {row['tokens_per_s']} |"
        )
    if embedded:
        print(
            f"| {embedded['path']}, {embedded['lines']} lines | — | {embedded['seconds']} | — | "
            f"{embedded['lines_per_s']} | {embedded['tokens_per_s']} |"
        )


if __name__ == "__main__":
    main()
