"""Fine-tuning in 2 processes (torchrun, gloo on CPU) equals 1 process with the same global batch.

The same `specrun run` of one spec, once plainly and once launched as 2 processes: the main
process writes the run folder and the registry, the other only trains with it. Both jobs must
record the same loss at every step and end with the same LoRA weights.

Tolerance: the 2 processes compute the same sums in another order (each packs its own rows, and
the all-reduce adds the two halves), so float32 rounding (~1e-7 relative) differs step by step
and Adam carries it on. Measured here: final LoRA weights 1.3e-6 apart, 1e-4 of how far training
moved them (0.013); the recorded losses (rounded to 4 decimals) equal but for one rounding unit.
So losses must agree to 1.5e-4 (one rounding unit and a half) and weights to 5e-3 of the
movement (50 times the measured gap): far below what a wrong row in a shard, a gradient counted
twice, a lost all-reduce or a loss not weighted by the global batch changes (percent level).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runner.cli import main
from tests.conftest import ROOT, make_tiny_gemma, write_project

pytestmark = pytest.mark.model  # the tiny model borrows the embedded model's tokenizer

LAUNCH_TIMEOUT_S = 240  # both processes load a 2-layer model and train 12 steps: ~20 s on a loaded 2-core CPU

ROWS = [
    {"sentence": f"{subject}{n}号{verb}", "label_desc": label}
    for n in range(8)
    for subject, verb, label in [
        ("芯片", "发布", "news_tech"),
        ("银行", "降息", "news_finance"),
        ("球队", "夺冠", "news_sports"),
    ]
]


def project(root: Path, model: Path) -> Path:
    root.mkdir()
    hyper = {"n_epochs": 2, "batch_size": 5, "learning_rate_multiplier": 10}
    fine_tune = {"enabled": True, "seed": 7, "hyperparameters": hyper}
    return write_project(
        root,
        {
            "provider": {"name": "local", "model": str(model)},
            "fine_tune": fine_tune,
            "splits": {"train": {"take": "first", "n": 22}, "eval": {"take": "rest"}},
            "evaluation.baseline": False,
        },
        rows=ROWS,
    )


def job_of(registry: Path) -> tuple[list[float], dict[str, torch.Tensor], dict]:
    """The job's loss at every step, its final LoRA weights and its record."""
    from safetensors.torch import load_file

    from runner.providers.local.store import LocalRegistry

    os.environ["SPECRUN_REGISTRY"] = str(registry)
    store = LocalRegistry()
    (job,) = store.list_jobs()
    losses = [loss for event in store.events(job.id) for loss in event.data.get("step_losses", [])]
    weights = load_file(store.latest_checkpoint(job.id) / "adapter_model.safetensors")
    return losses, weights, store.record(job.id)


@pytest.mark.skipif(
    os.environ.get("SPECRUN_DISTRIBUTED_TEST") != "1",
    reason="opt-in (SPECRUN_DISTRIBUTED_TEST=1): on a loaded 2-core machine rank 0 once aborted at exit "
    "('terminate called without an active exception') after training correctly; not yet diagnosed",
)
def test_two_processes_train_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_tiny_gemma(tmp_path / "tiny", initializer_range=0.5)
    monkeypatch.setenv("SPECRUN_CACHE", str(tmp_path / "cache"))

    monkeypatch.setenv("SPECRUN_REGISTRY", str(tmp_path / "registry-1"))
    one = project(tmp_path / "one", model)
    assert main(["run", str(one), "--limit", "2", "--out", str(tmp_path / "runs-1")]) == 0

    two = project(tmp_path / "two", model)
    env = {**os.environ, "SPECRUN_REGISTRY": str(tmp_path / "registry-2"), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"  # this checkout's runner
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "runner"]
    done = subprocess.run(
        [*launch, "run", str(two), "--limit", "2", "--out", str(tmp_path / "runs-2")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    losses_1, weights_1, record_1 = job_of(tmp_path / "registry-1")
    losses_2, weights_2, record_2 = job_of(tmp_path / "registry-2")
    assert record_1["processes"] == 1 and record_2["processes"] == 2
    assert len(losses_1) == len(losses_2) == 2 * 5  # 22 rows in batches of 5 (the last of 2: one row a process)
    assert losses_2 == pytest.approx(losses_1, abs=1.5e-4)
    initial = {name: torch.zeros_like(w) if "lora_B" in name else None for name, w in weights_1.items()}
    moved = max(float((w - initial[n]).abs().max()) for n, w in weights_1.items() if initial[n] is not None)
    assert moved > 1e-3  # training changed the weights, so agreeing is not trivial
    for name, weight in weights_1.items():
        assert torch.allclose(weights_2[name], weight, atol=5e-3 * moved, rtol=0), name
    (run,) = (tmp_path / "runs-2" / "tiny").iterdir()  # one run folder: the worker wrote none
    manifest = (run / "manifest.json").read_text(encoding="utf-8")
    assert '"processes": 2' in manifest
