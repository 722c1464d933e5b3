"""Catalogue readers: survey catalogue files -> the schema of :mod:`radiodet.schema`.

A reader returns the documented columns plus the original columns prefixed
``orig_``. :func:`ingest` validates the result (positions, ids, class
labels), applies the survey's selection rules with counts, and writes Parquet.

SDC1 conventions (``SDC1_data_description.pdf`` and the official scorer
``ska_sdc``):

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
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .errors import CatalogueError
from .geometry import covariance_from_ellipse, deconvolve, ellipse_from_covariance, normalise_ra
from .schema import SOURCE_COLUMNS, write_parquet

__all__ = [
    "SDC1_TRUTH_COLUMNS",
    "SDC1_TRAINING_COLUMNS",
    "LAS_TO_FWHM",
    "EXPONENTIAL_TO_FWHM",
    "sdc1_pa_to_east_of_north",
    "east_of_north_to_sdc1_pa",
    "sdc1_size_to_fwhm",
    "read_catalogue",
    "ingest",
    "IngestReport",
    "FORMATS",
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


# --------------------------------------------------------------------------
# whitespace tables with row-accurate error messages


def _data_lines(path: Path, skip_lines: int):
    """Yield (1-based line number, fields) of the non-blank, non-comment data lines."""
    with open(path, "r", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip_lines or line.startswith("#"):
                continue
            fields_ = line.split()
            if fields_:
                yield number, fields_


def _line_of_row(path: Path, skip_lines: int, row_index: int) -> int:
    for i, (number, _) in enumerate(_data_lines(path, skip_lines)):
        if i == row_index:
            return number
    return -1


def _first_bad_line(path: Path, skip_lines: int, names: list[str]) -> tuple[int, str]:
    """Locate the first line that does not parse as len(names) numbers."""
    for number, fields_ in _data_lines(path, skip_lines):
        if len(fields_) != len(names):
            return number, f"expected {len(names)} columns ({' '.join(names)}), found {len(fields_)}"
        for name, text in zip(names, fields_):
            try:
                float(text)
            except ValueError:
                return number, f"column {name!r} is not a number: {text!r}"
    return -1, "unreadable content"


def read_whitespace_table(path: str | Path, names: list[str], *, skip_lines: int = 0) -> pd.DataFrame:
    """Read a whitespace-separated numeric table; all columns float64.

    Raises :class:`CatalogueError` naming the file and 1-based line for text in
    a numeric column, a wrong number of columns, or a missing value.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogueError(path, "catalogue file not found")
    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, names=names, skiprows=skip_lines,
                         dtype=dict.fromkeys(names, np.float64), engine="c", comment=None)
    except (ValueError, pd.errors.ParserError) as exc:
        line, why = _first_bad_line(path, skip_lines, names)
        raise CatalogueError(path, why if line > 0 else str(exc), row=line if line > 0 else None) from None
    bad = df.isna().any(axis=1).to_numpy()
    if bad.any():
        line, why = _first_bad_line(path, skip_lines, names)  # a short line reads as trailing NaN
        if line < 0:
            index = int(np.flatnonzero(bad)[0])
            missing = [c for c in names if pd.isna(df.iloc[index][c])]
            line, why = _line_of_row(path, skip_lines, index), f"NaN value in column(s) {', '.join(missing)}"
        raise CatalogueError(path, f"{why} ({int(bad.sum())} rows with missing or NaN values)", row=line)
    return df


# --------------------------------------------------------------------------
# SDC1


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
    })
    for name in raw.columns:
        out[f"orig_{name}"] = raw[name].to_numpy()
    return out


def read_sdc1_truth(path: str | Path) -> pd.DataFrame:
    """SDC1 true catalogue: 12 columns, no header, scorer order."""
    return _sdc1_to_schema(read_whitespace_table(path, SDC1_TRUTH_COLUMNS))


def read_sdc1_training(path: str | Path) -> pd.DataFrame:
    """SDC1 training-area catalogue: 18 header lines, then 15 columns."""
    return _sdc1_to_schema(read_whitespace_table(path, SDC1_TRAINING_COLUMNS,
                                                 skip_lines=SDC1_TRAINING_HEADER_LINES))


def _sdc1_selection_rules(df: pd.DataFrame) -> dict[str, np.ndarray]:
    rules = {}
    if "orig_selection" in df:
        rules["SELECTION == 0 (not injected into the image)"] = df["orig_selection"].to_numpy() == 0
    return rules


# --------------------------------------------------------------------------
# PyBDSF source lists (ASCII .srl)


