"""The ingest stage: a survey catalogue -> the schema's Parquet, validated.

The readers live in :mod:`radiodet.catalogues` (one module per format
family); this stage validates what they return (positions, ids, sizes,
class labels), applies the format's selection rules with counts and writes
Parquet with the conventions in its metadata.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .catalogues import CatalogueFormat, catalogue_format, read_catalogue
from .errors import CatalogueError
from .schema import SOURCE_COLUMNS, write_parquet

__all__ = ["ingest", "IngestReport", "validate_sources"]

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What ingest did, written next to the Parquet file as JSON."""

    source_file: str
    format: str
    rows_read: int = 0
    rows_written: int = 0
    skipped: dict[str, int] = field(default_factory=OrderedDict)

    def as_dict(self) -> dict:
        return {"source_file": self.source_file, "format": self.format, "rows_read": self.rows_read,
                "rows_skipped_by_rule": dict(self.skipped), "rows_written": self.rows_written}


def validate_sources(df: pd.DataFrame, path: str | Path, spec: CatalogueFormat, *,
                     class_ids: set[int] | None) -> None:
    """Check the schema columns; raise :class:`CatalogueError` at the first bad row."""
    path = Path(path)

    def fail(mask: np.ndarray, message: str):
        index = int(np.flatnonzero(mask)[0])
        raise CatalogueError(path, f"{message} ({int(mask.sum())} such rows)", row=spec.row_of(path, index))

    for col in ("dec", "dec_core"):
        bad = ~(np.abs(df[col].to_numpy()) <= 90)
        if bad.any():
            fail(bad, f"{col} outside [-90, 90] deg")
    for col in ("ra", "ra_core"):
        bad = ~np.isfinite(df[col].to_numpy())
        if bad.any():
            fail(bad, f"{col} is not finite")
    bad = np.isinf(df["flux"].to_numpy())  # NaN: a label table without fluxes
    if bad.any():
        fail(bad, "flux is infinite")
    bad = ~np.isin(df["size_class"].to_numpy(), spec.size_classes)
    if bad.any():
        fail(bad, f"size class not one of {list(spec.size_classes)}")
    for col in ("major_fwhm", "minor_fwhm"):
        values = df[col].to_numpy()
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            fail(bad, f"{col} is negative or not finite")
    ids = df["source_id"].to_numpy()
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        rows = [spec.row_of(path, int(i)) for i in np.flatnonzero(ids == ids[first])[:5]]
        raise CatalogueError(path, f"duplicate source id {ids[first]} on rows {', '.join(map(str, rows))}"
                             f" ({int(pd.Series(ids).duplicated().sum())} duplicates)", row=rows[0])
    if class_ids is not None:
        bad = ~np.isin(df["class_id"].to_numpy(), sorted(class_ids))
        if bad.any():
            labels = sorted(set(df["class_id"].to_numpy()[bad].tolist()))
            fail(bad, f"class label(s) {labels} not in the configured classes {sorted(class_ids)}")


def ingest(path: str | Path, fmt: str, output: str | Path, *, class_ids: set[int] | None = None,
           options: Mapping | None = None) -> IngestReport:
    """Read, validate, apply selection rules and write ``output`` (Parquet).

    Parameters
    ----------
    path : str or Path
        The survey's catalogue file.
    fmt : str
        Its format, a key of :func:`radiodet.catalogues.formats`.
    output : str or Path
        The Parquet file to write (schema :data:`radiodet.schema.SOURCE_COLUMNS`:
        degrees, Jy, arcsec FWHM, PA east of north in [0, 180)).
    class_ids : set of int, optional
        The configured class codes; a row with another label is an error.
    options : mapping, optional
        The format's own config section (``catalogue.table`` for the generic
        ``table`` format); None for formats that take none.

    Returns
    -------
    IngestReport
        Rows read, skipped per selection rule (e.g. SDC1 ``SELECTION == 0``,
        each logged) and written. Nothing is written when the catalogue fails
        validation: the :class:`CatalogueError` names the file and row.
    """
    path = Path(path)
    spec = catalogue_format(fmt, path)
    log.info("reading %s catalogue %s", fmt, path)
    df = read_catalogue(path, fmt, options)
    report = IngestReport(source_file=str(path), format=fmt, rows_read=len(df))
    validate_sources(df, path, spec, class_ids=class_ids)
    keep = np.ones(len(df), dtype=bool)
    for reason, mask in spec.selection_rules(df).items():
        n = int((mask & keep).sum())
        report.skipped[reason] = n
        if n:
            log.info("skipping %d rows: %s", n, reason)
        keep &= ~mask
    if not keep.all():
        df = df[keep].reset_index(drop=True)
    report.rows_written = len(df)
    write_parquet(df, output, columns=SOURCE_COLUMNS,
                  metadata={"source_file": str(path), "format": fmt,
                            "pa_convention": "degrees east of north, [0, 180)",
                            "size_convention": "major_fwhm/minor_fwhm are Gaussian FWHM in arcsec"})
    log.info("wrote %d sources to %s (%d read)", report.rows_written, output, report.rows_read)
    return report
