"""PyBDSF source lists: the ASCII ``.srl`` PyBDSF writes, and LoTSS DR1/DR2 FITS catalogues."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CatalogueError
from ..geometry import (
    covariance_from_ellipse,
    deconvolve,
    ellipse_from_covariance,
    normalise_ra,
)
from .registry import CatalogueFormat, Survey
from .tables import column, read_table, text_column, with_original_columns

__all__ = ["read_pybdsf_srl", "read_lotss", "LOTSS_BEAM_ARCSEC", "LOTSS_S_CODES"]

log = logging.getLogger(__name__)


def _pybdsf_columns(path: Path) -> list[str]:
    """Column names from the '# Source_id Isl_id RA ...' comment line."""
    with open(path, errors="replace") as handle:
        for line in handle:
            if not line.startswith("#") and line.strip():
                break
            if line.startswith("# ") and "Source_id" in line.split():
                return line[1:].split()
    raise CatalogueError(path, "no '# Source_id Isl_id RA ...' column line: not a PyBDSF ASCII source list")


def read_pybdsf_srl(path: str | Path, options=None) -> pd.DataFrame:
    """PyBDSF ASCII source list (``write_catalog(format='ascii', catalog_type='srl')``).

    Positions and sizes are in degrees there; fluxes in Jy. Sizes are the
    deconvolved DC_Maj/DC_Min (FWHM), PA (DC_PA) east of north. ``class_id``
    is 0 (PyBDSF does not classify); S_Code is kept as ``orig_S_Code``.
    """
    path = Path(path)
    names = _pybdsf_columns(path)
    numeric = [n for n in names if n != "S_Code"]
    try:
        raw = pd.read_csv(path, sep=r"\s+", comment="#", header=None, names=names,
                          dtype={**dict.fromkeys(numeric, np.float64), "S_Code": str}, engine="c",
                          float_precision="round_trip")  # every number correctly rounded
    except (ValueError, pd.errors.ParserError) as exc:
        raise CatalogueError(path, f"cannot parse the source list: {exc}") from None
    out = pd.DataFrame({
        "source_id": raw["Source_id"].round().astype(np.int64),
        "ra": normalise_ra(raw["RA"]), "dec": raw["DEC"].to_numpy(float),
        "ra_core": normalise_ra(raw["RA"]), "dec_core": raw["DEC"].to_numpy(float),
        "flux": raw["Total_flux"].to_numpy(float), "peak_flux": raw["Peak_flux"].to_numpy(float),
        "major_fwhm": raw["DC_Maj"].to_numpy(float) * 3600.0, "minor_fwhm": raw["DC_Min"].to_numpy(float) * 3600.0,
        "pa": np.mod(raw["DC_PA"].to_numpy(float), 180.0),
        "size_class": np.full(len(raw), 2, dtype=np.int8), "class_id": np.zeros(len(raw), dtype=np.int16),
        "local_rms": raw["Isl_rms"].to_numpy(float),
    })
    return with_original_columns(out, raw)


#: LoTSS restoring beam (FWHM, arcsec): Maj/Min include it; DC_Maj/DC_Min do not.
LOTSS_BEAM_ARCSEC = 6.0
#: S_Code -> class_id for LoTSS (single, multiple-Gaussian, complex island)
LOTSS_S_CODES = {"S": 1, "M": 2, "C": 3}


def read_lotss(path: str | Path, options=None) -> pd.DataFrame:
    """LoTSS DR1/DR2 PyBDSF source catalogue (FITS table).

    Fluxes (Total_flux, Peak_flux, Isl_rms: mJy, mJy/beam) are converted with
    the table's units to Jy; sizes are the deconvolved DC_Maj/DC_Min (the
    Maj/Min columns include the 6 arcsec beam), PA is DC_PA (east of north).
    ``class_id`` from S_Code (S 1, M 2, C 3); ``source_id`` is the row number
    (1-based) and Source_Name is kept as ``orig_Source_Name``.
    """
    path = Path(path)
    table = read_table(path)
    if "S_Code" in table.colnames:
        codes = text_column(table, "S_Code")
    else:
        log.warning("%s has no S_Code column: every source is labelled class 1 (single)", path)
        codes = np.full(len(table), "S")
    unknown = ~np.isin(codes, list(LOTSS_S_CODES))
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise CatalogueError(path, f"unknown S_Code {str(codes[row])!r} (expected S, M or C)", row=row + 1)
    if "DC_Maj" in table.colnames:
        major = column(table, path, "DC_Maj", "arcsec", default_unit="arcsec")
        minor = column(table, path, "DC_Min", "arcsec", default_unit="arcsec")
        pa_deg = column(table, path, "DC_PA", "deg", default_unit="deg")
    else:  # deconvolve Maj/Min from the beam
        cov = deconvolve(covariance_from_ellipse(column(table, path, "Maj", "arcsec", default_unit="arcsec"),
                                                 column(table, path, "Min", "arcsec", default_unit="arcsec"),
                                                 column(table, path, "PA", "deg", default_unit="deg")),
                         covariance_from_ellipse(LOTSS_BEAM_ARCSEC, LOTSS_BEAM_ARCSEC, 0.0))
        major, minor, pa_deg = ellipse_from_covariance(cov)
    ra = column(table, path, "RA", "deg", default_unit="deg")
    dec = column(table, path, "DEC", "deg", default_unit="deg")
    out = pd.DataFrame({
        "source_id": np.arange(1, len(table) + 1, dtype=np.int64),
        "ra": normalise_ra(ra), "dec": dec, "ra_core": normalise_ra(ra), "dec_core": dec,
        "flux": column(table, path, "Total_flux", "Jy", default_unit="mJy"),
        "peak_flux": column(table, path, "Peak_flux", "Jy/beam", default_unit="mJy/beam"),
        "major_fwhm": major, "minor_fwhm": minor, "pa": np.mod(pa_deg, 180.0),
        "size_class": np.full(len(table), 2, dtype=np.int8),
        "class_id": np.array([LOTSS_S_CODES[c] for c in codes], dtype=np.int16),
        "local_rms": column(table, path, "Isl_rms", "Jy/beam", default_unit="mJy/beam", required=False),
    })
    return with_original_columns(out, table)


FORMATS = {
    "pybdsf_srl": CatalogueFormat(read_pybdsf_srl, "PyBDSF ASCII source list (write_catalog format='ascii', "
                                  "catalog_type='srl')", size_classes=(2,), reference=True),
    "lotss": CatalogueFormat(read_lotss, "LoTSS DR1/DR2 PyBDSF source catalogue (FITS table)", size_classes=(2,),
                             text=False, reference=True),
}

SURVEYS = {
    # PyBDSF catalogues with Isl_rms and S_Code, rms maps in DR2; overlapping
    # mosaics (each patch of sky from the nearest centre).
    "lotss": Survey("LOFAR Two-metre Sky Survey (DR1/DR2)", {
        "catalogue": {"format": "lotss"},
        "classes": {1: "single", 2: "multiple", 3: "complex"},
        "cutouts": {"size": 200},
        "filter": {"noise": "auto", "flux": "peak"},
        "score": {"activate": False},
        "train": {"activate": False},
    }),
}
