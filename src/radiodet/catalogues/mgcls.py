"""MeerKAT Galaxy Cluster Legacy Survey (MGCLS): its compact-source catalogues."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..geometry import normalise_ra
from .registry import CatalogueFormat, Survey
from .tables import column, read_table, with_original_columns

__all__ = ["read_mgcls"]


def read_mgcls(path: str | Path, options=None) -> pd.DataFrame:
    """MGCLS compact-source catalogue (FITS table), as the simulator writes it.

    Columns: Source_ID, RA_deg, Dec_deg (deg), Stot_mJy (mJy), Speak_mJy
    (mJy/beam), smax_asec, smin_asec (intrinsic FWHM, arcsec), spa_deg (east
    of north), rms_mJy (mJy/beam, optional), Class (optional: 1 point,
    2 extended; default 1). Units are taken from the column names when the
    table carries none.
    """
    path = Path(path)
    table = read_table(path)
    ra = column(table, path, "RA_deg", "deg", default_unit="deg")
    dec = column(table, path, "Dec_deg", "deg", default_unit="deg")
    ids = (column(table, path, "Source_ID").round().astype(np.int64) if "Source_ID" in table.colnames
           else np.arange(1, len(table) + 1, dtype=np.int64))
    classes = (column(table, path, "Class").round().astype(np.int16) if "Class" in table.colnames
               else np.ones(len(table), dtype=np.int16))
    out = pd.DataFrame({
        "source_id": ids, "ra": normalise_ra(ra), "dec": dec, "ra_core": normalise_ra(ra), "dec_core": dec,
        "flux": column(table, path, "Stot_mJy", "Jy", default_unit="mJy"),
        "peak_flux": column(table, path, "Speak_mJy", "Jy/beam", default_unit="mJy/beam", required=False),
        "major_fwhm": column(table, path, "smax_asec", "arcsec", default_unit="arcsec"),
        "minor_fwhm": column(table, path, "smin_asec", "arcsec", default_unit="arcsec"),
        "pa": np.mod(column(table, path, "spa_deg", "deg", default_unit="deg"), 180.0),
        "size_class": np.full(len(table), 2, dtype=np.int8),
        "class_id": classes,
        "local_rms": column(table, path, "rms_mJy", "Jy/beam", default_unit="mJy/beam", required=False),
    })
    return with_original_columns(out, table)


FORMATS = {
    "mgcls": CatalogueFormat(read_mgcls, "MGCLS compact-source catalogue (FITS table)", size_classes=(2,),
                             text=False, reference=True),
}

SURVEYS = {
    # 4-D enhanced cubes (first plane Stokes I), 256 px crops with minimal
    # overlap and no NaN, per-field P2/P98 contrast stretch.
    "mgcls": Survey("MeerKAT Galaxy Cluster Legacy Survey", {
        "catalogue": {"format": "mgcls"},
        "classes": {1: "point", 2: "extended"},
        "image": {"plane": [0, 0]},
        "cutouts": {"size": 256, "max_nan_fraction": 0.0, "layout": "n_plus_one"},
        "views": {"interval": "percentile", "percentiles": [2.0, 98.0], "stretch": "linear"},
        "filter": {"noise": "auto", "flux": "peak"},
        "score": {"activate": False},
        "train": {"activate": False},
        "datasets": {"detection": True, "ssl": True},
    }),
}
