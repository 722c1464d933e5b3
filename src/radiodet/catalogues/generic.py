"""Any ordinary source table, read through a column map in the config.

Most source finders write an ordinary table: Aegean (MWA, GLEAM, HIPASS),
Selavy (ASKAP RACS, EMU), CIRADA's VLASS tables, a PyBDSF FITS list. For
those a survey needs a config and no code::

    catalogue:
      path: resources/hipass/1904_comp.fits
      format: table
      table:
        columns: {ra: ra, dec: dec, flux: int_flux, peak_flux: peak_flux,
                  major: a, minor: b, pa: pa, local_rms: local_rms,
                  beam_major: psf_a, beam_minor: psf_b, beam_pa: psf_pa}
        units: {ra: deg, dec: deg, flux: Jy, peak_flux: Jy/beam, major: arcsec,
                minor: arcsec, pa: deg, local_rms: Jy/beam, beam_major: arcsec,
                beam_minor: arcsec, beam_pa: deg}
        sizes_include_beam: true

Every key is described in the config schema (``catalogue.table``), which
also holds the defaults. Units come from the table where it has them, else
from ``units``; a column without either, or a mapped column the table lacks,
is an error naming it. Conventions of the result are the schema's: degrees,
Jy, intrinsic (beam-deconvolved) Gaussian FWHM in arcsec, PA east of north
in [0, 180).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..configuration import with_section_defaults
from ..errors import CatalogueError
from ..geometry import (
    FWHM_PER_SIGMA,
    covariance_from_ellipse,
    deconvolve,
    ellipse_from_covariance,
    normalise_ra,
)
from .registry import CatalogueFormat, Survey
from .sdc1 import sdc1_pa_to_east_of_north
from .tables import column, read_table, with_original_columns

__all__ = ["read_table_catalogue"]

log = logging.getLogger(__name__)

#: schema unit of each mapped quantity
_UNITS = {"ra": "deg", "dec": "deg", "flux": "Jy", "peak_flux": "Jy/beam", "local_rms": "Jy/beam",
          "major": "arcsec", "minor": "arcsec", "pa": "deg",
          "beam_major": "arcsec", "beam_minor": "arcsec", "beam_pa": "deg"}


def _integers(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CatalogueError(path, f"column {name!r} must hold integers, found {float(values[row])!r}", row=row + 1)
    return values.astype(np.int64)


def read_table_catalogue(path: str | Path, options: Mapping | None) -> pd.DataFrame:
    """Read ``path`` with the column map of ``options`` (the config's ``catalogue.table``)."""
    path = Path(path)
    options = with_section_defaults(options, "catalogue", "table")
    columns, units = options["columns"], options["units"]
    table = read_table(path, options["read_format"])
    n = len(table)

    def quantity(key: str) -> np.ndarray | None:
        name = columns.get(key)
        if name is None:
            return None
        if name not in table.colnames:
            raise CatalogueError(path, f"column {name!r} (catalogue.table.columns.{key}) is missing "
                                       f"(has: {', '.join(table.colnames)})")
        return column(table, path, name, _UNITS.get(key), default_unit=units.get(key),
                      unit_key=f"catalogue.table.units.{key}")

    ra, dec = quantity("ra"), quantity("dec")
    major, minor, pa = quantity("major"), quantity("minor"), quantity("pa")
    if major is None:
        log.info("%s: no size columns mapped: every source is taken as unresolved (size 0)", path)
        major = np.zeros(n)
    minor = major.copy() if minor is None else minor
    pa = np.zeros(n) if pa is None else pa
    if options["size"] == "sigma":
        major, minor = major * FWHM_PER_SIGMA, minor * FWHM_PER_SIGMA
    if options["pa_convention"] == "sdc1":
        pa = sdc1_pa_to_east_of_north(pa)
    if options["sizes_include_beam"]:
        beam = [quantity(f"beam_{k}") for k in ("major", "minor", "pa")]
        fixed = options.get("beam") or {}
        for i, key in enumerate(("major", "minor", "pa")):
            if beam[i] is None:
                if key not in fixed:
                    raise CatalogueError(path, "sizes_include_beam is true: map the beam columns (catalogue.table."
                                           f"columns.beam_{key}) or give catalogue.table.beam.{key}")
                beam[i] = np.full(n, float(fixed[key]))
        cov = deconvolve(covariance_from_ellipse(major, minor, pa), covariance_from_ellipse(*beam))
        major, minor, pa = ellipse_from_covariance(cov)
    ids = quantity("source_id")
    ids = np.arange(1, n + 1, dtype=np.int64) if ids is None else _integers(ids, path, columns["source_id"])
    classes = quantity("class_id")
    if classes is None:
        log.info("%s: no class column mapped: every source is class %d", path, options["default_class"])
        classes = np.full(n, options["default_class"], dtype=np.int16)
    else:
        classes = _integers(classes, path, columns["class_id"]).astype(np.int16)

    def optional(key: str) -> np.ndarray:
        values = quantity(key)
        return np.full(n, np.nan) if values is None else values

    out = pd.DataFrame({
        "source_id": ids, "ra": normalise_ra(ra), "dec": dec, "ra_core": normalise_ra(ra), "dec_core": dec,
        "flux": optional("flux"), "peak_flux": optional("peak_flux"),
        "major_fwhm": major, "minor_fwhm": minor, "pa": np.mod(pa, 180.0),
        "size_class": np.full(n, 2, dtype=np.int8), "class_id": classes,
        "local_rms": optional("local_rms"),
    })
    return with_original_columns(out, table)


FORMATS = {
    "table": CatalogueFormat(read_table_catalogue, "any table astropy reads (FITS, VOTable, ECSV, CSV), with a "
                             "column map in catalogue.table", size_classes=(2,), text=False, options_key="table"),
}

SURVEYS = {
    # a survey whose catalogue is an ordinary table: the config maps its columns
    "generic": Survey("any survey with an ordinary source table (Aegean, Selavy, VLASS, PyBDSF FITS)", {
        "catalogue": {"format": "table"},
        "classes": {1: "source"},
        "filter": {"noise": "auto", "flux": "peak"},
        "score": {"activate": False},
        "train": {"activate": False},
    }),
}
