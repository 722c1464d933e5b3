"""One training epoch, and evaluation on a COCO split with pycocotools.

As in torchvision's detection references (``engine.py``): the loop knows
nothing of the model kind beyond :mod:`radiodet.detector.models`'
interface.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import write_json
from .distributed import choose_device, is_main, reduce_mean
from .models import kind_module, model_from_checkpoint, pad_to_multiple

__all__ = ["train_one_epoch", "validation_loss", "evaluate_coco", "evaluate_model", "coco_map"]

log = logging.getLogger(__name__)


def train_one_epoch(model: nn.Module, kind, optimizer, scheduler, scaler, loader, device: torch.device, epoch: int,
                    step: int, *, grad_clip: float, max_steps: int | None, world: int, rank: int, amp: bool,
                    on_step=None, seen: list | None = None) -> int:
    """Train over ``loader`` once (or until ``max_steps``); returns the step count.

    ``on_step(step, epoch, lr, losses, seconds)`` is called on rank 0 after
    each step with the losses averaged over processes.
    """
    model.train()
    start = time.monotonic()
    for batch in loader:
        if seen is not None:
            seen.extend(kind.batch_image_ids(batch))
        with torch.autocast(device_type=device.type, enabled=amp):
            losses = kind.losses(model, batch, device)
            loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step} (epoch {epoch}): lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        values = reduce_mean({**losses, "loss": loss}, world)
        if is_main(rank) and on_step is not None:
            on_step(step, epoch, optimizer.param_groups[0]["lr"], values, time.monotonic() - start)
        if max_steps is not None and step >= max_steps:
            break
    return step


@torch.no_grad()
def validation_loss(model: nn.Module, kind, batches: list, device: torch.device) -> dict[str, float]:
    """The loss terms on the val split (eval mode, no augmentation), averaged over its batches."""
    model.eval()
    totals: dict[str, float] = {}
    for batch in batches:
        for name, value in kind.losses(model, batch, device).items():
            totals[name] = totals.get(name, 0.0) + float(value) / len(batches)
    totals["loss"] = sum(totals.values())
    return totals


def coco_map(ground_truth_json: str | Path, detections: list[dict]) -> dict:
    """COCO bbox metrics with ``pycocotools.cocoeval.COCOeval`` (up to 300 detections per image)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(ground_truth_json))
    if not detections or not gt.getAnnIds():
        return {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0, "n_detections": len(detections)}
    dt = gt.loadRes(detections)
    evaluation = COCOeval(gt, dt, iouType="bbox")
    # up to 300 detections per image: the cutouts hold hundreds of sources
    evaluation.params.maxDets = [1, 100, 300]
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    stats = evaluation.stats
    return {"mAP": float(stats[0]), "mAP50": float(stats[1]), "mAP75": float(stats[2]),
            "n_detections": len(detections)}


def _beam_pixel_cov(fits_path: Path) -> np.ndarray:
    from ..geometry import (
        covariance_from_ellipse,
        pixel_jacobian,
        sky_to_pixel_covariance,
    )
    from ..images import Beam, open_image

    with open_image(fits_path) as image:
        beam = image.beam or Beam(0.0, 0.0, 0.0)
        ny, nx = image.shape
        jacobian = pixel_jacobian(image.wcs, [nx / 2], [ny / 2])[0]
    return sky_to_pixel_covariance(covariance_from_ellipse(beam.major, beam.minor, beam.pa), jacobian)


def _boxes_of(found: dict, beam_cov: np.ndarray | None, n_sigma: float) -> np.ndarray:
    """(N, 4) COCO boxes of detections: the model's own, or its shape estimate at ``n_sigma``."""
    if "box_x0" in found:
        return np.column_stack([found["box_x0"], found["box_y0"], found["box_x1"], found["box_y1"]])
    from ..geometry import FWHM_PER_SIGMA

    major, minor = found["major_px"] / FWHM_PER_SIGMA, found["minor_px"] / FWHM_PER_SIGMA
    theta = np.deg2rad(found["angle"])
    c, s = np.cos(theta), np.sin(theta)
    cxx = major**2 * c**2 + minor**2 * s**2 + (beam_cov[0, 0] if beam_cov is not None else 0.0)
    cyy = major**2 * s**2 + minor**2 * c**2 + (beam_cov[1, 1] if beam_cov is not None else 0.0)
    hx, hy = n_sigma * np.sqrt(cxx), n_sigma * np.sqrt(cyy)
    cx, cy = found["x"] + 0.5, found["y"] + 0.5
    return np.column_stack([cx - hx, cy - hy, cx + hx, cy + hy])


