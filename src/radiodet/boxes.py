"""Pixel bounding boxes from sky positions and shapes.

For each kept (source, cutout) pair:

1. the source position goes through the parent image's WCS to 0-based pixel
   coordinates, then into the cutout by subtracting the cutout's offset
   (exactly what the cutout's own WCS does: its CRPIX is the parent's minus
   the offset);
2. its intrinsic Gaussian (major/minor FWHM, PA east of north) is convolved
   with the restoring beam (covariances add) and mapped into pixel space with
   the local Jacobian of the WCS, which handles the RA axis running to the
   left, pixel rotation/skew and projection distortion;
3. the box is the axis-aligned envelope of the ellipse at ``n_sigma`` sigma
   (``boxes.extent: sigma``) or of the ellipse whose full axes are ``scale`` x
   FWHM (``boxes.extent: fwhm``; ``scale`` FWHM = ``scale x 1.1774`` sigma
   half-width). The default 2.5 sigma is the SDC1 scorer's definition of the
   largest angular size (LAS = 5 sigma), so an SDC1 LAS source's box spans
   its LAS (plus the beam);
4. the box is clipped to the cutout and dropped when less than
   ``min_visible_fraction`` of its area is inside.

Box coordinates follow COCO's continuous image coordinates with the array
stored unflipped (row 0 = FITS row 0): pixel (i, j) covers [i, i + 1) x
[j, j + 1), so a source at 0-based FITS pixel (x, y) of the cutout sits at
COCO (x + 0.5, y + 0.5). ``bbox_x, bbox_y`` is the corner with the smallest
coordinates.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from .atomic import write_json
from .errors import ConfigError, InputError
from .geometry import (
    FWHM_PER_SIGMA,
    covariance_from_ellipse,
    ellipse_from_covariance,
    envelope_half_widths,
    pixel_jacobian,
    sky_to_pixel_covariance,
)
from .manifest import field_beam, field_wcs
from .schema import (
    decoded_strings,
    field_pairs,
    fields_end_to_end,
    key_index,
    read_frame,
    read_pairs,
    read_sources,
    write_parquet,
)

__all__ = ["BOX_COLUMNS", "n_sigma_for", "pixel_ellipses", "clip_boxes", "make_boxes"]

log = logging.getLogger(__name__)

BOX_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "source_id": (pa.int64(), "", "source id"),
    "cutout_id": (pa.string(), "", "cutout id"),
    "field": (pa.string(), "", "field"),
    "split": (pa.string(), "", "split of the cutout"),
    "x": (pa.float64(), "pix", "source x in the cutout, 0-based FITS pixel (COCO x - 0.5)"),
    "y": (pa.float64(), "pix", "source y in the cutout, 0-based FITS pixel (COCO y - 0.5)"),
    "bbox_x": (pa.float64(), "pix", "COCO box left edge (clipped)"),
    "bbox_y": (pa.float64(), "pix", "COCO box edge at the smallest y (clipped)"),
    "bbox_w": (pa.float64(), "pix", "COCO box width (clipped)"),
    "bbox_h": (pa.float64(), "pix", "COCO box height (clipped)"),
    "visible_fraction": (pa.float64(), "", "clipped box area / full box area"),
    "ellipse_major": (pa.float64(), "pix", "convolved FWHM along the major axis, in pixels"),
    "ellipse_minor": (pa.float64(), "pix", "convolved FWHM along the minor axis, in pixels"),
    "ellipse_angle": (pa.float64(), "deg", "major axis angle from +x towards +y, in pixel coordinates"),
    "intrinsic_major": (pa.float64(), "pix", "intrinsic (beam-deconvolved) FWHM along the major axis, in pixels"),
    "intrinsic_minor": (pa.float64(), "pix", "intrinsic FWHM along the minor axis, in pixels"),
    "intrinsic_angle": (pa.float64(), "deg", "intrinsic major axis angle from +x towards +y, in pixel coordinates"),
    "ra": (pa.float64(), "deg", "source RA"),
    "dec": (pa.float64(), "deg", "source Dec"),
    "class_id": (pa.int16(), "", "class label"),
    "flux": (pa.float64(), "Jy", "integrated flux density (catalogue)"),
    "snr": (pa.float64(), "", "signal-to-noise used by the filter"),
    "rms": (pa.float64(), "Jy/beam", "local noise used by the filter (image unit)"),
    "pb": (pa.float64(), "", "primary-beam response at the source (1 without a primary beam)"),
}


def n_sigma_for(extent: str, scale: float) -> float:
    """Half-width of the box ellipse in Gaussian sigmas."""
    if extent == "sigma":
        return float(scale)
    if extent == "fwhm":
        return float(scale) * FWHM_PER_SIGMA / 2.0
    raise ConfigError(f"boxes.extent must be 'sigma' or 'fwhm', got {extent!r}")


def pixel_ellipses(wcs, ra, dec, major_fwhm, minor_fwhm, pa, beam, *,
                   intrinsic: bool = False) -> tuple[np.ndarray, ...]:
    """Parent pixel positions (x, y) and pixel covariances (N, 2, 2) of sources.

    Sizes in arcsec (intrinsic FWHM), PA degrees east of north, ``beam`` a
    :class:`radiodet.images.Beam`. The covariance is the source convolved
    with the beam; ``intrinsic=True`` also returns the source's own pixel
    covariance, unconvolved, as a fourth value.
    """
    x, y = wcs.world_to_pixel_values(np.asarray(ra, float), np.asarray(dec, float))
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    jacobian = pixel_jacobian(wcs, x, y)
    source = covariance_from_ellipse(major_fwhm, minor_fwhm, pa)
    cov_pix = sky_to_pixel_covariance(source + covariance_from_ellipse(beam.major, beam.minor, beam.pa), jacobian)
    if intrinsic:
        return x, y, cov_pix, sky_to_pixel_covariance(source, jacobian)
    return x, y, cov_pix


def clip_boxes(cx, cy, hx, hy, width, height):
    """Clip boxes centred at (cx, cy) with half-widths (hx, hy) to the image.

    All in COCO continuous coordinates. Returns (x0, y0, w, h, visible
    fraction); a box entirely outside has w = h = 0 and fraction 0.
    """
    x0, x1 = np.clip(cx - hx, 0, width), np.clip(cx + hx, 0, width)
    y0, y1 = np.clip(cy - hy, 0, height), np.clip(cy + hy, 0, height)
    w, h = x1 - x0, y1 - y0
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where((hx > 0) & (hy > 0), (w * h) / (4 * hx * hy), 0.0)
    return x0, y0, w, h, fraction


def make_boxes(filtered_path: str | Path, sources_path: str | Path, manifest_paths: dict[str, str | Path],
               output: str | Path, summary_path: str | Path, *, extent: str = "sigma", scale: float = 2.5,
               min_visible_fraction: float = 0.5) -> dict:
    """Boxes for the kept pairs of ``filtered_path``; writes Parquet + summary.

    Parameters
    ----------
    filtered_path, sources_path : str or Path
        The filter stage's pairs and the ingested catalogue.
    manifest_paths : dict
        {field: manifest} (the field's WCS and beam; cutout origins).
    output, summary_path : str or Path
        Boxes (Parquet: centre ``x, y`` in 0-based cutout pixels, pixel
        centres at integers; ``bbox_*`` in COCO's pixel-edge convention, so
        a box centred on a source at x is centred on x + 0.5) and a JSON summary.
    extent : {"sigma", "fwhm"}
        Unit of ``scale``: the box covers ``scale`` sigma (or FWHM / 2) of the
        beam-convolved Gaussian along each axis.
    scale : float
        Half-size of the box in units of ``extent``.
    min_visible_fraction : float
        Boxes clipped by the cutout edge to less than this fraction of their
        area are dropped (and counted).

    Returns
    -------
    dict
        The summary written to ``summary_path``.
    """
    n_sigma = n_sigma_for(extent, scale)
    if not 0 < min_visible_fraction <= 1:
        raise ConfigError(f"boxes.min_visible_fraction must be in (0, 1], got {min_visible_fraction}")
    pairs = read_pairs(filtered_path, columns=["source_id", "cutout_id", "field", "snr", "rms", "pb", "keep"])
    pairs = pairs[pairs["keep"].to_numpy()].reset_index(drop=True)
    source_columns = ["ra", "dec", "major_fwhm", "minor_fwhm", "pa", "class_id", "flux"]
    sources = read_sources(sources_path, columns=["source_id", *source_columns])
    source_rows = key_index(sources["source_id"], path=sources_path, column="source_id")
    manifest_columns = ["x0", "y0", "width", "height"]
    parts: list[dict[str, np.ndarray]] = []
    splits: list[str] = []  # the manifests' splits, concatenated: a part's ``split`` codes index this
    for number, (field, manifest_path) in enumerate(manifest_paths.items()):
        manifest = read_frame(manifest_path, ["cutout_id", "split", *manifest_columns])
        wcs = field_wcs(manifest_path)
        joined = field_pairs(pairs, field, source_rows, manifest["cutout_id"], manifest_path=manifest_path)
        rows = joined.rows
        split_offset = len(splits)
        splits += manifest["split"].tolist()
        if not len(rows):
            continue
        for rows_in, table, path in ((joined.of_source, "sources", sources_path),
                                     (joined.of_cutout, "cutouts", manifest_path)):
            if (rows_in < 0).any():
                raise InputError(path, f"{int((rows_in < 0).sum())} kept pairs of {filtered_path} name {table} "
                                       "this file lacks (stale inputs: rerun the index and filter stages)")
        of_source = {name: sources[name].to_numpy()[joined.of_source] for name in source_columns}
        of_cutout = {name: manifest[name].to_numpy()[joined.of_cutout] for name in manifest_columns}
        x, y, cov, own = pixel_ellipses(wcs, of_source["ra"], of_source["dec"], of_source["major_fwhm"],
                                        of_source["minor_fwhm"], of_source["pa"], field_beam(manifest_path),
                                        intrinsic=True)
        x, y = x - of_cutout["x0"], y - of_cutout["y0"]
        hx, hy = envelope_half_widths(cov, n_sigma)
        bx, by, bw, bh, fraction = clip_boxes(x + 0.5, y + 0.5, hx, hy, of_cutout["width"], of_cutout["height"])
        major, minor, pa_pix = ellipse_from_covariance(cov)
        own_major, own_minor, own_pa_pix = ellipse_from_covariance(own)
        parts.append({
            "source_id": joined.source_id, "cutout_id": joined.cutout_code,
            "field": np.full(len(rows), number, dtype=np.int32), "split": joined.of_cutout + split_offset,
            "x": x, "y": y, "bbox_x": bx, "bbox_y": by, "bbox_w": bw, "bbox_h": bh, "visible_fraction": fraction,
            "ellipse_major": major, "ellipse_minor": minor, "ellipse_angle": np.mod(90.0 - pa_pix, 180.0),
            "intrinsic_major": own_major, "intrinsic_minor": own_minor,
            "intrinsic_angle": np.mod(90.0 - own_pa_pix, 180.0),
            **{name: of_source[name] for name in ("ra", "dec", "class_id", "flux")},
            **{name: pairs[name].to_numpy()[rows] for name in ("snr", "rms", "pb")}})
    column = fields_end_to_end(parts, {name: np.int64 if name in ("source_id", "cutout_id", "field", "split",
                                                                  "class_id") else float for name in BOX_COLUMNS})
    visible = column["visible_fraction"] >= min_visible_fraction
    dropped = int((~visible).sum())
    column = {name: values[visible] for name, values in column.items()}
    # the ids, fields and splits decoded from codes by Arrow: 900,000 boxes name a few thousand cutouts
    for name, names in (("cutout_id", pairs["cutout_id"].cat.categories), ("field", list(manifest_paths)),
                        ("split", splits)):
        column[name] = decoded_strings(column[name], names)
    boxes = pa.table({name: column[name] for name in BOX_COLUMNS})
    write_parquet(boxes, output, columns=BOX_COLUMNS, metadata={
        "extent": extent, "scale": scale, "n_sigma": n_sigma, "min_visible_fraction": min_visible_fraction,
        "coordinates": "COCO continuous, array unflipped: FITS pixel (x, y) 0-based -> (x + 0.5, y + 0.5)"})
    boxes = boxes.select(["split", "class_id", "bbox_w", "bbox_h"]).to_pandas()
    widths = np.maximum(boxes["bbox_w"], boxes["bbox_h"]).to_numpy(float) if len(boxes) else np.array([np.nan])
    summary = {
        "n_sigma": n_sigma, "boxes": int(len(boxes)), "dropped_mostly_outside": dropped,
        "per_split": {k: int(v) for k, v in boxes["split"].value_counts().sort_index().items()},
        "per_class": {str(k): int(v) for k, v in boxes["class_id"].value_counts().sort_index().items()},
        "box_size_px_percentiles": dict(zip(["p5", "p25", "p50", "p75", "p95", "max"],
                                            [float(v) for v in np.nanpercentile(widths, [5, 25, 50, 75, 95, 100])])),
    }
    write_json(summary_path, summary)
    log.info("boxes: %d written, %d dropped as mostly outside their cutout; per split %s", len(boxes), dropped,
             summary["per_split"])
    return summary
