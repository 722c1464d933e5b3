"""MiraBest: FIRST cutouts of FRI/FRII radio galaxies and their label table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..geometry import normalise_ra
from .registry import CatalogueFormat, Survey
from .sdc1 import LAS_TO_FWHM
from .tables import read_whitespace_table, with_original_columns

__all__ = ["read_mirabest", "MIRABEST_COLUMNS"]


#: columns of the MiraBest label table (mirabestdata.txt), whitespace separated
MIRABEST_COLUMNS = ["plate", "mjd", "fiber", "ra_hours", "dec_deg", "z", "col7", "size_arcsec", "code"]


def read_mirabest(path: str | Path, options=None) -> pd.DataFrame:
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
    out = with_original_columns(out, raw)
    out["orig_code"] = code
    out["orig_confidence"] = (code // 10) % 10
    out["orig_morphology"] = code % 10
    return out


FORMATS = {
    "mirabest": CatalogueFormat(read_mirabest, "MiraBest label table (mirabestdata.txt)", size_classes=(1,)),
}

SURVEYS = {
    # the per-source classification dataset only
    "mirabest": Survey("MiraBest FRI/FRII classification (FIRST cutouts)", {
        "catalogue": {"format": "mirabest"},
        "classes": {1: "FRI", 2: "FRII", 3: "hybrid", 4: "unclassifiable"},
        "datasets": {"detection": False, "classification": True},
        "classification": {"stamp": 300, "crop": 150, "clip_sigma": 3.0, "mask_radius": 75.0},
        "score": {"activate": False},
        "train": {"activate": False},
    }),
}
