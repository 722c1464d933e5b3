"""Train the detector on a COCO dataset written by this workflow.

Launch recipes (one script for all, like torchvision's detection references)::

    # one process (CPU, or the first GPU)
    python -m radiodet.train --train-json results/sdc1-demo/coco/instances_train.json \\
        --out-dir results/sdc1-demo/train --config-json '{"train": {"epochs": 2}}'

    # several GPUs of one node (DDP; one process per GPU)
    torchrun --standalone --nproc_per_node=4 -m radiodet.train ...

    # under SLURM, srun sets SLURM_PROCID / SLURM_NTASKS, used when RANK is absent

Each epoch ends with a checkpoint (model, optimizer, scheduler, scaler, epoch,
config) written by rank 0 only; a rerun with the same inputs and settings
resumes from the last one. Loss and learning rate go to ``loss.csv`` at every
step. No weights are downloaded: the backbone starts from random weights, or
from ``model.init_checkpoint`` (a local file).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .atomic import atomic_path, write_json
from .detector import (
    ModelConfig,
    anchors_from_boxes,
    build_model,
    choose_device,
    load_state_dict_adapting_channels,
    model_scale,
    param_checksum,
)
from .torch_datasets import CocoRadioDetection, collate_detection

__all__ = ["TrainConfig", "get_args_parser", "main", "train"]

log = logging.getLogger("radiodet.train")

LOSS_COLUMNS = ["step", "epoch", "lr", "loss", "loss_classifier", "loss_box_reg", "loss_objectness",
                "loss_rpn_box_reg", "seconds"]


@dataclass
class TrainConfig:
    """Optimisation settings (config ``train``)."""

    epochs: int = 12
    batch_size: int = 2          # images per process and step
    lr: float = 0.01             # for the whole batch over all processes
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 10.0
    amp: bool = True             # mixed precision, on GPU only
    seed: int = 42
    workers: int = 2
    max_steps: int | None = None  # stop early (tiny budgets in tests)
    keep_checkpoints: int = 2


@dataclass
class ModelSettings:
    """Config ``model``: how to build the network; anchors/normalisation may be 'auto'."""

    backbone: str = "resnet50"
    norm: str = "group"
    min_size: int = 820
    max_size: int = 1333
    normalise: dict = field(default_factory=lambda: {"mean": "auto", "std": "auto"})
    anchors: str = "auto"
    init_checkpoint: str | None = None
    detections_per_image: int = 300
    score_threshold: float = 0.05
    nms_threshold: float = 0.5


# --------------------------------------------------------------------------
# distributed set-up (torchrun, srun or one process)


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


# --------------------------------------------------------------------------
# configuration from the data


def dataset_statistics(dataset: CocoRadioDetection, *, max_images: int = 200) -> dict:
    """Mean/std of the images and the box sizes, on the un-augmented training set."""
    pixels, widths, heights, sides = [], [], [], []
    for index in range(min(len(dataset), max_images)):
        record = dataset.images[index]
        image = dataset.load_image(record)
        pixels.append(image.flatten()[:: max(1, image.numel() // 20000)])
        sides.append(max(record["width"], record["height"]))
    for anns in dataset.annotations.values():
        for ann in anns:
            widths.append(ann["bbox"][2])
            heights.append(ann["bbox"][3])
    values = torch.cat(pixels) if pixels else torch.zeros(1)
    return {"mean": float(values.mean()), "std": float(values.std().clamp_min(1e-3)),
            "widths": np.array(widths), "heights": np.array(heights),
            "image_size": int(np.median(sides)) if sides else 0}


def resolve_model_config(settings: ModelSettings, dataset: CocoRadioDetection) -> ModelConfig:
    """Fill 'auto' normalisation and anchors from the training data."""
    stats = dataset_statistics(dataset)
    mean = stats["mean"] if settings.normalise.get("mean", "auto") == "auto" else float(settings.normalise["mean"])
    std = stats["std"] if settings.normalise.get("std", "auto") == "auto" else float(settings.normalise["std"])
    config = ModelConfig(backbone=settings.backbone, num_classes=len(dataset.category_ids),
                         min_size=settings.min_size, max_size=settings.max_size, image_mean=mean, image_std=std,
                         detections_per_image=settings.detections_per_image,
                         score_threshold=settings.score_threshold, nms_threshold=settings.nms_threshold)
    if settings.anchors == "auto":
        if not len(stats["widths"]):
            raise ValueError(f"{dataset.path}: no annotations to derive anchors from")
        scale = model_scale(stats["image_size"], settings.min_size)
        config.anchor_sizes, config.aspect_ratios = anchors_from_boxes(stats["widths"], stats["heights"], scale)
    return config


def make_model(config: ModelConfig, settings: ModelSettings) -> nn.Module:
    norms = {"group": lambda c: nn.GroupNorm(32, c), "batch": nn.BatchNorm2d, "frozen": None}
    if settings.norm not in norms:
        raise ValueError(f"model.norm must be one of {sorted(norms)}, got {settings.norm!r}")
    model = build_model(config, norm_layer=norms[settings.norm])
    if settings.init_checkpoint:
        state = torch.load(settings.init_checkpoint, map_location="cpu", weights_only=False)
        state = state.get("model", state)
        missing = load_state_dict_adapting_channels(model, state)
        log.info("initialised from %s (%d tensors left at random init)", settings.init_checkpoint, len(missing))
    return model


# --------------------------------------------------------------------------
# checkpoints


#: settings that do not change the result of training (how far, how fast)
_NOT_FINGERPRINTED = ("max_steps", "workers", "keep_checkpoints")


def fingerprint(train_json: Path, settings: dict) -> str:
    """What a checkpoint must match to be resumed: the data and the settings.

    ``max_steps``, ``workers`` and ``keep_checkpoints`` are left out, so a run
    stopped early (or killed) resumes under the same settings.
    """
    settings = {**settings, "train": {k: v for k, v in settings["train"].items() if k not in _NOT_FINGERPRINTED}}
    digest = hashlib.sha256(train_json.read_bytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, **content) -> None:
    with atomic_path(path, suffix=".pth") as tmp:
        torch.save(content, tmp)


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(directory.glob("epoch_*.pth"))
    return found[-1] if found else None


# --------------------------------------------------------------------------
# the loop


def train_one_epoch(model, optimizer, scheduler, scaler, loader, device, epoch: int, step: int, *,
                    config: TrainConfig, world: int, rank: int, loss_writer, amp: bool, seen: list) -> int:
    model.train()
    start = time.monotonic()
    for images, targets in loader:
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        seen.extend(int(t["image_id"]) for t in targets)
        with torch.autocast(device_type=device.type, enabled=amp):
            losses = model(images, targets)
            loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step} (epoch {epoch}): lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        values = reduce_mean({**losses, "loss": loss}, world)
        if is_main(rank):
            loss_writer.writerow([step, epoch, f"{optimizer.param_groups[0]['lr']:.6g}"]
                                 + [f"{values.get(c, float('nan')):.6g}" for c in LOSS_COLUMNS[3:-1]]
                                 + [f"{time.monotonic() - start:.3f}"])
            if step % 20 == 0 or step == 1:
                log.info("epoch %d step %d: loss %.4f lr %.3g", epoch, step, values["loss"],
                         optimizer.param_groups[0]["lr"])
        if config.max_steps is not None and step >= config.max_steps:
            break
    return step


def train(train_json: str | Path, out_dir: str | Path, *, model_settings: ModelSettings, config: TrainConfig,
          device_name: str = "auto", debug_dir: str | Path | None = None) -> dict:
    """Train (or resume) and write ``model.pth``, ``loss.csv``, ``train.json`` in ``out_dir``."""
    rank, world, local = init_distributed()
    train_json, out_dir = Path(train_json), Path(out_dir)
    device = choose_device(device_name, local)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    amp = config.amp and device.type == "cuda"
    seed_everything(config.seed)
    dataset = CocoRadioDetection(train_json, augment=True, seed=config.seed)
    if len(dataset) == 0:
        raise ValueError(f"{train_json}: no training images")
    model_config = resolve_model_config(model_settings, dataset)
    settings = {"model": model_config.as_dict(), "model_settings": vars(model_settings), "train": vars(config),
                "world_size": world,
                # model label (1..K) -> category id of the COCO file
                "categories": {i + 1: cid for i, cid in enumerate(dataset.category_ids)}}
    key = fingerprint(train_json, settings)
    if is_main(rank):
        log.info("training on %d images (%s), %d process(es), device %s, amp %s", len(dataset), train_json, world,
                 device, amp)
        log.info("anchors %s, ratios %s, normalisation mean %.4f std %.4f", model_config.anchor_sizes,
                 model_config.aspect_ratios, model_config.image_mean, model_config.image_std)
    model = make_model(model_config, model_settings).to(device)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)
    bare = model.module if world > 1 else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    # one sampler for one or many processes: its order depends on (seed, epoch)
    # only, so a resumed run sees the same batches as an uninterrupted one
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, collate_fn=collate_detection,
                        num_workers=config.workers, pin_memory=device.type == "cuda",
                        persistent_workers=config.workers > 0, drop_last=False)
    steps_per_epoch = max(1, len(loader))
    total_steps = config.epochs * steps_per_epoch  # the schedule ignores max_steps (a stop, not a plan)

    def lr_factor(step: int) -> float:
        if step < config.warmup_steps:
            return 0.001 + (1 - 0.001) * step / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    checkpoints = out_dir / "checkpoints"
    start_epoch, step = 0, 0
    last = latest_checkpoint(checkpoints)
    if last is not None:
        state = torch.load(last, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == key:
            bare.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["lr_scheduler"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, step = state["epoch"] + 1, state["step"]
            restore_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
            if is_main(rank):
                log.info("resuming from %s (epoch %d done, step %d)", last, state["epoch"], step)
        elif is_main(rank):
            log.warning("ignoring %s: it was made from other data or settings", last)
    if is_main(rank):
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.mkdir(exist_ok=True)
    loss_path = out_dir / "loss.csv"
    handle = None
    writer = None
    if is_main(rank):
        fresh = start_epoch == 0 or not loss_path.exists()
        handle = open(loss_path, "w" if fresh else "a", newline="")
        writer = csv.writer(handle)
        if fresh:
            writer.writerow(LOSS_COLUMNS)
    seen: list[int] = []
    written: list[str] = []
    started = time.monotonic()
    images_done = 0
    try:
        for epoch in range(start_epoch, config.epochs):
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            before = step
            step = train_one_epoch(model, optimizer, scheduler, scaler, loader, device, epoch, step, config=config,
                                   world=world, rank=rank, loss_writer=writer, amp=amp, seen=seen)
            images_done += (step - before) * config.batch_size * world
            if handle:
                handle.flush()
            states = [None] * world
            if world > 1:
                dist.all_gather_object(states, rng_state())
            else:
                states = [rng_state()]
            if is_main(rank):
                path = checkpoints / f"epoch_{epoch:04d}.pth"
                save_checkpoint(path, model=bare.state_dict(), optimizer=optimizer.state_dict(),
                                lr_scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), epoch=epoch,
                                step=step, config=settings, fingerprint=key, rank=rank, rng=states)
                written.append(str(path))
                for old in sorted(checkpoints.glob("epoch_*.pth"))[:-config.keep_checkpoints]:
                    old.unlink()
                log.info("epoch %d done (step %d), checkpoint written", epoch, step)
            if world > 1:
                dist.barrier()
            if config.max_steps is not None and step >= config.max_steps:
                break
    finally:
        if handle:
            handle.close()
    elapsed = time.monotonic() - started
    summary = {"images": len(dataset), "world_size": world, "device": str(device), "amp": amp,
               "epochs": config.epochs, "steps": step, "seconds": round(elapsed, 2),
               "images_per_second": round(images_done / elapsed, 3) if elapsed > 0 else None,
               "model": model_config.as_dict(), "fingerprint": key}
    if debug_dir is not None:
        debug_dir = Path(debug_dir)
        debug_dir.mkdir(parents=True, exist_ok=True)
        if is_main(rank):
            written += [str(out_dir / "model.pth"), str(out_dir / "train.json")]
        write_json(debug_dir / f"rank{rank}.json", {"seen_image_ids": seen, "checksum": param_checksum(bare),
                                                    "wrote": written, "steps": step})
    if is_main(rank):
        save_checkpoint(out_dir / "model.pth", model=bare.state_dict(), config=settings, epoch=config.epochs - 1,
                        step=step, fingerprint=key, rank=rank)
        write_json(out_dir / "train.json", summary)
        log.info("training done: %d steps in %.1f s (%.2f images/s)", step, elapsed,
                 summary["images_per_second"] or 0)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def load_trained(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Model (eval mode) and its settings from a ``model.pth`` or epoch checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    settings = state["config"]
    model_settings = ModelSettings(**settings["model_settings"])
    model = make_model(ModelConfig(**settings["model"]), ModelSettings(**{**vars(model_settings),
                                                                          "init_checkpoint": None}))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), settings


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train the radiodet detector (torchrun/srun aware)")
    parser.add_argument("--train-json", required=True, help="COCO instances_train.json written by the workflow")
    parser.add_argument("--out-dir", required=True, help="directory for model.pth, loss.csv, train.json, checkpoints/")
    parser.add_argument("--config-json", default="{}",
                        help='JSON with "model" and "train" sections (the workflow config keys)')
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--debug-dir", default=None, help="write per-rank image ids seen and weight checksums here")
    parser.add_argument("--log-file", default=None, help="log file (rank 0 writes it)")
    return parser


def main(args: argparse.Namespace) -> dict:
    options = json.loads(args.config_json)
    model_settings = ModelSettings(**options.get("model", {}))
    config = TrainConfig(**options.get("train", {}))
    return train(args.train_json, args.out_dir, model_settings=model_settings, config=config,
                 device_name=args.device, debug_dir=args.debug_dir)


if __name__ == "__main__":
    cli_args = get_args_parser().parse_args()
    rank_env = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    from .logs import configure

    with configure(cli_args.log_file if rank_env == 0 else None):
        main(cli_args)