def _pybdsf_columns(path: Path) -> list[str]:
    """Column names from the '# Source_id Isl_id RA ...' comment line."""
    with open(path, errors="replace") as handle:
        for line in handle:
            if not line.startswith("#") and line.strip():
                break
            if line.startswith("# ") and "Source_id" in line.split():
                return line[1:].split()
    raise CatalogueError(path, "no '# Source_id Isl_id RA ...' column line: not a PyBDSF ASCII source list")


def read_pybdsf_srl(path: str | Path) -> pd.DataFrame:
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
                          dtype={**dict.fromkeys(numeric, np.float64), "S_Code": str}, engine="c")
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
    for name in raw.columns:
        out[f"orig_{name}"] = raw[name].to_numpy()
    return out


# --------------------------------------------------------------------------
# FITS tables with units: LoTSS (PyBDSF), MGCLS


def _fits_table(path: Path):
    from astropy.table import Table

    if not path.is_file():
        raise CatalogueError(path, "catalogue file not found")
    try:
        return Table.read(path)
    except Exception as exc:  # astropy raises many types for broken files
        raise CatalogueError(path, f"not a readable FITS table: {exc}") from None


def _column(table, path: Path, name: str, unit: str | None = None, *, default_unit: str | None = None,
            required: bool = True) -> np.ndarray:
    """A column as float64 in ``unit``, converted with its own astropy unit.

    A column without a unit is taken to be in ``default_unit`` (the survey's
    documented unit). Text in a numeric column is an error naming the row.
    """
    import astropy.units as u

    if name not in table.colnames:
        if required:
            raise CatalogueError(path, f"column {name!r} is missing (has: {', '.join(table.colnames)})")
        return np.full(len(table), np.nan)
    column = table[name]
    if column.dtype.kind in "SUO":
        values = np.array([str(v.decode() if isinstance(v, bytes) else v).strip() for v in column])
        numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy()
        bad = np.isnan(numeric) & ~np.isin(np.char.lower(values.astype(str)), ["nan", ""])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise CatalogueError(path, f"column {name!r} is not a number: {str(values[row])!r}", row=row + 1)
        data = numeric
    else:
        data = np.ma.filled(np.ma.asarray(column, dtype=float), np.nan)
    if unit is None:
        return np.asarray(data, dtype=float)
    source_unit = column.unit if column.unit is not None else (u.Unit(default_unit) if default_unit else None)
    if source_unit is None:
        raise CatalogueError(path, f"column {name!r} has no unit and the format documents none")
    return (np.asarray(data, dtype=float) * u.Unit(source_unit)).to_value(u.Unit(unit))


def _native(values) -> np.ndarray:
    """Native byte order (FITS is big-endian; Parquet wants native)."""
    values = np.asarray(values)
    return values.astype(values.dtype.newbyteorder("=")) if values.dtype.kind in "iufb" else values


def _text_column(table, name: str) -> np.ndarray:
    return np.array([str(v.decode() if isinstance(v, bytes) else v).strip() for v in table[name]])


#: LoTSS restoring beam (FWHM, arcsec): Maj/Min include it; DC_Maj/DC_Min do not.
LOTSS_BEAM_ARCSEC = 6.0
#: S_Code -> class_id for LoTSS (single, multiple-Gaussian, complex island)
LOTSS_S_CODES = {"S": 1, "M": 2, "C": 3}


