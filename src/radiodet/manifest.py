"""The cutout manifest: its columns, and the field facts every later stage reads from it.

The cutout stage writes one manifest per field (Parquet, one row per written
cutout, columns :data:`MANIFEST_COLUMNS`); its file metadata holds the
parent image's celestial WCS header, beam and shape, so later stages map sky
positions to cutout pixels without opening the image or any cutout. Stages
read manifests through this module, never through the cutout stage.

Pixel conventions: 0-based, pixel centres at integers, so the outer edges of
pixels [x0, x1) lie at x0 - 0.5 and x1 - 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .errors import ImageError
from .geometry import normalise_ra
from .schema import read_frame, read_parquet_metadata

if TYPE_CHECKING:  # imported where they are used: pandas by no cutout or view job, astropy by no gathering job
    import pandas as pd

    from .images import Beam

__all__ = ["MANIFEST_COLUMNS", "field_wcs", "field_beam", "field_shape", "read_manifests", "footprints",
           "format_polygon", "cutout_dir_in_manifest"]

MANIFEST_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "cutout_id": (pa.string(), "", "unique cutout id: <field>_x<x0>_y<y0>"),
    "field": (pa.string(), "", "field name from the field table"),
    "split": (pa.string(), "", "train, val or test"),
    "file": (pa.string(), "", "cutout FITS path, relative to the manifest's directory"),
    "x0": (pa.int64(), "pix", "first parent column (0-based, inclusive)"),
    "y0": (pa.int64(), "pix", "first parent row (0-based, inclusive)"),
    "x1": (pa.int64(), "pix", "last parent column + 1 (exclusive)"),
    "y1": (pa.int64(), "pix", "last parent row + 1 (exclusive)"),
    "width": (pa.int64(), "pix", "NAXIS1 of the cutout"),
    "height": (pa.int64(), "pix", "NAXIS2 of the cutout"),
    "ra_center": (pa.float64(), "deg", "RA of the cutout centre, [0, 360)"),
    "dec_center": (pa.float64(), "deg", "Dec of the cutout centre"),
    "footprint": (pa.string(), "deg", "outer pixel-edge polygon as 'ra dec, ra dec, ...' (RA in [0, 360), closed)"),
    "nan_fraction": (pa.float64(), "", "fraction of NaN pixels"),
    "rms_mad": (pa.float64(), "", "1.4826 x MAD of finite pixels, in the image unit (BUNIT)"),
    "median": (pa.float64(), "", "median of finite pixels, in the image unit"),
}


def cutout_dir_in_manifest(cutout_dir: Path, manifest_path: Path) -> Path:
    """How the ``file`` column names ``cutout_dir``: relative to the manifest's directory, else absolute."""
    try:
        return cutout_dir.relative_to(manifest_path.parent)
    except ValueError:
        return cutout_dir.resolve()


def field_wcs(manifest_path: str | Path):
    """Celestial WCS of the parent image of a manifest (0-based pixels as everywhere)."""
    from astropy.io import fits

    from .images import celestial_wcs

    header = fits.Header.fromstring(read_parquet_metadata(manifest_path)["wcs_header"])
    return celestial_wcs(header, manifest_path)


def field_beam(manifest_path: str | Path) -> Beam:
    """Restoring beam of the parent image of a manifest."""
    beam = read_parquet_metadata(manifest_path).get("beam_arcsec")
    if not beam:
        raise ImageError(manifest_path, "the field's image has no beam (BMAJ/BMIN); set image.beam in the config")
    from .images import Beam

    return Beam(*beam)


def field_shape(manifest_path: str | Path) -> tuple[int, int]:
    """(ny, nx) of the parent image of a manifest."""
    ny, nx = read_parquet_metadata(manifest_path)["shape"]
    return int(ny), int(nx)


def read_manifests(manifest_paths, ownership_path: str | Path | None = None) -> pd.DataFrame:
    """All fields' manifests in one table; only the owned cutouts when ``ownership_path`` is given.

    ``ownership_path`` is the index stage's ``cutouts.parquet``: cutouts where
    another field's centre is nearer (overlapping mosaics) are left out.
    """
    import pandas as pd

    paths = manifest_paths.values() if isinstance(manifest_paths, dict) else manifest_paths
    manifest = pd.concat([read_frame(p) for p in paths], ignore_index=True)
    if ownership_path is not None:
        owned = read_frame(ownership_path, ["cutout_id", "owned"])
        manifest = manifest[manifest["cutout_id"].isin(owned.loc[owned["owned"], "cutout_id"])]
    return manifest.reset_index(drop=True)


def footprints(wcs, x0, y0, x1, y1, *, per_edge: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Sky polygons (RA in [0, 360), Dec), shape (N, 4 per_edge + 1), along outer pixel edges, closed.

    The edges of pixels [x0, x1) are at x0 - 0.5 and x1 - 0.5 in 0-based pixel
    coordinates; one polygon per element of the (N,) arrays, all through one
    WCS call. ``per_edge`` points per side follow the projection's curvature.
    """
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    xa, xb, ya, yb = (np.asarray(v, dtype=float).reshape(-1, 1) - 0.5 for v in (x0, x1, y0, y1))
    n = len(xa)
    xs = np.concatenate([xa + (xb - xa) * t, np.repeat(xb, per_edge, 1), xb - (xb - xa) * t,
                         np.repeat(xa, per_edge, 1), xa], axis=1)
    ys = np.concatenate([np.repeat(ya, per_edge, 1), ya + (yb - ya) * t, np.repeat(yb, per_edge, 1),
                         yb - (yb - ya) * t, ya], axis=1)
    ra, dec = wcs.pixel_to_world_values(xs.ravel(), ys.ravel())
    shape = (n, 4 * per_edge + 1)
    return normalise_ra(ra).reshape(shape), np.asarray(dec).reshape(shape)


def format_polygon(ra: np.ndarray, dec: np.ndarray) -> str:
    return ", ".join(f"{a:.9f} {d:.9f}" for a, d in zip(ra, dec))
