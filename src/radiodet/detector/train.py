"""Train a detector on a COCO dataset written by this workflow.

Launch recipes (one script for all, like torchvision's detection references)::

    # one process (CPU, or the first GPU)
    python -m radiodet.detector.train --train-json results/sdc1-demo/coco/instances_train.json \\
        --out-dir results/sdc1-demo/train --config-json '{"model": {"kind": "heatmap"}, "train": {"epochs": 2}}'

    # several GPUs of one node (DDP; one process per GPU)
    torchrun --standalone --nproc_per_node=4 -m radiodet.detector.train ...

    # under SLURM, srun sets SLURM_PROCID / SLURM_NTASKS, used when RANK is absent

``--config-json`` holds the workflow config's ``model`` and ``train``
sections (every key; the workflow fills the schema's defaults). Each epoch
ends with a checkpoint written by rank 0 (:mod:`radiodet.detector.checkpoints`);
a rerun with the same inputs and settings resumes from the last one and ends
with the weights an uninterrupted run would have. Loss and learning rate go to
``loss.csv`` at every step; its history before a resume is restored from the
checkpoint. After training, rank 0 measures how the image's fluxes compare
with the training catalogue's (:func:`measurement_calibration`) and stores
the factor with the model. No weights are downloaded.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..atomic import atomic_path, write_json
from ..configuration import schema_config, section_defaults
from ..geometry import pixel_covariance
from .checkpoints import (
    CheckpointError,
    fingerprint,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from .data import EpochSampler, read_coco
from .distributed import (
    barrier,
    choose_device,
    die_with_launcher,
    init_distributed,
    is_main,
    seed_everything,
    shutdown,
    worker_dies_with_parent,
)
from .engine import train_one_epoch, validation_loss
from .models import build_from_settings, kind_module

__all__ = ["TrainConfig", "ValSelection", "get_args_parser", "main", "train", "measurement_calibration"]

log = logging.getLogger("radiodet.detector.train")


@schema_config("train", frozen=False, ignore=("activate",))
class TrainConfig:
    """Optimisation settings (config ``train``; the schema documents each key and holds the defaults)."""

    epochs: int
    batch_size: int              # images (or crops) per process and step
    optimizer: str               # sgd | adamw
    lr: float                    # for the whole batch over all processes
    momentum: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    amp: bool                    # mixed precision, on GPU only
    seed: int
    workers: int
    max_steps: int | None        # stop early (tiny budgets in tests)
    keep_checkpoints: int
    crop: int                    # heatmap: crop side (pixels)
    crops_per_image: int         # heatmap: crops per cutout and epoch
    label_min_snr: float | None  # heatmap: fainter annotations are ignored, not labels
    select_on_val: bool          # model.pth = the epoch with the lowest val loss (models that give one)
    patience: int | None         # stop after this many epochs without a lower val loss


def _optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"train.optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")


class LossLog:
    """``loss.csv``: one row per step, kept in memory and in every checkpoint.

    Columns: step, epoch, lr, loss, each loss term, ``val_loss`` (the val
    split's loss, on the last step of each epoch; empty elsewhere), seconds
    since the epoch started.
    """

    def __init__(self, path: Path, rows: list[list] | None = None, columns: list[str] | None = None):
        self.path, self.rows, self.columns = path, list(rows or []), list(columns or [])

    def add(self, step: int, epoch: int, lr: float, losses: dict[str, float], seconds: float) -> None:
        if not self.columns:
            self.columns = (["step", "epoch", "lr", "loss"] + sorted(k for k in losses if k != "loss")
                            + ["val_loss", "seconds"])
        self.rows.append([step, epoch, float(f"{lr:.6g}")] + [float(f"{losses.get(c, float('nan')):.6g}")
                                                             for c in self.columns[3:-2]]
                         + [None, round(seconds, 3)])
        if step % 20 == 0 or step == 1:
            log.info("epoch %d step %d: loss %.4f lr %.3g", epoch, step, losses["loss"], lr)

    def add_validation(self, value: float) -> None:
        if self.rows:
            self.rows[-1][self.columns.index("val_loss")] = float(f"{value:.6g}")

    def write(self) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(self.columns or ["step", "epoch", "lr", "loss", "seconds"])
                writer.writerows(self.rows)


class ValSelection:
    """Which epoch's weights to keep, and when to stop: the lowest val loss so far.

    State (``as_dict``) is plain data, stored in every epoch checkpoint so a
    resumed run continues the same bookkeeping.
    """

    def __init__(self, state: dict | None = None, *, patience: int | None = None):
        state = state or {}
        self.history: list[dict] = list(state.get("history", []))
        self.best_epoch: int | None = state.get("best_epoch")
        self.best_loss: float | None = state.get("best_loss")
        self.patience = patience

    def update(self, epoch: int, values: dict[str, float]) -> tuple[bool, bool]:
        """Record an epoch's val losses; returns (it is the best so far, training should stop)."""
        self.history.append({"epoch": epoch, **{k: round(float(v), 6) for k, v in values.items()}})
        improved = self.best_loss is None or values["loss"] < self.best_loss
        if improved:
            self.best_loss, self.best_epoch = float(values["loss"]), epoch
        stop = self.patience is not None and epoch - self.best_epoch >= self.patience
        return improved, stop

    def as_dict(self) -> dict:
        return {"history": self.history, "best_epoch": self.best_epoch, "best_loss": self.best_loss}


def _schedule(config: TrainConfig, total_steps: int):
    def lr_factor(step: int) -> float:
        if step < config.warmup_steps:
            return 0.001 + (1 - 0.001) * step / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return lr_factor


def train(train_json: str | Path, out_dir: str | Path, *, model_settings: dict, config: TrainConfig,
          val_json: str | Path | None = None, device_name: str = "auto", debug_dir: str | Path | None = None) -> dict:
    """Train (or resume) and write ``model.pth``, ``loss.csv``, ``train.json`` in ``out_dir``.

    Parameters
    ----------
    train_json : path
        ``instances_train.json`` of the workflow's COCO dataset.
    model_settings : dict
        The config's ``model`` section (``kind``, ``init_checkpoint`` and one
        section per kind).
    val_json : path, optional
        ``instances_val.json``: its loss after every epoch picks the epoch
        whose weights become ``model.pth`` (``select_on_val``; early stopping
        with ``patience``). The heatmap model gives a val loss;
        torchvision's Faster R-CNN does not (its last epoch is kept).
    config : TrainConfig
        Optimisation settings.
    debug_dir : path, optional
        Each rank writes the image ids it saw, a checksum of its weights and
        the files it wrote (tests of distributed training).

    Returns
    -------
    dict
        The summary written to ``train.json`` (steps, seconds, images/s, device).
    """
    rank, world, local = init_distributed()
    train_json, out_dir = Path(train_json), Path(out_dir)
    device = choose_device(device_name, local)
    amp = config.amp and device.type == "cuda"
    seed_everything(config.seed)
    kind = kind_module(model_settings["kind"])
    _, images, _, category_ids = read_coco(train_json)
    if not images:
        raise ValueError(f"{train_json}: no training images")
    model, network_config, network = build_from_settings(model_settings, train_json, len(category_ids))
    dataset, collate = kind.training_data(train_json, network_config, asdict(config), config.seed)
    settings = {"network": network, "model_settings": model_settings, "train": asdict(config), "world_size": world,
                "category_ids": category_ids}
    key = fingerprint(train_json, settings)
    if is_main(rank):
        log.info("training a %s model on %d images (%d items per epoch, %s), %d process(es), device %s, amp %s",
                 network["kind"], len(images), len(dataset), train_json, world, device, amp)
    model = model.to(device)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)
    bare = model.module if world > 1 else model
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], config)
    # one sampler for one or many processes: its order depends on (seed, epoch)
    # only, and every item it yields carries the epoch (augmentations differ
    # per epoch, also in persistent workers), so a resumed run sees the same
    # batches as an uninterrupted one
    sampler = EpochSampler(DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=config.seed))
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=config.workers, pin_memory=device.type == "cuda",
                        persistent_workers=config.workers > 0, drop_last=False,
                        worker_init_fn=worker_dies_with_parent)
    steps_per_epoch = max(1, len(loader))
    total_steps = config.epochs * steps_per_epoch  # the schedule ignores max_steps (a stop, not a plan)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    checkpoints = out_dir / "checkpoints"
    losses = LossLog(out_dir / "loss.csv")
    start_epoch, step = 0, 0
    last = latest_checkpoint(checkpoints)
    state = None
    if last is None and is_main(rank):
        log.info("no epoch checkpoint in %s: training starts from epoch 0", checkpoints)
    if last is not None:
        try:
            state = load_checkpoint(last)
        except CheckpointError as exc:
            if is_main(rank):
                log.warning("not resuming: %s; training starts from the beginning", exc)
    if state is not None:
        if state.get("fingerprint") == key:
            bare.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["lr_scheduler"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, step = state["epoch"] + 1, state["step"]
            restore_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
            losses = LossLog(out_dir / "loss.csv", state.get("loss_rows"), state.get("loss_columns"))
            if is_main(rank):
                log.info("resuming from %s (epoch %d done, step %d; %d loss rows restored)", last, state["epoch"],
                         step, len(losses.rows))
        elif is_main(rank):
            log.warning("ignoring %s: it was made from other data or settings", last)
    best_path = checkpoints / "best.pth"
    selection = ValSelection(state.get("validation") if state is not None and start_epoch > 0 else None,
                             patience=config.patience)
    if is_main(rank):
        checkpoints.mkdir(parents=True, exist_ok=True)
        if start_epoch == 0:  # checkpoints of another run would be taken for this one's on a resume
            for stale in [*checkpoints.glob("epoch_*.pth"), best_path]:
                stale.unlink(missing_ok=True)
    val_batches = (kind.validation_batches(val_json, network_config, asdict(config))
                   if val_json and config.select_on_val and is_main(rank) else [])
    if is_main(rank) and val_json and config.select_on_val and not val_batches:
        log.info("no val loss for a %s model (or an empty val split): model.pth is the last epoch", network["kind"])
    barrier(world)
    seen: list[int] = []
    written: list[str] = []
    started = time.monotonic()
    items_done = 0
    last_epoch = start_epoch - 1
    for epoch in range(start_epoch, config.epochs):
        last_epoch = epoch
        sampler.set_epoch(epoch)
        before = step
        step = train_one_epoch(model, kind, optimizer, scheduler, scaler, loader, device, epoch, step,
                               grad_clip=config.grad_clip, max_steps=config.max_steps, world=world, rank=rank,
                               amp=amp, on_step=losses.add, seen=seen)
        items_done += (step - before) * config.batch_size * world
        stop = torch.zeros(1)
        if val_batches:  # rank 0 only
            values = validation_loss(bare, kind, val_batches, device)
            losses.add_validation(values["loss"])
            improved, stopping = selection.update(epoch, values)
            if improved:
                save_checkpoint(best_path, model=bare.state_dict(), epoch=epoch, step=step,
                                validation=selection.as_dict())
            log.info("epoch %d: val loss %.4f (lowest %.4f, epoch %d)", epoch, values["loss"], selection.best_loss,
                     selection.best_epoch)
            if stopping:
                log.info("stopping: no lower val loss for %d epochs", config.patience)
                stop[0] = 1
        if world > 1:
            torch.distributed.broadcast(stop, src=0)
        states = [None] * world
        if world > 1:
            torch.distributed.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        if is_main(rank):
            path = checkpoints / f"epoch_{epoch:04d}.pth"
            save_checkpoint(path, model=bare.state_dict(), optimizer=optimizer.state_dict(),
                            lr_scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), epoch=epoch,
                            step=step, config=settings, fingerprint=key, rank=rank, rng=states,
                            loss_rows=losses.rows, loss_columns=losses.columns, validation=selection.as_dict())
            losses.write()
            written.append(str(path))
            for old in sorted(checkpoints.glob("epoch_*.pth"))[:-config.keep_checkpoints]:
                old.unlink()
            log.info("epoch %d done (step %d), checkpoint written", epoch, step)
        barrier(world)
        if (config.max_steps is not None and step >= config.max_steps) or stop[0]:
            break
    elapsed = time.monotonic() - started
    summary = {"kind": network["kind"], "images": len(images), "items_per_epoch": len(dataset), "world_size": world,
               "device": str(device), "amp": amp, "epochs": config.epochs, "steps": step,
               "seconds": round(elapsed, 2),
               "items_per_second": round(items_done / elapsed, 3) if elapsed > 0 and items_done else None,
               "network": network, "fingerprint": key, "validation": selection.as_dict()}
    if debug_dir is not None:
        debug_dir = Path(debug_dir)
        debug_dir.mkdir(parents=True, exist_ok=True)
        if is_main(rank):
            written += [str(out_dir / "model.pth"), str(out_dir / "train.json")]
        write_json(debug_dir / f"rank{rank}.json", {"seen_image_ids": seen, "checksum": param_checksum(bare),
                                                    "wrote": written, "steps": step})
    if is_main(rank):
        final_epoch = last_epoch
        if selection.best_epoch is not None and best_path.exists():
            bare.load_state_dict(load_checkpoint(best_path)["model"])
            final_epoch = selection.best_epoch
            log.info("model.pth: the weights of epoch %d (lowest val loss %.4f)", final_epoch, selection.best_loss)
        summary["model_epoch"] = final_epoch
        calibration = measurement_calibration(train_json) if kind.INPUT == "snr" else {"flux_scale": 1.0}
        settings["calibration"] = calibration
        summary["calibration"] = calibration
        save_checkpoint(out_dir / "model.pth", model=bare.state_dict(), config=settings, epoch=final_epoch,
                        step=step, fingerprint=key)
        losses.write()
        write_json(out_dir / "train.json", summary)
        log.info("training done: %d steps in %.1f s (%s items/s)", step, elapsed, summary["items_per_second"])
    shutdown(world)
    return summary