def read_lotss(path: str | Path) -> pd.DataFrame:
    """LoTSS DR1/DR2 PyBDSF source catalogue (FITS table).

    Fluxes (Total_flux, Peak_flux, Isl_rms: mJy, mJy/beam) are converted with
    the table's units to Jy; sizes are the deconvolved DC_Maj/DC_Min (the
    Maj/Min columns include the 6 arcsec beam), PA is DC_PA (east of north).
    ``class_id`` from S_Code (S 1, M 2, C 3); ``source_id`` is the row number
    (1-based) and Source_Name is kept as ``orig_Source_Name``.
    """
    path = Path(path)
    table = _fits_table(path)
    codes = _text_column(table, "S_Code") if "S_Code" in table.colnames else np.full(len(table), "S")
    unknown = ~np.isin(codes, list(LOTSS_S_CODES))
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise CatalogueError(path, f"unknown S_Code {str(codes[row])!r} (expected S, M or C)", row=row + 1)
    if "DC_Maj" in table.colnames:
        major = _column(table, path, "DC_Maj", "arcsec", default_unit="arcsec")
        minor = _column(table, path, "DC_Min", "arcsec", default_unit="arcsec")
        pa_deg = _column(table, path, "DC_PA", "deg", default_unit="deg")
    else:  # deconvolve Maj/Min from the beam
        cov = deconvolve(covariance_from_ellipse(_column(table, path, "Maj", "arcsec", default_unit="arcsec"),
                                                 _column(table, path, "Min", "arcsec", default_unit="arcsec"),
                                                 _column(table, path, "PA", "deg", default_unit="deg")),
                         covariance_from_ellipse(LOTSS_BEAM_ARCSEC, LOTSS_BEAM_ARCSEC, 0.0))
        major, minor, pa_deg = ellipse_from_covariance(cov)
    ra = _column(table, path, "RA", "deg", default_unit="deg")
    dec = _column(table, path, "DEC", "deg", default_unit="deg")
    out = pd.DataFrame({
        "source_id": np.arange(1, len(table) + 1, dtype=np.int64),
        "ra": normalise_ra(ra), "dec": dec, "ra_core": normalise_ra(ra), "dec_core": dec,
        "flux": _column(table, path, "Total_flux", "Jy", default_unit="mJy"),
        "peak_flux": _column(table, path, "Peak_flux", "Jy/beam", default_unit="mJy/beam"),
        "major_fwhm": major, "minor_fwhm": minor, "pa": np.mod(pa_deg, 180.0),
        "size_class": np.full(len(table), 2, dtype=np.int8),
        "class_id": np.array([LOTSS_S_CODES[c] for c in codes], dtype=np.int16),
        "local_rms": _column(table, path, "Isl_rms", "Jy/beam", default_unit="mJy/beam", required=False),
    })
    for name in table.colnames:
        if table[name].ndim == 1:
            column = table[name]
            out[f"orig_{name}"] = _text_column(table, name) if column.dtype.kind in "SUO" else _native(column)
    return out


def read_mgcls(path: str | Path) -> pd.DataFrame:
    """MGCLS compact-source catalogue (FITS table), as the simulator writes it.

    Columns: Source_ID, RA_deg, Dec_deg (deg), Stot_mJy (mJy), Speak_mJy
    (mJy/beam), smax_asec, smin_asec (intrinsic FWHM, arcsec), spa_deg (east
    of north), rms_mJy (mJy/beam, optional), Class (optional: 1 point,
    2 extended; default 1). Units are taken from the column names when the
    table carries none.
    """
    path = Path(path)
    table = _fits_table(path)
    ra = _column(table, path, "RA_deg", "deg", default_unit="deg")
    dec = _column(table, path, "Dec_deg", "deg", default_unit="deg")
    ids = (_column(table, path, "Source_ID").round().astype(np.int64) if "Source_ID" in table.colnames
           else np.arange(1, len(table) + 1, dtype=np.int64))
    classes = (_column(table, path, "Class").round().astype(np.int16) if "Class" in table.colnames
               else np.ones(len(table), dtype=np.int16))
    out = pd.DataFrame({
        "source_id": ids, "ra": normalise_ra(ra), "dec": dec, "ra_core": normalise_ra(ra), "dec_core": dec,
        "flux": _column(table, path, "Stot_mJy", "Jy", default_unit="mJy"),
        "peak_flux": _column(table, path, "Speak_mJy", "Jy/beam", default_unit="mJy/beam", required=False),
        "major_fwhm": _column(table, path, "smax_asec", "arcsec", default_unit="arcsec"),
        "minor_fwhm": _column(table, path, "smin_asec", "arcsec", default_unit="arcsec"),
        "pa": np.mod(_column(table, path, "spa_deg", "deg", default_unit="deg"), 180.0),
        "size_class": np.full(len(table), 2, dtype=np.int8),
        "class_id": classes,
        "local_rms": _column(table, path, "rms_mJy", "Jy/beam", default_unit="mJy/beam", required=False),
    })
    for name in table.colnames:
        column = table[name]
        out[f"orig_{name}"] = _text_column(table, name) if column.dtype.kind in "SUO" else _native(column)
    return out


#: columns of the MiraBest label table (mirabestdata.txt), whitespace separated
MIRABEST_COLUMNS = ["plate", "mjd", "fiber", "ra_hours", "dec_deg", "z", "col7", "size_arcsec", "code"]


