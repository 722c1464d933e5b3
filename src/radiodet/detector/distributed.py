"""Distributed set-up: one script for torchrun, srun and a single process.

The launcher's environment decides: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
(torchrun), else ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID`` (srun
with several tasks), else one process. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import datetime
import os
import random

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["init_distributed", "is_main", "reduce_mean", "seed_everything", "barrier", "shutdown", "choose_device"]


def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher; starts the process group."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        local = int(os.environ.get("SLURM_LOCALID", 0))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
    else:
        return 0, 1, 0
    if world == 1:
        return 0, 1, local
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=30))
    return rank, world, local


def is_main(rank: int) -> bool:
    return rank == 0


def reduce_mean(values: dict[str, torch.Tensor], world: int) -> dict[str, float]:
    """Average scalar tensors over processes."""
    names = sorted(values)
    stacked = torch.stack([values[n].detach().float() for n in names])
    if world > 1:
        dist.all_reduce(stacked)
        stacked /= world
    return {n: float(v) for n, v in zip(names, stacked)}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def shutdown(world: int) -> None:
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def choose_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the process's GPU if there is one, else the CPU; or a torch device name."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device
