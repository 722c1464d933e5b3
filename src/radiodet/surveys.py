"""Survey adapters: what differs between SDC1, LoTSS and MGCLS, as data.

A config names its adapter (``adapter: lotss``); the adapter's defaults fill
every key the config leaves out (the config always wins), before the config
is validated against the schema. Rules and stages never branch on the survey:
they read the catalogue format, class mapping, image plane, noise source and
cutout layout from the merged config.
"""

from __future__ import annotations

import copy

__all__ = ["SURVEYS", "with_survey_defaults"]

SURVEYS: dict[str, dict] = {
    # SKA SDC1: 4-D images, true catalogues; noise from the cutouts (no rms maps).
    "sdc1": {
        "catalogue": {"format": "sdc1_truth"},
        "classes": {1: "SS-AGN", 2: "FS-AGN", 3: "SFG"},
        "cutouts": {"size": 205},
        "filter": {"noise": "mad", "flux": "peak"},
        "score": {"activate": True},
    },
    # LOFAR LoTSS DR1/DR2: PyBDSF catalogues with Isl_rms and S_Code, rms maps
    # in DR2; overlapping mosaics (each patch of sky from the nearest centre).
    "lotss": {
        "catalogue": {"format": "lotss"},
        "classes": {1: "single", 2: "multiple", 3: "complex"},
        "cutouts": {"size": 200},
        "filter": {"noise": "auto", "flux": "peak"},
        "score": {"activate": False},
        "train": {"activate": False},
    },
    # MeerKAT MGCLS: 4-D enhanced cubes (first plane Stokes I), 256 px crops
    # with minimal overlap and no NaN, per-field P2/P98 contrast stretch.
    "mgcls": {
        "catalogue": {"format": "mgcls"},
        "classes": {1: "point", 2: "extended"},
        "image": {"plane": [0, 0]},
        "cutouts": {"size": 256, "max_nan_fraction": 0.0, "layout": "n_plus_one"},
        "views": {"interval": "percentile", "percentiles": [2.0, 98.0], "stretch": "linear"},
        "filter": {"noise": "auto", "flux": "peak"},
        "score": {"activate": False},
        "train": {"activate": False},
        "datasets": {"detection": True, "ssl": True},
    },
    # MiraBest: FIRST cutouts of FRI/FRII radio galaxies with a label table;
    # the per-source classification dataset only.
    "mirabest": {
        "catalogue": {"format": "mirabest"},
        "classes": {1: "FRI", 2: "FRII", 3: "hybrid", 4: "unclassifiable"},
        "datasets": {"detection": False, "classification": True},
        "classification": {"stamp": 300, "crop": 150, "clip_sigma": 3.0, "mask_radius": 75.0},
        "score": {"activate": False},
        "train": {"activate": False},
    },
}


def _merge(defaults: dict, config: dict) -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "classes":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def with_survey_defaults(config: dict) -> dict:
    """``config`` over the defaults of its ``adapter`` (default ``sdc1``)."""
    name = config.get("adapter", "sdc1")
    if name not in SURVEYS:
        raise ValueError(f"adapter {name!r} is not one of {sorted(SURVEYS)}")
    return _merge({"adapter": name, **SURVEYS[name]}, config)
