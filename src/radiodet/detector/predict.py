"""Run a trained detector over whole fields and turn its detections into a catalogue.

1. **Detection.** The field is read one band of rows at a time (each band
   once, by DataLoader workers, while the model runs) and cut into
   overlapping tiles. ``snr`` models (the heatmap) see each tile minus its
   median, divided by its robust (MAD) noise; ``view`` models (Faster R-CNN)
   see it scaled as the training views were (the field's interval and
   stretch). Each tile keeps the detections whose centre lies in its *core*
   (the part closer to its centre than to any neighbour's, so each patch of
   sky is decided by one tile, away from tile edges); box models are merged
   across tiles with ``torchvision.ops.batched_nms`` as well.
2. **Measurement.** Every detection is measured on the image itself, in
   bands of rows, by the batched Gaussian fit of
   :mod:`radiodet.detector.measure` (started at the detector's position and
   shape). Where the source is bright enough (``fit_snr``) the fitted position,
   flux and (free) shape are written, the flux scaled by the model's ``flux_scale`` (the training catalogue /
   image flux ratio measured after training); fainter sources keep the
   network's own estimate of flux, sizes and PA, which learned from the
   training catalogue what a free fit of a 3-5 sigma source cannot tell.
   Sizes are deconvolved from the restoring beam and mapped to the sky through
   the WCS Jacobian (FWHM in arcsec, PA east of north); fluxes are divided by
   the primary-beam response when a primary beam is given.
3. **Output.** A Parquet catalogue in the schema of :mod:`radiodet.schema`
   plus the detector's columns (score, pixel position, network estimates,
   fit flags), and the SDC1 submission format.

Nothing here imports training or scoring code.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import batched_nms

from ..atomic import write_json
from ..catalogues.sdc1 import write_submission
from ..configuration import schema_config
from ..geometry import (
    covariance_from_ellipse,
    deconvolve,
    ellipse_from_covariance,
    normalise_ra,
    pixel_covariance,
    pixel_jacobian,
    sky_to_pixel_covariance,
)
from ..images import open_image, robust_rms, sample_image
from ..logs import Progress
from ..schema import SOURCE_COLUMNS, write_parquet
from ..tiling import axis_starts
from ..views import ViewConfig, field_interval, scale
from .distributed import choose_device, worker_dies_with_parent
from .measure import MeasureConfig, fit_sources
from .models import kind_module, model_from_checkpoint, pad_to_multiple

__all__ = ["PredictConfig", "tile_cores", "detect_field", "measure_detections", "predict_field",
           "CATALOGUE_EXTRA_COLUMNS"]

log = logging.getLogger(__name__)


@schema_config("predict", nested={"measure": MeasureConfig})
class PredictConfig:
    """Config ``predict`` (the schema documents each key and holds the defaults)."""

    tile: int
    min_overlap: int
    batch_size: int
    min_score: float
    nms_iou: float
    workers: int
    band_rows: int
    fit_snr: float
    coco_score_threshold: float
    measure: MeasureConfig


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


def _starts(lo: int, hi: int, size: int, overlap: int) -> list[int]:
    """Tile starts covering [lo, hi); one (padded) tile when the range is shorter than a tile."""
    starts = axis_starts(hi - lo, size, overlap)
    return [lo + s for s in starts] if starts else [lo]


class _Bands(Dataset):
    """One band of rows per item, cut into model-ready tiles (read lazily; each worker opens the image)."""

    def __init__(self, path: Path, plane, ys: list[int], xs: list[int], size: int, input_kind: str,
                 view: tuple[float, float, ViewConfig] | None):
        self.path, self.plane, self.ys, self.xs, self.size = path, plane, ys, xs, size
        self.input_kind, self.view = input_kind, view
        self._context = self._image = None

    def __len__(self) -> int:
        return len(self.ys)

    def __getitem__(self, index: int):
        if self._image is None:
            self._context = open_image(self.path, plane=self.plane)
            self._image = self._context.__enter__()
        y0, size = self.ys[index], self.size
        rows = self._image.read(y0, y0 + size)
        tiles = np.zeros((len(self.xs), 1, size, size), np.float32)
        rms = np.ones(len(self.xs))
        background = np.zeros(len(self.xs))
        for i, x0 in enumerate(self.xs):
            part = rows[:, x0:x0 + size]
            if self.input_kind == "snr":
                rms[i], background[i] = robust_rms(part)
                if np.isfinite(rms[i]) and rms[i] > 0:
                    part = (part - np.float32(background[i])) / np.float32(rms[i])
                tiles[i, 0, :part.shape[0], :part.shape[1]] = np.nan_to_num(part, nan=0.0, posinf=0.0, neginf=0.0)
            else:
                vmin, vmax, views = self.view
                tiles[i, 0, :part.shape[0], :part.shape[1]] = scale(part, vmin, vmax, views)
        return torch.from_numpy(tiles), torch.from_numpy(rms), torch.from_numpy(background), index

    def close(self) -> None:
        """Close the image (this process's handle; workers close theirs when they exit)."""
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = self._image = None

    def __del__(self):
        self.close()


def detect_field(model, kind, image_path: str | Path, *, config: PredictConfig, device: torch.device, plane=None,
                 region: tuple[int, int, int, int] | None = None,
                 view: tuple[float, float, ViewConfig] | None = None) -> pd.DataFrame:
    """Detections of the whole field (or ``region`` = x0, y0, x1, y1) above ``config.min_score``.

    Returns a table with ``x, y`` (0-based parent pixels), ``score``,
    ``label`` (class index), ``rms`` and ``background`` (the tile's noise and
    median, image unit; NaN/0 for view models) and the model's own estimates.
    """
    image_path = Path(image_path)
    with open_image(image_path, plane=plane) as image:
        ny, nx = image.shape
    rx0, ry0, rx1, ry1 = region if region else (0, 0, nx, ny)
    size = config.tile
    xs, ys = _starts(rx0, rx1, size, config.min_overlap), _starts(ry0, ry1, size, config.min_overlap)
    x_cores = dict(zip(xs, tile_cores([x - rx0 for x in xs], size, rx1 - rx0)))
    y_cores = dict(zip(ys, tile_cores([y - ry0 for y in ys], size, ry1 - ry0)))
    bands = _Bands(image_path, plane, ys, xs, size, kind.INPUT, view)
    loader = DataLoader(bands, batch_size=None, num_workers=config.workers, worker_init_fn=worker_dies_with_parent)
    multiple = getattr(model, "stride_multiple", 1)
    frames = []
    progress = Progress(f"detection in {image_path.name}", len(xs) * len(ys), unit="tiles")
    with torch.inference_mode(), contextlib.closing(bands):
        for tiles, rms, background, index in loader:
            y0 = ys[int(index)]
            for start in range(0, len(xs), config.batch_size):
                batch = pad_to_multiple(tiles[start:start + config.batch_size], multiple).to(device)
                for offset, found in enumerate(kind.detect(model, batch, min_score=config.min_score)):
                    t = start + offset
                    x0 = xs[t]
                    frame = pd.DataFrame(found)
                    if frame.empty:
                        continue
                    frame["x"] += x0
                    frame["y"] += y0
                    for column in ("box_x0", "box_x1"):
                        if column in frame:
                            frame[column] += x0
                    for column in ("box_y0", "box_y1"):
                        if column in frame:
                            frame[column] += y0
                    (xlo, xhi), (ylo, yhi) = x_cores[x0], y_cores[y0]
                    cx, cy = frame["x"] + 0.5 - rx0, frame["y"] + 0.5 - ry0
                    own = (cx >= xlo) & (cx < xhi) & (cy >= ylo) & (cy < yhi)
                    frame = frame[own]
                    frame["rms"] = float(rms[t]) if kind.INPUT == "snr" else np.nan
                    frame["background"] = float(background[t]) if kind.INPUT == "snr" else 0.0
                    frames.append(frame)
            progress.advance(len(xs))
    progress.finish()
    if not frames:
        return pd.DataFrame(columns=["x", "y", "score", "label", "rms", "background"])
    found = pd.concat(frames, ignore_index=True)
    if "box_x0" in found:
        boxes = torch.tensor(found[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy())
        keep = batched_nms(boxes, torch.tensor(found["score"].to_numpy()), torch.tensor(found["label"].to_numpy()),
                           config.nms_iou).numpy()
        found = found.iloc[np.sort(keep)].reset_index(drop=True)
    log.info("%d detections with score >= %.2f in %s", len(found), config.min_score, image_path.name)
    return found.reset_index(drop=True)


def _shape_guess(detections: pd.DataFrame, beam_cov: np.ndarray, n_sigma: float = 2.5) -> np.ndarray:
    """Intrinsic pixel covariance to start each fit from: the network's estimate, or the box's."""
    n = len(detections)
    if "major_px" in detections:
        return pixel_covariance(detections["major_px"].to_numpy(), detections["minor_px"].to_numpy(),
                                detections["angle"].to_numpy())
    if "box_x0" in detections:
        cov = np.zeros((n, 2, 2))
        cov[:, 0, 0] = ((detections["box_x1"] - detections["box_x0"]).to_numpy() / (2 * n_sigma)) ** 2
        cov[:, 1, 1] = ((detections["box_y1"] - detections["box_y0"]).to_numpy() / (2 * n_sigma)) ** 2
        return deconvolve(cov, beam_cov)
    return np.zeros((n, 2, 2))


def measure_detections(image_path: str | Path, detections: pd.DataFrame, *, beam_cov: np.ndarray,
                       config: PredictConfig, plane=None, field_noise: float | None = None) -> dict[str, np.ndarray]:
    """Batched Gaussian fits of all detections, one band of rows at a time.

    A band's fit includes the detections of a margin around it (their models
    are subtracted from its sources' stamps); only the band's own detections
    keep their results. Returns arrays in detection order: ``x, y``,
    ``amplitude`` (image unit), ``cov`` (total pixel covariance), ``snr``,
    ``free``, ``converged``.
    """
    n = len(detections)
    out = {"x": np.full(n, np.nan), "y": np.full(n, np.nan), "amplitude": np.full(n, np.nan),
           "cov": np.full((n, 2, 2), np.nan), "snr": np.full(n, np.nan), "free": np.zeros(n, bool),
           "converged": np.zeros(n, bool)}
    if n == 0:
        return out
    x, y = detections["x"].to_numpy(float), detections["y"].to_numpy(float)
    rms = detections["rms"].to_numpy(float) if "rms" in detections else np.full(n, np.nan)
    if field_noise is not None:
        rms = np.where(np.isfinite(rms) & (rms > 0), rms, field_noise)
    background = detections["background"].to_numpy(float) if "background" in detections else np.zeros(n)
    guess = _shape_guess(detections, beam_cov)
    margin = config.measure.max_radius + 2
    row = np.rint(y).astype(np.int64)
    order = np.argsort(row, kind="stable")
    sorted_rows = row[order]
    with open_image(image_path, plane=plane) as image:
        ny = image.shape[0]
        progress = Progress(f"measuring {n} detections", n, unit="sources")
        for b0 in range(0, ny, config.band_rows):
            b1 = min(b0 + config.band_rows, ny)
            lo, hi = np.searchsorted(sorted_rows, [b0, b1])
            if hi == lo:
                continue
            wlo, whi = np.searchsorted(sorted_rows, [b0 - margin, b1 + margin])
            members = order[wlo:whi]
            r0, r1 = max(b0 - 2 * margin, 0), min(b1 + 2 * margin, ny)
            pixels = image.read(r0, r1)
            fit = fit_sources(pixels, x[members], y[members] - r0, rms[members], beam_cov, shape_guess=guess[members],
                              background=background[members], config=config.measure)
            core = (row[members] >= b0) & (row[members] < b1)
            target = members[core]
            out["x"][target], out["y"][target] = fit.x[core], fit.y[core] + r0
            out["amplitude"][target], out["cov"][target] = fit.amplitude[core], fit.cov[core]
            out["snr"][target], out["free"][target] = fit.snr[core], fit.free[core]
            out["converged"][target] = fit.converged[core]
            progress.advance(int(core.sum()))
        progress.finish()
    return out


#: the detector's columns after the schema's, in the Parquet catalogue
CATALOGUE_EXTRA_COLUMNS = ["score", "label", "x", "y", "snr", "rms", "pb", "fit_free", "fit_converged",
                           "flux_source", "flux_fit", "flux_network"]


def _catalogue(detections: pd.DataFrame, fits: dict, *, wcs, beam_cov: np.ndarray, config: PredictConfig,
               category_ids: list[int], flux_scale: float, primary_beam, field_noise: float) -> pd.DataFrame:
    """Combine the network's estimates and the fits into schema columns."""
    n = len(detections)
    fitted = np.isfinite(fits["amplitude"]) & (fits["amplitude"] > 0)
    has_network = "log_flux" in detections
    # the fit where the source is bright enough (or the model estimates nothing itself)
    use_fit = fitted & fits["converged"] & ((fits["snr"] >= config.fit_snr) | (not has_network))
    x = np.where(use_fit, fits["x"], detections["x"].to_numpy(float))
    y = np.where(use_fit, fits["y"], detections["y"].to_numpy(float))
    ra, dec = wcs.pixel_to_world_values(x, y)
    ra, dec = np.atleast_1d(ra), np.atleast_1d(dec)
    jacobian = pixel_jacobian(wcs, x, y) if n else np.zeros((0, 2, 2))
    pb = sample_image(primary_beam, ra, dec) if primary_beam else np.ones(n)
    rms = detections["rms"].to_numpy(float) if "rms" in detections else np.full(n, np.nan)
    rms = np.where(np.isfinite(rms) & (rms > 0), rms, field_noise)
    total = np.where(fitted[:, None, None], fits["cov"], beam_cov)
    with np.errstate(divide="ignore", invalid="ignore"):
        flux_fit = np.where(fitted, fits["amplitude"] * np.sqrt(np.linalg.det(total) / np.linalg.det(beam_cov)),
                            np.nan) * flux_scale / pb
    flux_network = (np.exp(detections["log_flux"].to_numpy(float)) * rms / pb) if has_network else np.full(n, np.nan)
    if not has_network:  # nothing to fall back on: the fit's fixed-shape result where it did not converge
        use_fit = fitted
    flux = np.where(use_fit, flux_fit, flux_network)
    # shapes: the free fit where it is used, else the network's estimate (or the fit's held shape)
    use_fit_shape = (use_fit & fits["free"]) | (not has_network)
    own = np.where(use_fit_shape[:, None, None], deconvolve(total, beam_cov), _shape_guess(detections, beam_cov))
    major, minor, pa = ellipse_from_covariance(jacobian @ own @ np.swapaxes(jacobian, -1, -2)) if n else (
        np.zeros(0), np.zeros(0), np.zeros(0))
    label = detections["label"].to_numpy(np.int64)
    catalogue = pd.DataFrame({
        "source_id": np.arange(1, n + 1, dtype=np.int64), "ra": normalise_ra(ra), "dec": dec,
        "ra_core": normalise_ra(ra), "dec_core": dec, "flux": flux,
        "peak_flux": np.where(fitted, fits["amplitude"] * flux_scale, np.nan) / pb,
        "major_fwhm": major, "minor_fwhm": minor, "pa": pa, "size_class": np.int8(2),
        "class_id": np.asarray(category_ids, np.int64)[label].astype(np.int16) if n else np.zeros(0, np.int16),
        "local_rms": rms,
        "score": detections["score"].to_numpy(float), "label": label, "x": x, "y": y, "snr": fits["snr"],
        "rms": rms, "pb": pb, "fit_free": fits["free"], "fit_converged": fits["converged"],
        "flux_source": np.where(use_fit, "fit", "network"), "flux_fit": flux_fit, "flux_network": flux_network,
    })
    for column in ("box_x0", "box_y0", "box_x1", "box_y1"):
        if column in detections:
            catalogue[column] = detections[column].to_numpy(float)
    return catalogue


def predict_field(model_path: str | Path, image_path: str | Path, sample_path: str | Path, output: str | Path,
                  submission: str | Path, summary_path: str | Path, *, config: PredictConfig, views: ViewConfig,
                  primary_beam: str | Path | None = None, device_name: str = "auto", plane=None,
                  region: tuple[int, int, int, int] | None = None) -> dict:
    """Detect, measure and write the catalogue of one field.

    Parameters
    ----------
    model_path : path
        ``model.pth`` written by :mod:`radiodet.detector.train`.
    image_path : path
        The field's FITS image (the plane ``plane`` of a cube).
    sample_path : path
        The field's pixel sample (cutout stage): the view scaling of ``view``
        models and the fallback noise.
    output, submission, summary_path : path
        The Parquet catalogue, the SDC1 submission, the JSON summary.
    primary_beam : path, optional
        Fluxes are divided by its response at each source.
    region : (x0, y0, x1, y1), optional
        Pixel box (0-based, end exclusive) to predict over; the whole field by default.

    Returns
    -------
    dict
        The summary: detections, seconds and megapixels per second of each phase, sources measured per second.
    """
    started = time.monotonic()
    device = choose_device(device_name)
    model, settings = model_from_checkpoint(model_path)
    kind = kind_module(settings["network"]["kind"])
    model = kind.for_inference(model, device)
    sample = np.load(sample_path)
    field_rms, field_median = robust_rms(sample) if sample.size else (float("nan"), 0.0)
    view = (*field_interval(sample, views), views) if kind.INPUT == "view" else None
    with open_image(image_path, plane=plane) as image:
        shape, wcs, beam = image.shape, image.wcs, image.beam
    if beam is None:
        raise ValueError(f"{image_path}: no restoring beam in the header; measuring fluxes needs it")
    ny, nx = shape
    centre_jacobian = pixel_jacobian(wcs, [nx / 2], [ny / 2])[0]
    beam_cov = sky_to_pixel_covariance(covariance_from_ellipse(beam.major, beam.minor, beam.pa), centre_jacobian)
    detections = detect_field(model, kind, image_path, config=config, device=device, plane=plane, region=region,
                              view=view)
    if kind.INPUT == "view":
        detections["background"] = field_median
    detect_seconds = time.monotonic() - started
    fits = measure_detections(image_path, detections, beam_cov=beam_cov, config=config, plane=plane,
                              field_noise=field_rms)
    measure_seconds = time.monotonic() - started - detect_seconds
    flux_scale = float(settings.get("calibration", {}).get("flux_scale", 1.0))
    # in chunks: the per-source Jacobians and covariances of millions of detections add up;
    # the detections and fits are freed before the chunks are joined (at full SDC1 size
    # they would otherwise sit next to two copies of the catalogue)
    chunk = 500_000
    parts = [_catalogue(
        detections.iloc[i:i + chunk].reset_index(drop=True), {k: v[i:i + chunk] for k, v in fits.items()}, wcs=wcs,
        beam_cov=beam_cov, config=config, category_ids=settings["category_ids"], flux_scale=flux_scale,
        primary_beam=primary_beam, field_noise=field_rms) for i in range(0, max(len(detections), 1), chunk)]
    del detections, fits
    catalogue = pd.concat(parts, ignore_index=True)
    del parts
    catalogue["source_id"] = np.arange(1, len(catalogue) + 1, dtype=np.int64)
    write_parquet(catalogue, output, columns=SOURCE_COLUMNS, metadata={
        "image": str(image_path), "model": str(model_path), "kind": settings["network"]["kind"],
        "flux_scale": flux_scale, "coordinates": "x, y: 0-based parent pixels; box_*: COCO continuous"})
    write_submission(catalogue, submission)
    rx0, ry0, rx1, ry1 = region if region else (0, 0, nx, ny)
    megapixels = (rx1 - rx0) * (ry1 - ry0) / 1e6
    total = time.monotonic() - started
    summary = {"detections": int(len(catalogue)), "device": str(device), "kind": settings["network"]["kind"],
               "megapixels": megapixels, "detect_seconds": round(detect_seconds, 2),
               "detect_megapixels_per_second": round(megapixels / max(detect_seconds, 1e-9), 4),
               "measure_seconds": round(measure_seconds, 2),
               "sources_measured_per_second": round(len(catalogue) / max(measure_seconds, 1e-9), 1),
               "total_seconds": round(total, 2), "flux_scale": flux_scale,
               "fluxes_from_fit": int((catalogue["flux_source"] == "fit").sum()) if len(catalogue) else 0,
               "free_shape_fits": int(catalogue["fit_free"].sum()) if len(catalogue) else 0}
    write_json(summary_path, summary)
    log.info("predict: %s", summary)
    return summary


def field_sample(image_path: str | Path, *, plane=None, rows: int = 64) -> np.ndarray:
    """A regular subsample of the field's pixels (every ``rows``-th row), as the cutout stage keeps one."""
    with open_image(image_path, plane=plane) as image:
        ny = image.shape[0]
        return np.concatenate([image.read(y, y + 1).ravel() for y in range(0, ny, rows)])


def get_args_parser():
    import argparse

    parser = argparse.ArgumentParser(description="Run a trained radiodet detector over a FITS image (a whole field)")
    parser.add_argument("--model", required=True, help="model.pth written by radiodet.detector.train")
    parser.add_argument("--image", required=True, help="FITS image (the first plane of a cube)")
    parser.add_argument("--out", required=True, help="output prefix: <out>.parquet, <out>.sdc1.txt, <out>.json")
    parser.add_argument("--sample", default=None, help="the field's pixel sample (.npy); read from the image if absent")
    parser.add_argument("--primary-beam", default=None, help="primary-beam FITS to divide fluxes by")
    parser.add_argument("--config-json", default="{}", help='the config\'s "predict" section as JSON')
    parser.add_argument("--views-json", default="{}", help='the config\'s "views" section as JSON (view models)')
    parser.add_argument("--region", default=None, help="x0,y0,x1,y1: predict over this pixel box only")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    return parser


def main(argv=None) -> dict:
    import json
    import tempfile

    args = get_args_parser().parse_args(argv)
    out = Path(args.out)
    sample = args.sample
    with tempfile.TemporaryDirectory() as scratch:
        if sample is None:
            sample = Path(scratch) / "sample.npy"
            np.save(sample, field_sample(args.image))
        region = tuple(int(v) for v in args.region.split(",")) if args.region else None
        return predict_field(args.model, args.image, sample, out.with_suffix(".parquet"),
                             out.with_suffix(".sdc1.txt"), out.with_suffix(".json"),
                             config=PredictConfig.from_config(json.loads(args.config_json)),
                             views=ViewConfig.from_config(json.loads(args.views_json)),
                             primary_beam=args.primary_beam, device_name=args.device, region=region)


if __name__ == "__main__":
    from ..logs import configure

    with configure(None):
        main()
