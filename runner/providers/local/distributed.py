"""Fine-tuning across processes: `accelerate launch` or `torchrun` starts N copies of specrun.

The launcher sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; nothing in the spec
changes. Rank 0 (the main process) runs the command as always: run folder, manifest, evaluation,
the local registry. The other ranks run no command: they wait (`serve_jobs`) for the main process
to start a local fine-tuning job, train it with it in lockstep, then wait for the next job or for
the main process to finish (`release_workers`).

Training is data-parallel: every rank holds the whole model and builds the same global batch,
takes its rows (every N-th), and the gradients are summed across ranks (all-reduce) before the
same optimizer step everywhere, so the weights stay equal (trainer.py). The loss is weighted by
answer tokens over the global batch, so N processes compute the gradient one process would,
up to the order of floating-point sums. Process groups: gloo on CPU, nccl on GPUs (one GPU per
rank, LOCAL_RANK). FSDP and DeepSpeed are not used: the weights are replicated on each rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# The workers wait for the main process through whole evaluations (hours on a large one).
WAIT = timedelta(days=2)
DONE = None  # the message that ends the workers


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place among the launched ones (rank 0 of 1 when not launched)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World(0, 1)


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start() -> World:
    """Join the launched processes (once); one GPU per process when there are GPUs."""
    if launched() and not dist.is_initialized():
        backend = "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            backend = "nccl"
        dist.init_process_group(backend=backend, timeout=WAIT)
    return world()


def announce_job(job_id: str | None) -> None:
    """Main process: tell the workers which registry job to train with it now (None: no more jobs)."""
    if world().size > 1:
        dist.broadcast_object_list([job_id], src=0)


def release_workers() -> None:
    """Main process, on its way out (success or not): the workers stop waiting and exit."""
    if world().main and world().size > 1:
        announce_job(DONE)
        dist.destroy_process_group()


def next_job() -> str | None:
    """A worker: wait for the main process to announce a job (None: it is done, and so is the worker)."""
    message: list[str | None] = [None]
    dist.broadcast_object_list(message, src=0)
    if message[0] is DONE:
        dist.destroy_process_group()
    return message[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over every rank, in place."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(tensors: list[torch.Tensor]) -> None:
    """Every rank starts from the main process's values (the same seed gives them too; this makes sure)."""
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)
