"""The SDC1 catalogue formats: submissions and truth rows in the scorer's columns.

The official scorer (``ska_sdc.Sdc1Scorer``) takes exactly 12 numeric columns
``id ra_core dec_core ra_cent dec_cent flux core_frac b_maj b_min pa size
class`` with no NaN: flux in Jy (primary-beam corrected), sizes in arcsec with
the meaning set by ``size`` (1 LAS, 2 Gaussian FWHM, 3 exponential scale
length), PA in degrees clockwise from due west.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .catalogues import SDC1_TRUTH_COLUMNS, east_of_north_to_sdc1_pa

__all__ = ["SUBMISSION_COLUMNS", "MIN_SUBMITTED_SIZE", "submission_frame", "write_scorer_table", "write_submission",
           "read_submission", "truth_submission"]

log = logging.getLogger(__name__)

SUBMISSION_COLUMNS = SDC1_TRUTH_COLUMNS
#: sizes below this (arcsec) are written as this: the scorer drops non-positive sizes
MIN_SUBMITTED_SIZE = 0.01


def submission_frame(catalogue: pd.DataFrame) -> pd.DataFrame:
    """A catalogue in the schema of :mod:`radiodet.schema` -> the 12 scorer columns.

    Sizes are Gaussian FWHM (SIZE 2) with a floor of 0.01 arcsec (the scorer
    drops non-positive sizes); PA is converted to clockwise from west. Rows
    with a non-finite value are dropped (and counted in the log).
    """
    sub = pd.DataFrame({
        "id": catalogue["source_id"].astype(np.int64),
        "ra_core": catalogue["ra_core"], "dec_core": catalogue["dec_core"],
        "ra_cent": catalogue["ra"], "dec_cent": catalogue["dec"],
        "flux": catalogue["flux"], "core_frac": 0.0,
        "b_maj": np.maximum(catalogue["major_fwhm"].fillna(MIN_SUBMITTED_SIZE), MIN_SUBMITTED_SIZE),
        "b_min": np.maximum(catalogue["minor_fwhm"].fillna(MIN_SUBMITTED_SIZE), MIN_SUBMITTED_SIZE),
        "pa": east_of_north_to_sdc1_pa(catalogue["pa"].fillna(0.0)),
        "size": 2, "class": catalogue["class_id"].astype(np.int64),
    })[SUBMISSION_COLUMNS]
    bad = ~np.isfinite(sub.to_numpy(dtype=float)).all(axis=1)
    if bad.any():
        log.warning("dropping %d rows with non-finite values from the submission", int(bad.sum()))
    return sub[~bad].reset_index(drop=True)


def write_scorer_table(frame: pd.DataFrame, path: str | Path, *, header: bool = True) -> None:
    """Scorer columns as whitespace text; ``header`` adds the column-name line.

    Submissions carry the header line (``Sdc1Scorer.from_txt`` skips one line
    by default); truth files do not (``truth_skiprows=0``).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            if header:
                handle.write(" ".join(SUBMISSION_COLUMNS) + "\n")
            frame[SUBMISSION_COLUMNS].to_csv(handle, sep=" ", header=False, index=False, float_format="%.10g")


def write_submission(catalogue: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Write ``catalogue`` as an SDC1 submission file; returns the rows written."""
    sub = submission_frame(catalogue)
    write_scorer_table(sub, path)
    return sub


def truth_submission(sources: pd.DataFrame) -> pd.DataFrame:
    """The SDC1 truth rows in scorer columns, from an ingested SDC1 catalogue."""
    missing = [c for c in SUBMISSION_COLUMNS if f"orig_{c}" not in sources]
    if missing:
        raise ValueError(f"the catalogue is not an SDC1 catalogue (no orig_{missing[0]} column)")
    return pd.DataFrame({c: sources[f"orig_{c}"].to_numpy() for c in SUBMISSION_COLUMNS})


def read_submission(path: str | Path) -> pd.DataFrame:
    """A submission text file as written by :func:`write_submission`."""
    return pd.read_csv(path, sep=r"\s+", skiprows=1, names=SUBMISSION_COLUMNS)
