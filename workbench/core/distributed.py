"""Data-parallel runs across processes with torch.distributed, launched by `torchrun` (or `accelerate launch`).

Each process loads the model once and takes every `world`-th record (record i goes to rank i % world), so
shards differ by at most one record; results are gathered to every rank and merged by record index, which
makes the merged output independent of how many processes ran (greedy decoding: identical to one process,
tested with two CPU processes on gloo). Stage II shards its sampling by batch instead (see `generate_ids`)
and takes rank 0's parameters after each update. Only rank 0 writes the run's outputs. Without torchrun's
environment (WORLD_SIZE unset or 1) everything runs in this process and nothing is initialised.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's place among `world` processes."""

    rank: int = 0
    world: int = 1

    def owns(self, index: int) -> bool:
        """Whether record `index` is this process's to run."""
        return index % self.world == self.rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order (just [value] in a single process)."""
        if self.world == 1:
            return [value]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite every rank's `tensors` with rank 0's, in place: one authoritative copy of trained state."""
        if self.world > 1:
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)

    def done(self) -> None:
        """Every rank's last call, after rank 0 has written the outputs: no rank exits while another still works,
        so a rank's teardown can never make torchrun kill rank 0 mid-write."""
        self.barrier()


SINGLE = Shard()


def launched_world() -> int:
    """How many processes torchrun (or accelerate) launched: 1 when run directly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def current_shard() -> Shard:
    """The shard torchrun's environment describes, joining the process group on first use (gloo on CPU,
    nccl when each process has a GPU); `Shard()` when not launched by torchrun."""
    world = launched_world()
    if world <= 1:
        return SINGLE
    rank = int(os.environ["RANK"])
    if not dist.is_initialized():
        if torch.cuda.is_available():
            # nccl's object collectives (gather) use the *current* GPU: without this every process would use
            # GPU 0, and nccl refuses two ranks on one device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=rank, world_size=world)
    return Shard(rank, world)


def exit_process(code: int) -> None:
    """End `python -m workbench` with `code`: the ordinary `sys.exit` in one process; under torchrun (a process
    group) at once with `os._exit`, after flushing. The gloo process group outlives `destroy_process_group()` (its
    worker threads are still running at exit), and a rank then sometimes died with SIGABRT ("terminate called
    without an active exception") after every output was written, which torchrun reports as a failed run
    (measured: 1 run in 12; 1 in 69 with a final barrier and `destroy_process_group()`; 0 in 80 leaving at once).
    After a success every rank has passed `Shard.done()`, so nothing is lost; after an error torchrun stops the
    other ranks, as it would anyway."""
    if not dist.is_initialized():
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def local_device(device: str | None) -> str | None:
    """Under torchrun with GPUs, `cuda` (or auto) means this process's GPU (LOCAL_RANK); otherwise unchanged.
    Sharding one model across GPUs (`--device auto`) and data parallelism do not mix: one or the other."""
    world = launched_world()
    if world <= 1 or not torch.cuda.is_available():
        return device
    if device == "auto":
        raise ValueError("--device auto shards one model across every GPU; with torchrun each process needs its "
                         "own GPU: drop --device (or pass --device cuda)")
    if device in (None, "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
