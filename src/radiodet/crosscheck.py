"""Independent check that the boxes sit on the sources.

Another source list of the same image (for SDC1, PyBDSF's, which is a
measurement and not the truth the boxes were made from) says where the
bright sources really are. For each of its sources with peak / rms above a
threshold the check asks: is it inside an annotation box, mapped through the
*cutout's own FITS WCS* (not the parent WCS the boxes stage used), and how far
is it from the centre of the nearest box that contains it? A half-pixel or
one-pixel slip, a flipped axis or a wrongly wrapped RA shows up at once in
the median distance.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from .atomic import write_json
from .catalogues import read_catalogue
from .images import celestial_wcs
from .manifest import field_shape, field_wcs, read_manifests
from .schema import read_frame
from .tiling import PixelBox

__all__ = ["bright_reference", "box_coverage", "crosscheck"]

log = logging.getLogger(__name__)


def bright_reference(path: str | Path, fmt: str, min_peak_snr: float) -> pd.DataFrame:
    """Reference sources with catalogued peak / local rms >= ``min_peak_snr``.

    Needs ``peak_flux`` and ``local_rms`` (PyBDSF's Isl_rms) in the schema.
    """
    ref = read_catalogue(path, fmt)
    rms = ref["local_rms"].to_numpy()
    if not np.isfinite(rms).any():
        raise ValueError(f"{path}: the reference catalogue has no local rms (Isl_rms) to compute peak SNR")
    return ref[ref["peak_flux"].to_numpy() >= min_peak_snr * rms].reset_index(drop=True)


def box_coverage(ref: pd.DataFrame, boxes: pd.DataFrame, manifest_paths: dict[str, str | Path]) -> pd.DataFrame:
    """Per reference source: inside any box?, distance to that box's centre (px)."""
    inside = np.zeros(len(ref), dtype=bool)
    distance = np.full(len(ref), np.inf)
    ra, dec = ref["ra"].to_numpy(), ref["dec"].to_numpy()
    for field, manifest_path in manifest_paths.items():
        manifest = read_frame(manifest_path).set_index("cutout_id")
        for cutout_id, group in boxes[boxes["field"] == field].groupby("cutout_id"):
            header = fits.getheader(Path(manifest_path).parent / manifest.loc[cutout_id, "file"])
            x, y = celestial_wcs(header).world_to_pixel_values(ra, dec)
            cx, cy = x + 0.5, y + 0.5  # COCO continuous coordinates
            x0, y0 = group["bbox_x"].to_numpy(), group["bbox_y"].to_numpy()
            x1, y1 = x0 + group["bbox_w"].to_numpy(), y0 + group["bbox_h"].to_numpy()
            near = (cx >= -50) & (cx <= header["NAXIS1"] + 50) & (cy >= -50) & (cy <= header["NAXIS2"] + 50)
            for i in np.flatnonzero(near):
                hit = (cx[i] >= x0) & (cx[i] <= x1) & (cy[i] >= y0) & (cy[i] <= y1)
                if hit.any():
                    inside[i] = True
                    d = np.hypot(cx[i] - (x0[hit] + x1[hit]) / 2, cy[i] - (y0[hit] + y1[hit]) / 2)
                    distance[i] = min(distance[i], float(d.min()))
    return pd.DataFrame({"source_id": ref["source_id"], "ra": ra, "dec": dec, "inside_box": inside,
                         "distance_px": np.where(inside, distance, np.nan)})


def crosscheck(reference_path: str | Path, fmt: str, boxes_path: str | Path, manifest_paths: dict[str, str | Path],
               output: str | Path, *, min_peak_snr: float = 10.0, ownership_path: str | Path | None = None) -> dict:
    """Write the coverage figures (JSON) of bright reference sources by boxes.

    ``fraction_inside`` counts every bright source in the field images;
    ``fraction_inside_of_those_in_a_cutout`` only those inside a written
    (owned) cutout, which separates box errors from sky that was not cut out.

    Parameters
    ----------
    reference_path : str or Path
        An independent catalogue of the same images (a PyBDSF source list for
        SDC1), read with the catalogue format ``fmt``.
    fmt : str
        Its catalogue format (a key of :func:`radiodet.catalogues.registry.formats`
        marked as a reference format).
    boxes_path : str or Path
        ``boxes.parquet`` of the boxes stage.
    manifest_paths : dict of str to str or Path
        Field name -> its cutout manifest; sky positions go to pixels through
        each field's WCS (0-based pixel centres).
    output : str or Path
        The JSON written (atomically).
    min_peak_snr : float
        Reference sources count when their peak flux over their island rms
        (both Jy/beam) is at least this.
    ownership_path : str or Path, optional
        The index stage's cutout ownership table (overlapping fields).

    Returns
    -------
    dict
        What the JSON holds: counts, fractions, median and 90th-percentile
        distance of a covered source to its box centre (pixels), and the
        sources outside every box (``source_id``, ``ra``, ``dec`` in deg).
    """
    ref = bright_reference(reference_path, fmt, min_peak_snr)
    boxes = read_frame(boxes_path)
    # only reference sources inside the cut-out images count
    in_image = np.zeros(len(ref), dtype=bool)
    for manifest_path in manifest_paths.values():
        x, y = field_wcs(manifest_path).world_to_pixel_values(ref["ra"].to_numpy(), ref["dec"].to_numpy())
        ny, nx = field_shape(manifest_path)
        in_image |= PixelBox(0, nx, 0, ny).holds(x, y)
    ref = ref[in_image].reset_index(drop=True)
    cover = box_coverage(ref, boxes, manifest_paths)
    inside = cover["inside_box"].to_numpy()
    distances = cover.loc[inside, "distance_px"].to_numpy()
    # sources inside a written cutout (crops with NaN, or outside every split
    # region, or where another field owns the sky, are not cut out)
    in_cutout = np.zeros(len(ref), dtype=bool)
    for manifest_path in manifest_paths.values():
        x, y = field_wcs(manifest_path).world_to_pixel_values(ref["ra"].to_numpy(), ref["dec"].to_numpy())
        for row in read_manifests([manifest_path], ownership_path).itertuples():
            in_cutout |= PixelBox(row.x0, row.x1, row.y0, row.y1).holds(x, y)
    result = {
        "reference": str(reference_path), "min_peak_snr": min_peak_snr,
        "reference_sources": int(len(cover)), "inside_a_box": int(inside.sum()),
        "fraction_inside": float(inside.mean()) if len(cover) else None,
        "reference_sources_in_a_cutout": int(in_cutout.sum()),
        "fraction_inside_of_those_in_a_cutout": float(inside[in_cutout].mean()) if in_cutout.any() else None,
        "median_distance_to_box_centre_px": float(np.median(distances)) if len(distances) else None,
        "p90_distance_to_box_centre_px": float(np.percentile(distances, 90)) if len(distances) else None,
        "outside": cover.loc[~inside, ["source_id", "ra", "dec"]].to_dict(orient="records"),
    }
    write_json(output, result)
    log.info("crosscheck: %d of %d bright reference sources inside a box (%.2f%%), median distance to the box "
             "centre %.3f px", result["inside_a_box"], result["reference_sources"],
             100 * (result["fraction_inside"] or 0), result["median_distance_to_box_centre_px"] or float("nan"))
    return result