def measurement_calibration(train_json: str | Path, *, min_snr: float = 20.0, max_images: int = 200) -> dict:
    """How the image's fluxes compare with the training catalogue's, for bright sources.

    Every annotated source of (up to ``max_images``) training cutouts with a
    catalogue SNR of at least ``min_snr`` is measured where the catalogue
    puts it (:func:`radiodet.detector.measure.fit_sources`, shape held at the
    catalogue's where it is not fitted); ``flux_scale`` is the median of
    catalogue flux x pb over measured flux. It corrects what the image and
    the catalogue disagree on (on the bundled SDC1 image the measured fluxes
    come out 8 % below the truth catalogue's, as PyBDSF's do), and is 1 when
    fewer than 10 sources qualify.
    """
    from .data import cutout_snr
    from .engine import _beam_pixel_cov
    from .measure import fit_sources

    _, images, annotations, _ = read_coco(train_json)
    root = Path(train_json).parent
    ratios = []
    for record in images[:max_images]:
        anns = [a for a in annotations[record["id"]] if a.get("snr", 0) >= min_snr and "centre" in a]
        if not anns:
            continue
        snr, rms = cutout_snr(root / record["fits_file"])
        beam_cov = _beam_pixel_cov(root / record["fits_file"])
        centre = np.array([a["centre"] for a in anns]) - 0.5
        intrinsic = np.array([a["intrinsic"] for a in anns])
        fits = fit_sources(snr, centre[:, 0], centre[:, 1], 1.0, beam_cov,
                           shape_guess=pixel_covariance(intrinsic[:, 0], intrinsic[:, 1], intrinsic[:, 2]))
        measured = fits.flux(beam_cov) * rms
        expected = np.array([a["flux"] * a["pb"] for a in anns])
        good = np.isfinite(measured) & (measured > 0)
        ratios.append(expected[good] / measured[good])
    ratios = np.concatenate(ratios) if ratios else np.array([])
    if ratios.size < 10:
        log.info("measurement calibration: %d bright sources, too few: flux scale 1", ratios.size)
        return {"flux_scale": 1.0, "sources": int(ratios.size), "min_snr": min_snr}
    scale = float(np.median(ratios))
    log.info("measurement calibration: catalogue / measured flux = %.4f (median of %d sources with SNR >= %g; "
             "16-84 %%: %.3f-%.3f)", scale, ratios.size, min_snr, *np.percentile(ratios, [16, 84]))
    return {"flux_scale": scale, "sources": int(ratios.size), "min_snr": min_snr}


