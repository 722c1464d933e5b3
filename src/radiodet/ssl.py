"""Crops for self-supervised training (the MGCLS recipe) with per-crop source counts.

The crops are the cutouts of the workflow, laid out with minimal overlap
(``cutouts.layout: n_plus_one``: n + 1 crops per axis, n = size // crop),
the ones holding NaN dropped (``cutouts.max_nan_fraction: 0``), and scaled by
the per-field contrast stretch of the views (percentiles of the whole field,
P2/P98 by default for MGCLS). This stage adds what the recipe's linear probes
use as labels: the number of catalogue sources whose position falls inside
each crop (pixel centre convention: pixel i covers [i - 0.5, i + 0.5)),
optionally only those with filter SNR >= ``min_snr``.

``crops.parquet``: cutout_id, field, split, x0, y0, x1, y1, npy_file,
png_file (relative to the table's directory), source_count.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .manifest import field_wcs, read_manifests
from .schema import read_frame, read_sources, write_parquet
from .tiling import PixelBox

__all__ = ["SSL_COLUMNS", "count_sources", "build_ssl_table"]

log = logging.getLogger(__name__)

SSL_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "cutout_id": (pa.string(), "", "crop (cutout) id"),
    "field": (pa.string(), "", "field"),
    "split": (pa.string(), "", "split"),
    "x0": (pa.int64(), "pix", "first parent column"),
    "y0": (pa.int64(), "pix", "first parent row"),
    "x1": (pa.int64(), "pix", "last parent column + 1"),
    "y1": (pa.int64(), "pix", "last parent row + 1"),
    "npy_file": (pa.string(), "", "scaled float32 view, relative to this table"),
    "png_file": (pa.string(), "", "8-bit view, relative to this table"),
    "source_count": (pa.int64(), "", "catalogue sources whose position lies in the crop"),
}


def count_sources(manifest: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per cutout row: how many of the 0-based parent pixel positions (x, y) it holds."""
    return np.array([np.count_nonzero(PixelBox(row.x0, row.x1, row.y0, row.y1).holds(x, y))
                     for row in manifest.itertuples()], dtype=np.int64)


def build_ssl_table(manifest_paths: dict[str, str | Path], ownership_path: str | Path, sources_path: str | Path,
                    assignments_path: str | Path, views_dirs: dict[str, str | Path], output: str | Path, *,
                    snr_path: str | Path | None = None, min_snr: float | None = None) -> pd.DataFrame:
    """Write ``crops.parquet`` (see the module docstring); returns it.

    Parameters
    ----------
    manifest_paths : dict of str to str or Path
        Field name -> its cutout manifest (the crops; their WCS and pixel boxes).
    ownership_path : str or Path
        The index stage's ownership table: crops that another field owns are left out.
    sources_path : str or Path
        The ingest stage's Parquet (``ra``, ``dec`` in deg).
    assignments_path : str or Path
        The index stage's (source, cutout) pairs: the candidates counted.
    views_dirs : dict of str to str or Path
        Field name -> its views directory (the crops' NPY and PNG files).
    output : str or Path
        ``crops.parquet``; view paths in it are relative to its directory.
    snr_path : str or Path, optional
        The filter stage's table with ``snr`` per pair; needed with ``min_snr``.
    min_snr : float, optional
        Count only sources with at least this peak signal-to-noise.

    Returns
    -------
    pandas.DataFrame
        The table written (:data:`SSL_COLUMNS`).
    """
    output = Path(output)
    manifest = read_manifests(manifest_paths, ownership_path)
    pairs = read_frame(assignments_path)
    if min_snr is not None:
        if snr_path is None:
            raise ValueError("ssl.min_snr needs the filter stage's SNR table")
        snr = read_frame(snr_path, ["source_id", "cutout_id", "snr"])
        pairs = pairs.merge(snr, on=["source_id", "cutout_id"], how="left")
        pairs = pairs[pairs["snr"] >= min_snr]
    sources = read_sources(sources_path, columns=["source_id", "ra", "dec"])
    rows = []
    for field, manifest_path in manifest_paths.items():
        wcs = field_wcs(manifest_path)
        cutouts = manifest[manifest["field"] == field].reset_index(drop=True)
        if cutouts.empty:
            continue
        # candidates from the spatial index, decided exactly in pixels here
        candidates = sources[sources["source_id"].isin(pairs.loc[pairs["field"] == field, "source_id"])]
        x, y = wcs.world_to_pixel_values(candidates["ra"].to_numpy(), candidates["dec"].to_numpy())
        cutouts["source_count"] = count_sources(cutouts, np.asarray(x), np.asarray(y))
        views = Path(views_dirs[field])
        rel = os.path.relpath(views.resolve(), output.parent.resolve())
        cutouts["npy_file"] = [str(Path(rel) / f"{c}.npy") for c in cutouts["cutout_id"]]
        cutouts["png_file"] = [str(Path(rel) / f"{c}.png") for c in cutouts["cutout_id"]]
        rows.append(cutouts)
    table = (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(SSL_COLUMNS)))[list(SSL_COLUMNS)]
    write_parquet(table, output, columns=SSL_COLUMNS, metadata={"min_snr": min_snr})
    log.info("ssl: %d crops, %d sources counted (median %.0f per crop)", len(table), int(table["source_count"].sum()),
             float(table["source_count"].median()) if len(table) else 0.0)
    return table
