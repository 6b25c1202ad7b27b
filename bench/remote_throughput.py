"""Remote provider throughput: 2,000 TNEWS classification requests against a loopback server.

Run by hand:  .venv/bin/python -m bench.remote_throughput [--concurrency 32] [--delay 0.02]
The server (bench/fast_chat_server.py) runs in its own process and answers each chat request
after --delay seconds; the client is the real openai SDK through specrun's ChatAPIProvider, its
retries, rate limiter and response cache, driven by the evaluation stage's chunked loop. The
same 2,000 requests are also timed with the bare SDK and with http.client, to show the floor.
Ideal wall time: requests × delay / concurrency. Writes bench/results/remote_throughput.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench import save_result
from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.core.cache import ResponseCache
from runner.core.runfolder import RunFolder
from runner.data.dataset import spec_examples, take
from runner.data.prompts import PromptBuilder
from runner.pipeline.evaluate import raw_outputs
from runner.providers.registry import open_provider
from runner.tasks import make_task


def timed_run(spec, examples, builder, provider, folder: Path) -> float:
    run = RunFolder(folder)
    started = time.perf_counter()
    with Progress(console=Console(stderr=True), transient=True) as progress:
        outputs = raw_outputs(spec, examples, builder.messages, lambda: provider, run, progress, "zero_shot")
    seconds = time.perf_counter() - started
    assert len(outputs) == len(examples)
    return seconds


def bare_sdk(port: int, conversations: list, concurrency: int) -> float:
    """The openai SDK alone, no specrun: what any Python client pays per request."""
    import openai

    client = openai.OpenAI(api_key="sk-bench", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda m: client.chat.completions.create(model="gpt-4o-mini", messages=m), conversations))
    return time.perf_counter() - started


def bare_http(port: int, conversations: list, concurrency: int) -> float:
    """http.client with one keep-alive connection per thread: the floor of this machine and server."""
    local = threading.local()

    def send(messages: list) -> None:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port)
        body = json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()
        headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
        local.connection.request("POST", "/v1/chat/completions", body, headers)
        json.loads(local.connection.getresponse().read())

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, conversations))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-m", "bench.fast_chat_server", "--delay", str(args.delay)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    try:
        port = int(server.stdout.readline())
        os.environ["OPENAI_API_KEY"] = "sk-bench"
        spec = load_spec(
            PROJECT_ROOT / "specs" / "tnews_openai.yaml",
            ["evaluation.modes=[zero_shot]", "fine_tune.enabled=false", "evaluation.gates=[]"],
        )
        examples = take(spec_examples(spec)[0], {"take": "first", "n": args.requests})
        builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
        with tempfile.TemporaryDirectory() as tmp:
            config = {
                **spec.provider,
                "base_url": f"http://127.0.0.1:{port}/v1",
                "concurrency": args.concurrency,
                "requests_per_minute": None,
            }
            cache = ResponseCache(Path(tmp) / "responses.sqlite")
            provider = open_provider(config, cache)
            cold = timed_run(spec, examples, builder, provider, Path(tmp) / "cold")
            cached = timed_run(spec, examples, builder, provider, Path(tmp) / "cached")
        conversations = [builder.messages(example) for example in examples]
        sdk = bare_sdk(port, conversations, args.concurrency)
        http_floor = bare_http(port, conversations, args.concurrency)
        ideal = args.requests * args.delay / args.concurrency
        result = {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "server_delay_s": args.delay,
            "ideal_s": round(ideal, 3),
            "wall_s": round(cold, 3),
            "ratio_to_ideal": round(cold / ideal, 2),
            "requests_per_s": round(args.requests / cold, 1),
            "cached_rerun_s": round(cached, 3),
            "bare_openai_sdk_s": round(sdk, 3),
            "bare_http_client_s": round(http_floor, 3),
            "retries": provider.retries,
        }
    finally:
        server.kill()
    save_result("remote_throughput", result)


if __name__ == "__main__":
    main()
