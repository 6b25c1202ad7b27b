"""Evaluation across a fleet: lines/s with 1, 2 and 4 loopback servers of fixed latency.

Run by hand:  .venv/bin/python -m bench.fleet_throughput [--lines 400] [--delay 0.1] [--concurrency 4]
Each server (bench/fast_chat_server.py, its own process) answers every chat request after
--delay seconds, whatever its load: a stand-in for a GPU server whose batches take a fixed time.
The client is specrun's openai_compatible provider with `base_url` listing the servers and
`concurrency` per server, through its response cache (cold: every line asked). Ideal lines/s:
servers × concurrency / delay. Bounded: --lines requests per fleet size, three fleet sizes.
Writes bench/results/fleet_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import save_result
from runner import PROJECT_ROOT
from runner.core.cache import ResponseCache
from runner.providers.registry import open_provider


def start_server(delay: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.fast_chat_server", "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    return server, f"http://127.0.0.1:{int(server.stdout.readline())}/v1"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=4, help="per server")
    args = parser.parse_args()
    os.environ["OPENAI_API_KEY"] = "sk-bench"
    servers = [start_server(args.delay) for _ in range(4)]
    rows = []
    try:
        for count in (1, 2, 4):
            urls = [url for _, url in servers[:count]]
            config = {"name": "openai_compatible", "model": "bench", "base_url": urls, "concurrency": args.concurrency}
            conversations = [
                [{"role": "user", "content": f"文本：第{i}条 芯片\n类别：{count}"}] for i in range(args.lines)
            ]
            with tempfile.TemporaryDirectory() as tmp:
                provider = open_provider(config, ResponseCache(Path(tmp) / "responses.sqlite"))
                started = time.perf_counter()
                answers = provider.chat(conversations, {"max_tokens": 8, "temperature": 0})
                seconds = time.perf_counter() - started
            assert len(answers) == args.lines
            ideal = count * args.concurrency / args.delay
            answered = provider.describe().get("answered_by", {urls[0]: args.lines})
            rows.append(
                {
                    "servers": count,
                    "seconds": round(seconds, 2),
                    "lines_per_s": round(args.lines / seconds, 1),
                    "ideal_lines_per_s": round(ideal, 1),
                    "of_ideal": round(args.lines / seconds / ideal, 3),
                    "answers_per_server": list(answered.values()),
                }
            )
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait(10)
    save_result(
        "fleet_throughput",
        {
            "lines": args.lines,
            "server_delay_s": args.delay,
            "concurrency_per_server": args.concurrency,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_after": os.getloadavg()[0],
            "fleets": rows,
        },
    )


if __name__ == "__main__":
    main()