def read_mirabest(path: str | Path) -> pd.DataFrame:
    """MiraBest label table (Miraghaei & Best 2017; Porter & Scaife 2023).

    RA is in HOURS there (converted with astropy units). The class code's
    first digit is the class: 1 FRI, 2 FRII, 3 hybrid (``class_id``); its
    second digit is confident (0) / uncertain (1) and its third the
    morphology (0 standard, 1 double-double, 2 WAT, 4 head-tail), kept as
    ``orig_code``, ``orig_confidence``, ``orig_morphology``. Sizes are the
    catalogued largest angular size (arcsec), as ``size_class`` 1.
    """
    import astropy.units as u

    raw = read_whitespace_table(path, MIRABEST_COLUMNS)
    code = raw["code"].round().astype(np.int64)
    ra = (raw["ra_hours"].to_numpy() * u.hourangle).to_value(u.deg)
    las = raw["size_arcsec"].to_numpy(float)
    out = pd.DataFrame({
        "source_id": np.arange(1, len(raw) + 1, dtype=np.int64),
        "ra": normalise_ra(ra), "dec": raw["dec_deg"].to_numpy(float),
        "ra_core": normalise_ra(ra), "dec_core": raw["dec_deg"].to_numpy(float),
        "flux": np.full(len(raw), np.nan), "peak_flux": np.full(len(raw), np.nan),
        "major_fwhm": las * LAS_TO_FWHM, "minor_fwhm": las * LAS_TO_FWHM, "pa": np.zeros(len(raw)),
        "size_class": np.ones(len(raw), dtype=np.int8),
        "class_id": (code // 100).astype(np.int16),
        "local_rms": np.full(len(raw), np.nan),
    })
    for name in raw.columns:
        out[f"orig_{name}"] = raw[name].to_numpy()
    out["orig_code"] = code
    out["orig_confidence"] = (code // 10) % 10
    out["orig_morphology"] = code % 10
    return out


@dataclass(frozen=True)
class CatalogueFormat:
    reader: Callable[[Path], pd.DataFrame]
    #: name -> boolean mask of rows to skip, with the reason as the name.
    selection_rules: Callable[[pd.DataFrame], dict[str, np.ndarray]] = lambda df: {}
    #: size classes the format may contain
    size_classes: tuple[int, ...] = (1, 2, 3)
    #: header lines before the data of a text table (to name file lines in errors)
    header_lines: int = 0
    #: text file (errors name file lines) or a table (errors name 1-based rows)
    text: bool = True

    def row_of(self, path: Path, index: int) -> int:
        """1-based file line (text) or table row (FITS) of the 0-based data row ``index``."""
        return _line_of_row(path, self.header_lines, index) if self.text else index + 1


FORMATS: dict[str, CatalogueFormat] = {
    "sdc1_truth": CatalogueFormat(read_sdc1_truth),
    "sdc1_training": CatalogueFormat(read_sdc1_training, _sdc1_selection_rules,
                                     header_lines=SDC1_TRAINING_HEADER_LINES),
    "pybdsf_srl": CatalogueFormat(read_pybdsf_srl, size_classes=(2,)),
    "lotss": CatalogueFormat(read_lotss, size_classes=(2,), text=False),
    "mgcls": CatalogueFormat(read_mgcls, size_classes=(2,), text=False),
    "mirabest": CatalogueFormat(read_mirabest, size_classes=(1,)),
}


def _format(path, fmt: str) -> CatalogueFormat:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise CatalogueError(path, f"unknown catalogue format {fmt!r}; known: {', '.join(FORMATS)}") from None


def read_catalogue(path: str | Path, fmt: str) -> pd.DataFrame:
    """Read ``path`` in format ``fmt`` (a key of :data:`FORMATS`)."""
    return _format(path, fmt).reader(Path(path))


# --------------------------------------------------------------------------
# validation and ingest


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


def ingest(path: str | Path, fmt: str, output: str | Path, *, class_ids: set[int] | None = None) -> IngestReport:
    """Read, validate, apply selection rules and write ``output`` (Parquet).

    Returns an :class:`IngestReport` with the counts; rows skipped by a rule
    (e.g. SDC1 ``SELECTION == 0``) are counted per rule and logged. Nothing is
    written when the catalogue fails validation.
    """
    path = Path(path)
    spec = _format(path, fmt)
    log.info("reading %s catalogue %s", fmt, path)
    df = spec.reader(path)
    report = IngestReport(source_file=str(path), format=fmt, rows_read=len(df))
    validate_sources(df, path, spec, class_ids=class_ids)
    keep = np.ones(len(df), dtype=bool)
    for reason, mask in spec.selection_rules(df).items():
        n = int((mask & keep).sum())
        report.skipped[reason] = n
        if n:
            log.info("skipping %d rows: %s", n, reason)
        keep &= ~mask
    df = df[keep].reset_index(drop=True)
    report.rows_written = len(df)
    write_parquet(df, output, columns=SOURCE_COLUMNS,
                  metadata={"source_file": str(path), "format": fmt,
                            "pa_convention": "degrees east of north, [0, 180)",
                            "size_convention": "major_fwhm/minor_fwhm are Gaussian FWHM in arcsec"})
    log.info("wrote %d sources to %s (%d read)", report.rows_written, output, report.rows_read)
    return report
