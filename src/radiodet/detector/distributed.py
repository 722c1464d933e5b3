"""Distributed set-up: one script for torchrun, srun and a single process.

The launcher's environment decides: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
(torchrun), else ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID`` (srun
with several tasks), else one process. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import ctypes
import datetime
import logging
import os
import random
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["init_distributed", "is_main", "reduce_mean", "seed_everything", "barrier", "shutdown", "choose_device",
           "die_with_parent", "die_with_launcher", "worker_dies_with_parent"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> bool:
    """Have Linux SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``).

    Returns whether the request was made (Linux only). A parent that died
    before the request is caught too: the process then kills itself.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): a killed parent may leave this process running",
                    ctypes.get_errno())
        return False
    if os.getppid() != parent or parent == 1:  # the parent died before the request
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def die_with_launcher() -> bool:
    """Under torchrun: have Linux SIGKILL this process when the launcher dies.

    torchrun starts each worker in a session of its own, so a kill of the
    job's process group (what a user's ``kill -9 -<pgid>`` or a lost terminal
    does; a SLURM job's cgroup is killed whole anyway) takes the launcher but
    would leave the training running on, writing checkpoints into the
    directory a rerun is using. Returns whether the request was made (Linux
    under torchrun only).
    """
    return "TORCHELASTIC_RUN_ID" in os.environ and die_with_parent()


def worker_dies_with_parent(worker_id: int) -> None:
    """``worker_init_fn`` of a DataLoader: the worker dies at once with its process.

    (PyTorch's workers notice a dead parent only at their next status check,
    seconds later.) Uses no random numbers, so the data are unchanged.
    """
    die_with_parent()


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