def evaluate_coco(model: nn.Module, kind, coco_json: str | Path, detections_path: str | Path,
                  metrics_path: str | Path, *, category_ids: list[int], device: torch.device,
                  min_score: float = 0.05, n_sigma: float = 2.5, view_settings: dict | None = None) -> dict:
    """Run the model on every image of a COCO split and score it with COCOeval.

    Models that predict a shape rather than a box get the box the dataset
    uses: the ``n_sigma`` envelope of their shape convolved with the beam
    (``boxes.scale``). Writes the detections (COCO results format) and the
    metrics as JSON; returns the metrics.
    """
    from .data import CocoRadioDetection, cutout_snr, read_coco

    _, images, _, _ = read_coco(coco_json)
    root = Path(coco_json).parent
    views = CocoRadioDetection(coco_json) if kind.INPUT == "view" else None
    multiple = getattr(model, "stride_multiple", 1)
    results = []
    with torch.inference_mode():
        for record in images:
            if views is not None:
                tensor, beam_cov = views.load_image(record)[None], None
            else:
                snr, _ = cutout_snr(root / record["fits_file"])
                tensor = pad_to_multiple(torch.from_numpy(np.nan_to_num(snr))[None, None], multiple)
                beam_cov = _beam_pixel_cov(root / record["fits_file"])
            found = kind.detect(model, tensor.to(device), min_score=min_score)[0]
            inside = (found["x"] < record["width"] - 0.5) & (found["y"] < record["height"] - 0.5)
            found = {k: np.asarray(v)[inside] for k, v in found.items()}
            boxes = _boxes_of(found, beam_cov, n_sigma)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, record["width"])
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, record["height"])
            for box, score, label in zip(boxes, found["score"], found["label"]):
                results.append({"image_id": int(record["id"]), "category_id": int(category_ids[int(label)]),
                                "bbox": [round(float(box[0]), 3), round(float(box[1]), 3),
                                         round(float(box[2] - box[0]), 3), round(float(box[3] - box[1]), 3)],
                                "score": round(float(score), 5)})
    write_json(detections_path, results, indent=None)
    metrics = coco_map(coco_json, results)
    write_json(metrics_path, metrics)
    log.info("COCO %s: %s", Path(coco_json).name, metrics)
    return metrics


def evaluate_model(model_path: str | Path, coco_json: str | Path, detections_path: str | Path,
                   metrics_path: str | Path, *, min_score: float = 0.05, n_sigma: float = 2.5,
                   device_name: str = "auto") -> dict:
    """:func:`evaluate_coco` of a trained ``model.pth`` on one COCO split (the ``coco_eval`` rule).

    Parameters
    ----------
    model_path : str or Path
        A checkpoint written by :func:`radiodet.detector.train.train`.
    coco_json : str or Path
        The split's ``instances_<split>.json``.
    detections_path : str or Path
        COCO results JSON written (boxes in COCO pixel coordinates: the corner
        of pixel (0, 0) at 0).
    metrics_path : str or Path
        JSON with pycocotools' mAP, mAP50 and the other summary figures.
    min_score : float
        Detections scored below this are dropped.
    n_sigma : float
        Box half-size in Gaussian sigmas, as the boxes stage draws them.
    device_name : str
        ``auto``, ``cpu`` or ``cuda``.

    Returns
    -------
    dict
        The metrics written.
    """
    device = choose_device(device_name)
    model, settings = model_from_checkpoint(model_path)
    kind = kind_module(settings["network"]["kind"])
    return evaluate_coco(kind.for_inference(model, device), kind, coco_json, detections_path,
                         metrics_path, category_ids=settings["category_ids"], device=device, min_score=min_score,
                         n_sigma=n_sigma)
