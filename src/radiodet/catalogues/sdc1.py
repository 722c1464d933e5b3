"""SKA Science Data Challenge 1: its catalogues in, its submissions out.

Reading (``sdc1_truth``, ``sdc1_training``) follows ``SDC1_data_description.pdf``
and the official scorer ``ska_sdc``:

* RA is given in (-180, 180]; the schema folds it into [0, 360).
* Sizes mean different things per SIZE class. Converted to Gaussian FWHM with
  the scorer's own factors (``ska_sdc.common.utils.constants``): SIZE 1
  (largest angular size, LAS = 5 sigma): FWHM = LAS x 2.355 / 5; SIZE 2: the
  value is the FWHM; SIZE 3 (exponential scale length): FWHM = sqrt(2) x it.
* PA is measured clockwise from due west (data description, section on
  submissions). On a north-up, east-left image that is ``PA_east_of_north =
  90 - PA_sdc1`` (mod 180). Checked on the image itself: the orientation of
  bright elongated sources in ``B1_1000h_0.3tr.fits`` agrees with this to a
  few degrees and disagrees with "east of north" by ~40 degrees on median
  (``tests/test_pa_convention.py``).

Writing: the scorer (``ska_sdc.Sdc1Scorer``) takes exactly 12 numeric columns
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

from ..atomic import atomic_path
from ..geometry import normalise_ra
from .registry import CatalogueFormat, Survey
from .tables import read_whitespace_table, with_original_columns

__all__ = [
    "SDC1_TRUTH_COLUMNS", "SDC1_TRAINING_COLUMNS", "LAS_TO_FWHM", "EXPONENTIAL_TO_FWHM",
    "sdc1_pa_to_east_of_north", "east_of_north_to_sdc1_pa", "sdc1_size_to_fwhm",
    "read_sdc1_truth", "read_sdc1_training",
    "SUBMISSION_COLUMNS", "MIN_SUBMITTED_SIZE", "submission_frame", "write_scorer_table", "write_submission",
    "read_submission", "truth_submission",
]

log = logging.getLogger(__name__)

#: Column order of the SDC1 truth catalogue and of submissions (the scorer's).
SDC1_TRUTH_COLUMNS = ["id", "ra_core", "dec_core", "ra_cent", "dec_cent", "flux", "core_frac",
                      "b_maj", "b_min", "pa", "size", "class"]
#: The 15 columns of the SDC1 training-area catalogues (after 18 header lines).
SDC1_TRAINING_COLUMNS = SDC1_TRUTH_COLUMNS + ["selection", "x", "y"]
SDC1_TRAINING_HEADER_LINES = 18

#: Gaussian FWHM per largest angular size (LAS defined as 5 sigma), as ska_sdc.
LAS_TO_FWHM = 2.355 / 5.0
#: Gaussian FWHM per exponential scale length, as ska_sdc.
EXPONENTIAL_TO_FWHM = 2.0**0.5
_SIZE_FACTORS = {1: LAS_TO_FWHM, 2: 1.0, 3: EXPONENTIAL_TO_FWHM}


def sdc1_pa_to_east_of_north(pa_sdc1):
    """SDC1 PA (clockwise from due west) -> PA east of north in [0, 180)."""
    return np.mod(90.0 - np.asarray(pa_sdc1, dtype=float), 180.0)


def east_of_north_to_sdc1_pa(pa_east_of_north):
    """PA east of north -> SDC1 PA (clockwise from due west) in [-90, 90).

    The range is the one of the SDC1 truth catalogues, and it matters: the
    official scorer (ska-sdc 2.0.0, ``get_pa_acc_series``) folds both PAs by
    subtracting 180, 90 and 45 where they exceed those values, without
    wrapping the difference, so the same axis written as -30 and as 150 ends
    up 45 degrees apart. Written in [0, 180), the truth catalogue scores 0.62
    on PA against itself; in [-90, 90), 1.0.
    """
    # The map theta -> 90 - theta is its own inverse.
    return np.mod(90.0 - np.asarray(pa_east_of_north, dtype=float) + 90.0, 180.0) - 90.0


def sdc1_size_to_fwhm(size_value, size_class):
    """SDC1 BMAJ/BMIN (arcsec, meaning set by SIZE) -> Gaussian FWHM in arcsec."""
    size_class = np.asarray(size_class)
    factor = np.select([size_class == k for k in _SIZE_FACTORS], list(_SIZE_FACTORS.values()), np.nan)
    return np.asarray(size_value, dtype=float) * factor



# --------------------------------------------------------------------------
# reading


def _sdc1_to_schema(raw: pd.DataFrame) -> pd.DataFrame:
    size_class = raw["size"].round().astype(np.int64)
    out = pd.DataFrame({
        "source_id": raw["id"].round().astype(np.int64),
        "ra": normalise_ra(raw["ra_cent"]),
        "dec": raw["dec_cent"].to_numpy(float),
        "ra_core": normalise_ra(raw["ra_core"]),
        "dec_core": raw["dec_core"].to_numpy(float),
        "flux": raw["flux"].to_numpy(float),
        "peak_flux": np.full(len(raw), np.nan),
        "major_fwhm": sdc1_size_to_fwhm(raw["b_maj"], size_class),
        "minor_fwhm": sdc1_size_to_fwhm(raw["b_min"], size_class),
        "pa": sdc1_pa_to_east_of_north(raw["pa"]),
        "size_class": size_class.astype(np.int8),
        "class_id": raw["class"].round().astype(np.int16),
        "local_rms": np.full(len(raw), np.nan),
    }, copy=False)  # no consolidated copy of 5 M rows (with_original_columns makes the frame)
    return with_original_columns(out, raw)


def read_sdc1_truth(path: str | Path, options=None) -> pd.DataFrame:
    """SDC1 true catalogue: 12 columns, no header, scorer order."""
    return _sdc1_to_schema(read_whitespace_table(path, SDC1_TRUTH_COLUMNS))


def read_sdc1_training(path: str | Path, options=None) -> pd.DataFrame:
    """SDC1 training-area catalogue: 18 header lines, then 15 columns."""
    return _sdc1_to_schema(read_whitespace_table(path, SDC1_TRAINING_COLUMNS,
                                                 skip_lines=SDC1_TRAINING_HEADER_LINES))


def _sdc1_selection_rules(df: pd.DataFrame) -> dict[str, np.ndarray]:
    rules = {}
    if "orig_selection" in df:
        rules["SELECTION == 0 (not injected into the image)"] = df["orig_selection"].to_numpy() == 0
    return rules


FORMATS = {
    "sdc1_truth": CatalogueFormat(read_sdc1_truth, "SDC1 true catalogue: 12 columns, no header, scorer order"),
    "sdc1_training": CatalogueFormat(read_sdc1_training, "SDC1 training-area catalogue: 15 columns after 18 "
                                     "header lines", _sdc1_selection_rules, header_lines=SDC1_TRAINING_HEADER_LINES),
}

SURVEYS = {
    # 4-D images, true catalogues; noise from the cutouts (no rms maps).
    "sdc1": Survey("SKA Science Data Challenge 1", {
        "catalogue": {"format": "sdc1_truth"},
        "classes": {1: "SS-AGN", 2: "FS-AGN", 3: "SFG"},
        "cutouts": {"size": 205},
        "filter": {"noise": "mad", "flux": "peak"},
        "score": {"activate": True},
    }),
}


# --------------------------------------------------------------------------
# submissions

#: the scorer's columns, in its order
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
