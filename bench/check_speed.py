"""`specrun check` speed on a large chat JSONL, against the cookbook's plain loop and the old batch API.

Writes N chat examples shaped like specrun's own train.jsonl for TNEWS (system message, the
seed prompt around a unique headline, a one-word label), then times, on the same file:
- cookbook: the OpenAI cookbook's loop (json.loads per line, encoding.encode per string);
- batch_api: the old count_tokens, every string through tiktoken's encode_ordinary_batch;
- check: `specrun check FILE` as the CLI runs it (runner.data.chat_checks.run_checks: read, format checks,
  token counts, distributions), in-process.
All three must give the same total token count. Times are the best of --repeat runs, wall and CPU. Usage:
    .venv/bin/python -m bench.check_speed [--n 100000] [--model gpt-4o-mini] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from runner import PROJECT_ROOT
from runner.core.tokens import encoding_for_model
from runner.data.chat_checks import run_checks

SYSTEM = "你是一个新闻分类助手。"
LABELS = "科技、金融、娱乐、世界、汽车、运动、文化、军事、旅游、游戏、教育、农业、房产、社会"


def write_examples(path: Path, n: int, unique: bool = True) -> None:
    rows = [
        json.loads(line)
        for line in (PROJECT_ROOT / "data" / "tnews" / "tnews.json").read_text("utf-8").split("\n")
        if line
    ]
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            row = rows[i % len(rows)]
            # unique: every headline made unique (the worst case for memoised counts); else the
            # 8,000 TNEWS headlines cycled, as a 100k file built from this dataset would be.
            text = f"{row['sentence']}（{i}）" if unique else row["sentence"]
            prompt = f"对给定文本进行分类，类别包括：{LABELS}。\n\n给定文本：\n{text}\n类别："
            example = {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": row["label_desc"].removeprefix("news_")},
                ]
            }
            out.write(json.dumps(example, ensure_ascii=False) + "\n")


def cookbook(path: Path, model: str) -> int:
    """The cookbook's num_tokens_from_messages over every example."""
    encoding = encoding_for_model(model)
    total = 0
    with path.open(encoding="utf-8") as handle:
        dataset = [json.loads(line) for line in handle]
    for example in dataset:
        n = 0
        for message in example["messages"]:
            n += 3
            for key, value in message.items():
                n += len(encoding.encode(value))
                if key == "name":
                    n += 1
        total += n + 3
    return total


def batch_api(path: Path, model: str) -> int:
    """The old count_tokens: every string in one encode_ordinary_batch call (a thread pool)."""
    encoding = encoding_for_model(model)
    with path.open(encoding="utf-8") as handle:
        dataset = [json.loads(line)["messages"] for line in handle]
    strings = [value for messages in dataset for m in messages for value in m.values() if isinstance(value, str)]
    lengths = encoding.encode_ordinary_batch(strings)
    return sum(len(t) for t in lengths) + sum(3 + 3 * len(messages) for messages in dataset)


def check(path: Path, model: str) -> int:
    result = run_checks(path, model)
    return result["billed_tokens_per_epoch"]  # every example is under the training limit here


def timed(function: Callable[[Path, str], int], path: Path, model: str, repeat: int) -> tuple[float, float, int]:
    """Best wall time and best CPU time (all threads) of `repeat` runs, and the token total.

    The project machine is shared: CPU time is what the work costs when the cores are free.
    """
    walls, cpus, value = [], [], 0
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        value = function(path, model)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=["cookbook", "batch_api", "check"])
    parser.add_argument(
        "--cycled", action="store_true", help="cycle the 8,000 TNEWS headlines instead of making each unique"
    )
    args = parser.parse_args()
    encoding_for_model(args.model).encode("warm up")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.jsonl"
        write_examples(path, args.n, unique=not args.cycled)
        load = os.getloadavg()[0]
        kind = "cycled TNEWS headlines" if args.cycled else "unique headlines"
        print(f"{args.n} examples ({kind}), {path.stat().st_size / 1e6:.1f} MB, {args.model}, load average {load:.1f}")
        for name in args.only:
            wall, cpu, tokens = timed(globals()[name], path, args.model, args.repeat)
            print(f"{name:10s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  tokens {tokens}")


if __name__ == "__main__":
    main()
