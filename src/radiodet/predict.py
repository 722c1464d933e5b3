"""Run the detector over whole fields and turn detections into a catalogue.

1. The field is covered by overlapping tiles (the training cutout size by
   default), scaled exactly as the training views were (the field's own
   pixel sample, the same interval and stretch), read from the memory-mapped
   image by DataLoader workers while the model runs on the device.
2. Each tile keeps the detections whose centre lies in its *core*: the part
   of the tile closer to its centre than to any neighbour's, so each patch of
   sky is decided by one tile, away from tile edges. Detections of all tiles
   are then merged with ``torchvision.ops.batched_nms`` (per class).
3. Each detection is measured on the image itself (Jy/beam): a 2-D elliptical
   Gaussian fitted to the pixels of its box (grown by ``fit_margin`` pixels)
   above the field background gives the position, integrated flux
   (``A x 2 pi sigma_a sigma_b / beam area``), and the shape, deconvolved from
   the restoring beam and mapped to the sky through the WCS Jacobian (FWHM in
   arcsec, PA east of north). Image moments stand in when the fit fails.
   Fluxes are divided by the primary-beam response when a primary beam is
   configured.
4. Output: a Parquet catalogue in the schema of :mod:`radiodet.schema` plus
   the detector's score and box, and the SDC1 submission format (12 scorer
   columns, no NaN; Gaussian FWHM sizes, so SIZE = 2; PA clockwise from west).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import least_squares
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import batched_nms

from .atomic import write_json
from .cutouts import robust_rms
from .detector import choose_device
from .filtering import sample_image
from .geometry import (
    covariance_from_ellipse,
    deconvolve,
    ellipse_from_covariance,
    normalise_ra,
    pixel_jacobian,
)
from .images import open_image
from .logs import Progress
from .schema import SOURCE_COLUMNS, write_parquet
from .sdc1 import write_submission
from .tiling import axis_starts
from .views import ViewConfig, field_interval, scale

__all__ = ["PredictConfig", "tile_cores", "predict_field", "measure_sources", "detect_coco_split"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class PredictConfig:
    """Config ``predict``."""

    tile: int = 205
    min_overlap: int = 48
    batch_size: int = 8
    score_threshold: float = 0.3
    nms_iou: float = 0.3
    fit_margin: int = 2
    workers: int = 2


def tile_cores(starts: list[int], size: int, length: int) -> list[tuple[float, float]]:
    """Per tile along one axis: [lo, hi) of continuous coordinates it decides.

    The boundary between neighbours is the middle of their overlap; the
    outer tiles extend to the image edge.
    """
    cores = []
    for i, start in enumerate(starts):
        lo = 0.0 if i == 0 else (start + starts[i - 1] + size) / 2.0
        hi = float(length) if i == len(starts) - 1 else (start + size + starts[i + 1]) / 2.0
        cores.append((lo, hi))
    return cores


class _Tiles(Dataset):
    """Scaled tiles of one image, read lazily (each worker opens the file)."""

    def __init__(self, path: Path, tiles: list[tuple[int, int]], size: int, vmin: float, vmax: float,
                 views: ViewConfig, plane):
        self.path, self.tiles, self.size = path, tiles, size
        self.vmin, self.vmax, self.views, self.plane = vmin, vmax, views, plane
        self._image = None
        self._context = None

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int):
        if self._image is None:
            self._context = open_image(self.path, plane=self.plane)
            self._image = self._context.__enter__()
        x0, y0 = self.tiles[index]
        data = self._image.read(y0, y0 + self.size, x0, x0 + self.size)
        return torch.from_numpy(scale(data, self.vmin, self.vmax, self.views))[None], index


def _detect(model, image_path: Path, *, shape, config: PredictConfig, vmin: float, vmax: float, views: ViewConfig,
            device: torch.device, plane, region: tuple[int, int, int, int] | None) -> pd.DataFrame:
    ny, nx = shape
    rx0, ry0, rx1, ry1 = region if region else (0, 0, nx, ny)
    size = config.tile
    xs = [rx0 + s for s in axis_starts(rx1 - rx0, size, config.min_overlap)]
    ys = [ry0 + s for s in axis_starts(ry1 - ry0, size, config.min_overlap)]
    if not xs or not ys:
        raise ValueError(f"{image_path}: the prediction region {region} is smaller than one tile of {size} px")
    x_cores = dict(zip(xs, tile_cores([x - rx0 for x in xs], size, rx1 - rx0)))
    y_cores = dict(zip(ys, tile_cores([y - ry0 for y in ys], size, ry1 - ry0)))
    tiles = [(x, y) for y in ys for x in xs]
    loader = DataLoader(_Tiles(image_path, tiles, size, vmin, vmax, views, plane), batch_size=config.batch_size,
                        num_workers=config.workers, pin_memory=device.type == "cuda")
    rows = []
    progress = Progress(f"prediction tiles of {image_path.name}", len(tiles), unit="tiles")
    with torch.inference_mode():
        for batch, indices in loader:
            outputs = model([image.to(device, non_blocking=True) for image in batch])
            for output, index in zip(outputs, indices.tolist()):
                x0, y0 = tiles[index]
                boxes = output["boxes"].float().cpu().numpy()
                if not len(boxes):
                    continue
                cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
                (xlo, xhi), (ylo, yhi) = x_cores[x0], y_cores[y0]
                own = ((cx + x0 - rx0 >= xlo) & (cx + x0 - rx0 < xhi) & (cy + y0 - ry0 >= ylo)
                       & (cy + y0 - ry0 < yhi))
                frame = pd.DataFrame(boxes[own] + np.array([x0, y0, x0, y0], dtype=np.float32),
                                     columns=["box_x0", "box_y0", "box_x1", "box_y1"])
                frame["score"] = output["scores"].float().cpu().numpy()[own]
                frame["label"] = output["labels"].cpu().numpy()[own]
                rows.append(frame)
            progress.advance(len(indices))
    progress.finish()
    if not rows:
        return pd.DataFrame(columns=["box_x0", "box_y0", "box_x1", "box_y1", "score", "label"])
    found = pd.concat(rows, ignore_index=True)
    keep = batched_nms(torch.tensor(found[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy()),
                       torch.tensor(found["score"].to_numpy()), torch.tensor(found["label"].to_numpy()),
                       config.nms_iou).numpy()
    log.info("%d detections above score %.2f, %d after merging tiles", len(found), config.score_threshold, len(keep))
    return found.iloc[np.sort(keep)].reset_index(drop=True)


# --------------------------------------------------------------------------
# measurement


def _gaussian(params, xx, yy):
    amplitude, x0, y0, log_a, log_b, theta = params
    a, b = np.exp(log_a), np.exp(log_b)
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = xx - x0, yy - y0
    u, v = dx * c + dy * s, -dx * s + dy * c
    return amplitude * np.exp(-0.5 * ((u / a) ** 2 + (v / b) ** 2))


def _moments(stamp, xx, yy):
    weights = np.clip(stamp, 0, None)
    total = weights.sum()
    if total <= 0:
        return None
    cx, cy = (weights * xx).sum() / total, (weights * yy).sum() / total
    cov = np.array([[(weights * (xx - cx) ** 2).sum(), (weights * (xx - cx) * (yy - cy)).sum()],
                    [(weights * (xx - cx) * (yy - cy)).sum(), (weights * (yy - cy) ** 2).sum()]]) / total
    return cx, cy, cov


def _fit_one(stamp: np.ndarray, xx: np.ndarray, yy: np.ndarray, guess_xy, beam_sigma_px: float):
    """(x, y, peak, pixel covariance, ok) of a Gaussian fitted to ``stamp``."""
    finite = np.isfinite(stamp)
    if finite.sum() < 6:
        return None
    values, px, py = stamp[finite], xx[finite], yy[finite]
    peak = float(values.max())
    if peak <= 0:
        return None
    start = [peak, guess_xy[0], guess_xy[1], np.log(beam_sigma_px), np.log(beam_sigma_px), 0.0]
    lower = [0.0, px.min() - 0.5, py.min() - 0.5, np.log(0.3 * beam_sigma_px), np.log(0.3 * beam_sigma_px), -np.pi]
    upper = [peak * 5 + 1e-12, px.max() + 0.5, py.max() + 0.5, np.log(50 * beam_sigma_px + 1),
             np.log(50 * beam_sigma_px + 1), np.pi]
    try:
        fit = least_squares(lambda p: _gaussian(p, px, py) - values, start, bounds=(lower, upper),
                            x_scale=[peak, 1, 1, 1, 1, 1], max_nfev=200)
    except (ValueError, RuntimeError):
        fit = None
    if fit is not None and fit.success:
        amplitude, x0, y0, log_a, log_b, theta = fit.x
        a, b, c, s = np.exp(log_a), np.exp(log_b), np.cos(theta), np.sin(theta)
        rotation = np.array([[c, -s], [s, c]])
        cov = rotation @ np.diag([a * a, b * b]) @ rotation.T
        return x0, y0, amplitude, cov, True
    moments = _moments(np.where(finite, stamp, 0.0), xx, yy)
    if moments is None:
        return None
    cx, cy, cov = moments
    return cx, cy, peak, cov, False


#: what :func:`measure_sources` returns, in order
MEASURED_COLUMNS = ["ra", "dec", "ra_core", "dec_core", "flux", "peak_flux", "major_fwhm", "minor_fwhm", "pa", "x", "y",
                    "fit_ok", "pb"]


def measure_sources(image_path: str | Path, detections: pd.DataFrame, *, background: float = 0.0,
                    fit_margin: int = 2, plane=None, primary_beam: str | Path | None = None) -> pd.DataFrame:
    """Position, flux and shape of each detected box, measured on the image.

    ``detections`` has parent-image boxes ``box_x0..box_y1`` (COCO continuous
    coordinates). Returns the schema columns plus ``x``, ``y`` (0-based
    pixels), ``fit_ok``, ``pb``.
    """
    out = []
    with open_image(image_path, plane=plane) as image:
        ny, nx = image.shape
        if image.beam is None:
            raise ValueError(f"{image_path}: no restoring beam in the header; measuring fluxes needs it")
        wcs, beam = image.wcs, image.beam
        jac0 = pixel_jacobian(wcs, [nx / 2], [ny / 2])[0]
        pix_arcsec = float(np.sqrt(abs(np.linalg.det(jac0))))
        beam_cov_sky = covariance_from_ellipse(beam.major, beam.minor, beam.pa)
        inv0 = np.linalg.inv(jac0)
        beam_cov_pix = inv0 @ beam_cov_sky @ inv0.T
        beam_sigma_px = float(np.sqrt(np.sqrt(np.linalg.det(beam_cov_pix))))
        beam_area_px = 2 * np.pi * np.sqrt(np.linalg.det(beam_cov_pix))
        progress = Progress("measuring detections", len(detections), unit="sources")
        for det in detections.itertuples():
            # continuous box -> pixel index range (pixel i covers [i, i+1))
            i0 = max(int(np.floor(det.box_x0)) - fit_margin, 0)
            i1 = min(int(np.ceil(det.box_x1)) + fit_margin, nx)
            j0 = max(int(np.floor(det.box_y0)) - fit_margin, 0)
            j1 = min(int(np.ceil(det.box_y1)) + fit_margin, ny)
            stamp = image.read(j0, j1, i0, i1).astype(np.float64) - background
            yy, xx = np.mgrid[j0:j1, i0:i1].astype(np.float64)
            guess = ((det.box_x0 + det.box_x1) / 2 - 0.5, (det.box_y0 + det.box_y1) / 2 - 0.5)
            result = _fit_one(stamp, xx, yy, guess, beam_sigma_px)
            if result is None:
                x, y, peak, cov, ok = guess[0], guess[1], float(np.nanmax(stamp)), beam_cov_pix, False
            else:
                x, y, peak, cov, ok = result
            flux = peak * 2 * np.pi * np.sqrt(max(np.linalg.det(cov), 1e-12)) / beam_area_px
            out.append((x, y, peak, flux, deconvolve(cov, beam_cov_pix), ok))
            progress.advance()
        progress.finish()
    if not out:
        return pd.DataFrame(columns=MEASURED_COLUMNS)
    x = np.array([o[0] for o in out])
    y = np.array([o[1] for o in out])
    ra, dec = wcs.pixel_to_world_values(x, y)
    jac = pixel_jacobian(wcs, x, y)
    cov_sky = jac @ np.stack([o[4] for o in out]) @ np.swapaxes(jac, -1, -2)
    major, minor, pa = ellipse_from_covariance(cov_sky)
    pb = sample_image(primary_beam, ra, dec) if primary_beam else np.ones(len(out))
    flux = np.array([o[3] for o in out]) / pb
    log.info("measured %d detections (%d Gaussian fits, %d moments); pixel %.3f arcsec", len(out),
             sum(o[5] for o in out), sum(not o[5] for o in out), pix_arcsec)
    return pd.DataFrame({
        "ra": normalise_ra(ra), "dec": dec, "ra_core": normalise_ra(ra), "dec_core": dec, "flux": flux,
        "peak_flux": np.array([o[2] for o in out]) / pb, "major_fwhm": major, "minor_fwhm": minor, "pa": pa,
        "x": x, "y": y, "fit_ok": [o[5] for o in out], "pb": pb,
    })


# --------------------------------------------------------------------------
# the stage


def predict_field(model_path: str | Path, image_path: str | Path, sample_path: str | Path, output: str | Path,
                  submission: str | Path, summary_path: str | Path, *, config: PredictConfig, views: ViewConfig,
                  primary_beam: str | Path | None = None, device_name: str = "auto", plane=None,
                  region: tuple[int, int, int, int] | None = None) -> dict:
    """Detect, measure and write the catalogue of one field."""
    from .train import load_trained

    device = choose_device(device_name)
    model, settings = load_trained(model_path, device)
    model.roi_heads.score_thresh = config.score_threshold
    categories = {int(k): int(v) for k, v in settings["categories"].items()}
    sample = np.load(sample_path)
    vmin, vmax = field_interval(sample, views)
    field_rms, background = robust_rms(sample) if sample.size else (float("nan"), 0.0)
    with open_image(image_path, plane=plane) as image:
        shape = image.shape
    started = time.monotonic()
    detections = _detect(model, Path(image_path), shape=shape, config=config, vmin=vmin, vmax=vmax, views=views,
                         device=device, plane=plane, region=region)
    detect_seconds = time.monotonic() - started
    measured = measure_sources(image_path, detections, background=background, fit_margin=config.fit_margin,
                               plane=plane, primary_beam=primary_beam)
    catalogue = pd.concat([measured.reset_index(drop=True), detections.reset_index(drop=True)], axis=1)
    catalogue.insert(0, "source_id", np.arange(1, len(catalogue) + 1, dtype=np.int64))
    catalogue["size_class"] = np.int8(2)
    catalogue["class_id"] = catalogue["label"].map(categories).astype(np.int16)
    catalogue["local_rms"] = field_rms  # the field's robust noise (no rms map at this stage)
    catalogue = catalogue[list(SOURCE_COLUMNS) + [c for c in catalogue.columns if c not in SOURCE_COLUMNS]]
    write_parquet(catalogue, output, columns=SOURCE_COLUMNS, metadata={
        "image": str(image_path), "model": str(model_path), "vmin": vmin, "vmax": vmax, "background": background,
        "boxes": "box_x0..box_y1: parent-image COCO continuous coordinates"})
    write_submission(catalogue, submission)
    ny, nx = shape
    rx0, ry0, rx1, ry1 = region if region else (0, 0, nx, ny)
    megapixels = (rx1 - rx0) * (ry1 - ry0) / 1e6
    summary = {"detections": int(len(catalogue)), "device": str(device), "detect_seconds": round(detect_seconds, 2),
               "megapixels": megapixels, "megapixels_per_second": round(megapixels / detect_seconds, 4),
               "gaussian_fits": int(catalogue["fit_ok"].sum()) if len(catalogue) else 0}
    write_json(summary_path, summary)
    log.info("predict: %s", summary)
    return summary


def detect_coco_split(model_path: str | Path, coco_json: str | Path, detections_path: str | Path,
                      metrics_path: str | Path, *, score_threshold: float = 0.05, device_name: str = "auto",
                      batch_size: int = 8) -> dict:
    """Run the model on the images of a COCO file and score it with COCOeval."""
    from .score import coco_map
    from .torch_datasets import CocoRadioDetection
    from .train import load_trained

    device = choose_device(device_name)
    model, settings = load_trained(model_path, device)
    model.roi_heads.score_thresh = score_threshold
    categories = {int(k): int(v) for k, v in settings["categories"].items()}
    dataset = CocoRadioDetection(coco_json)
    detections = []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            outputs = model([image.to(device) for image, _ in items])
            for (_, target), output in zip(items, outputs):
                for box, score, label in zip(output["boxes"].tolist(), output["scores"].tolist(),
                                             output["labels"].tolist()):
                    detections.append({"image_id": target["image_id"], "category_id": categories[label],
                                       "bbox": [round(box[0], 3), round(box[1], 3), round(box[2] - box[0], 3),
                                                round(box[3] - box[1], 3)], "score": round(score, 5)})
    write_json(detections_path, detections, indent=None)
    metrics = coco_map(coco_json, detections)
    write_json(metrics_path, metrics)
    log.info("COCO %s: %s", Path(coco_json).name, metrics)
    return metrics
