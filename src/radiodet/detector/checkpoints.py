"""Checkpoints: what a training run saves, and reading them back safely.

A checkpoint (``train/checkpoints/epoch_NNNN.pth`` after every epoch, and the
final ``train/model.pth``) is a dict of plain data only:

* ``model``: the state dict; ``config``: the settings (model kind and its
  config, training settings, category ids), a JSON-like dict;
* for resuming: ``optimizer``, ``lr_scheduler``, ``scaler`` state dicts,
  ``epoch``, ``step``, ``fingerprint`` (what the run was made from), ``rng``
  (each rank's random states as tensors and lists) and ``loss_rows`` (every
  row of ``loss.csv`` up to this point, so the log survives Snakemake
  deleting the outputs of a failed job).

Reading goes through ``torch.load(..., weights_only=True)``: a file that holds
a pickled Python object, which could run arbitrary code while it is loaded,
is refused with a :class:`CheckpointError` that names the file. Checkpoints
written by older versions of this package (which pickled numpy random
states) are refused the same way; retrain, or re-save the weights alone.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import InputError

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "fingerprint",
           "rng_state", "restore_rng_state", "NOT_FINGERPRINTED"]


class CheckpointError(InputError):
    """A checkpoint that cannot (or must not) be loaded; the message names the file."""


#: training settings that do not change the result (how far, with how many workers)
NOT_FINGERPRINTED = ("max_steps", "workers", "keep_checkpoints", "max_minutes")


def save_checkpoint(path: str | Path, **content) -> None:
    """Write ``content`` atomically (a killed writer leaves no partial file)."""
    with atomic_path(path, suffix=".pth") as tmp:
        torch.save(content, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's dict, loaded with ``weights_only=True`` (no code runs).

    Raises
    ------
    CheckpointError
        The file is missing, not a torch file, or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" (it names {found.group(1)})" if found else ""
        raise CheckpointError(path, "refusing to load: the checkpoint holds a pickled Python object" + what
                              + ", and unpickling can run arbitrary code; only tensors and plain containers are "
                                "accepted (a checkpoint of an older radiodet version: retrain)") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(path, f"not a readable torch checkpoint: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found {type(state).__name__}")
    return state


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = sorted(Path(directory).glob("epoch_*.pth"))
    return found[-1] if found else None


def fingerprint(train_json: str | Path, settings: dict) -> str:
    """What a checkpoint must match to be resumed: the training data and settings.

    The training settings named in :data:`NOT_FINGERPRINTED` are left out, so
    a run stopped early (or killed) resumes under the same settings.
    """
    train = {k: v for k, v in settings.get("train", {}).items() if k not in NOT_FINGERPRINTED}
    digest = hashlib.sha256(Path(train_json).read_bytes())
    digest.update(json.dumps({**settings, "train": train}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def rng_state() -> dict:
    """torch, numpy and Python random states as tensors and plain lists."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