def param_checksum(model: nn.Module) -> str:
    """A short fingerprint of the weights (for tests of distributed training)."""
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(model.state_dict().values()):
        if p.dtype.is_floating_point:
            total += (p.detach().double().cpu() * (1.0 + (i % 7) * 1e-3)).sum()
    return f"{total.item():.12e}"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a radiodet detector (torchrun/srun aware)")
    parser.add_argument("--train-json", required=True, help="COCO instances_train.json written by the workflow")
    parser.add_argument("--val-json", default=None,
                        help="COCO instances_val.json: its loss picks the epoch written as model.pth")
    parser.add_argument("--out-dir", required=True, help="directory for model.pth, loss.csv, train.json, checkpoints/")
    parser.add_argument("--config-json", default="{}",
                        help='JSON with the config\'s "model" and "train" sections')
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--debug-dir", default=None, help="write per-rank image ids seen and weight checksums here")
    parser.add_argument("--log-file", default=None, help="log file (rank 0 writes it)")
    return parser


def main(args: argparse.Namespace) -> dict:
    options = json.loads(args.config_json)
    # the schema's scalar defaults, and the chosen kind's section (its keys default in the kind's config class)
    defaults = {k: v for k, v in section_defaults("model").items() if not isinstance(v, dict)}
    model_settings = {**defaults, **options.get("model", {})}
    model_settings.setdefault(model_settings["kind"], {})
    config = TrainConfig.from_config(options.get("train", {}))
    return train(args.train_json, args.out_dir, model_settings=model_settings, config=config,
                 val_json=args.val_json, device_name=args.device, debug_dir=args.debug_dir)


if __name__ == "__main__":
    die_with_launcher()
    cli_args = get_args_parser().parse_args()
    rank_env = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    from ..logs import configure

    with configure(cli_args.log_file if rank_env == 0 else None):
        main(cli_args)
