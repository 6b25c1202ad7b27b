"""The local trainer on TNEWS in 1 and in 2 processes (torchrun, gloo on CPU): step time, loss agreement.

Run by hand:  .venv/bin/python -m bench.trainer_processes [--steps 24]
The same LoRA job (embedded gemma-3-270m, TNEWS chat lines of specs/tnews_full.yaml's train
split, batch 8, seed 0) is trained twice, each in fresh processes: once in one process with
OMP_NUM_THREADS=2, once as 2 processes (python -m torch.distributed.run --nproc_per_node 2)
with OMP_NUM_THREADS=1 each, so both use the machine's 2 cores. Each writes its own registry.
Reported: seconds a step (training wall time over steps, model loading excluded) and the largest
difference between the two jobs' losses at the same step. On a 2-core CPU no speed-up is
expected: the point is that 2 processes train the same model. Writes bench/results/trainer_processes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import save_result
from runner import PROJECT_ROOT


def write_train_file(path: Path, n_lines: int) -> None:
    from runner.config.spec import load_spec
    from runner.data.dataset import make_splits
    from runner.data.prompts import PromptBuilder
    from runner.tasks import make_task

    spec = load_spec(PROJECT_ROOT / "specs" / "tnews_full.yaml")
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    train = make_splits(spec).train[:n_lines]
    lines = (json.dumps({"messages": builder.training_messages(e)}, ensure_ascii=False) for e in train)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def train(train_file: Path, out: Path) -> None:
    """One launched process (or the only one): the main one creates and times the job, the others serve it."""
    from rich.console import Console

    from runner.providers.local import distributed
    from runner.providers.local.provider import LocalProvider, serve_jobs

    if not distributed.start().main:
        serve_jobs()
        return
    try:
        provider = LocalProvider("gemma-3-270m")
        job = provider.create_job(provider.upload(train_file), {"n_epochs": 1, "batch_size": 8, "seed": 0})
        started = time.perf_counter()
        provider.drive(job.id, Console(quiet=True))
        seconds = time.perf_counter() - started
        losses = [loss for event in provider.events(job.id) for loss in event.data.get("step_losses", [])]
        result = {"processes": distributed.world().size, "seconds": seconds, "losses": losses}
        out.write_text(json.dumps(result), encoding="utf-8")
    finally:
        distributed.release_workers()


def launch(processes: int, train_file: Path, folder: Path) -> dict:
    out = folder / f"result-{processes}.json"
    env = {**os.environ, "SPECRUN_REGISTRY": str(folder / f"registry-{processes}")}
    env["OMP_NUM_THREADS"] = str(2 // processes)
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    module = ["-m", "bench.trainer_processes", "--train", str(train_file), "--result", str(out)]
    subprocess.run([sys.executable, *launcher, *module], env=env, cwd=PROJECT_ROOT, check=True, timeout=1800)
    return json.loads(out.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)  # a launched process
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train:
        train(args.train, args.result)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_train_file(folder / "train.jsonl", args.steps * 8)
        runs = {processes: launch(processes, folder / "train.jsonl", folder) for processes in (1, 2)}
    one, two = runs[1]["losses"], runs[2]["losses"]
    assert len(one) == len(two) == args.steps
    differences = [abs(a - b) for a, b in zip(one, two, strict=True)]
    save_result(
        "trainer_processes",
        {
            "model": "gemma-3-270m (LoRA, fine_tune.local defaults)",
            "steps": args.steps,
            "batch_size": 8,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_after": os.getloadavg()[0],
            "seconds_per_step": {str(p): round(r["seconds"] / args.steps, 3) for p, r in runs.items()},
            "loss_first_last": {str(p): [r["losses"][0], r["losses"][-1]] for p, r in runs.items()},
            "largest_loss_difference": max(differences),
            "mean_loss_difference": sum(differences) / len(differences),
        },
    )


if __name__ == "__main__":
    main()
