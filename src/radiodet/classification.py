"""Per-source classification cutouts (the MingoLoTSS recipe, every step configurable).

For each labelled source of the catalogue:

1. a stamp centred on the catalogue position, cut from the field image that
   contains it (the field whose centre is nearest, when several do) with the
   field's WCS (``astropy.nddata.Cutout2D``; parts outside the image are NaN);
2. NaN -> 0;
3. pixels below ``clip_sigma`` x rms set to 0 (rms from the field's rms map
   at the source, else 1.4826 x MAD of the stamp);
4. the central ``crop`` x ``crop`` pixels;
5. a radial mask: pixels farther than ``mask_radius`` pixels from the centre
   set to 0 (``None``: no mask);
6. min-max scaling to 0-255, uint8 (an all-zero stamp stays 0).

Output: ``images.npy`` (N, crop, crop) uint8, in the row order of
``metadata.parquet`` (index, source_id, label, label_name, field, ra, dec,
rms, original catalogue name when there is one). Arrays are stored unflipped
(row 0 = FITS row 0), like every view this package writes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.nddata import Cutout2D

from .atomic import atomic_directory, write_json
from .configuration import schema_config
from .images import open_image, robust_rms, sample_image
from .logs import Progress
from .schema import read_sources
from .tiling import PixelBox

__all__ = ["StampConfig", "preprocess_stamp", "build_classification_dataset"]

log = logging.getLogger(__name__)


@schema_config("classification", ignore=("label_table",))
class StampConfig:
    """Config ``classification`` (the recipe's steps; defaults from the schema)."""

    stamp: int                # pixels cut around the source before cropping
    clip_sigma: float | None
    crop: int
    mask_radius: float | None
    nan_to_zero: bool = True  # not a config key: the recipe always does it


def preprocess_stamp(stamp: np.ndarray, rms: float | None, config: StampConfig) -> np.ndarray:
    """One stamp through steps 2-6; returns uint8 (crop, crop)."""
    data = np.array(stamp, dtype=np.float64)
    if config.nan_to_zero:
        data = np.nan_to_num(data, nan=0.0)
    if config.clip_sigma is not None:
        noise = rms if rms is not None and np.isfinite(rms) and rms > 0 else robust_rms(data[data != 0])[0]
        if np.isfinite(noise):
            data[data < config.clip_sigma * noise] = 0.0
    ny, nx = data.shape
    if config.crop > min(ny, nx):
        raise ValueError(f"classification.crop {config.crop} is larger than the stamp {ny} x {nx}")
    y0, x0 = (ny - config.crop) // 2, (nx - config.crop) // 2
    data = data[y0:y0 + config.crop, x0:x0 + config.crop]
    if config.mask_radius is not None:
        yy, xx = np.mgrid[0:config.crop, 0:config.crop]
        centre = (config.crop - 1) / 2.0
        data[np.hypot(xx - centre, yy - centre) > config.mask_radius] = 0.0
    low, high = float(np.min(data)), float(np.max(data))
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.round(255.0 * (data - low) / (high - low)).astype(np.uint8)


def _home_fields(sources: pd.DataFrame, fields: pd.DataFrame) -> np.ndarray:
    """Per source: the field whose image contains it, nearest to that image's centre ('' if none)."""
    home = np.full(len(sources), "", dtype=object)
    best = np.full(len(sources), np.inf)
    for row in fields.itertuples():
        with open_image(row.image) as image:
            ny, nx = image.shape
            x, y = image.wcs.world_to_pixel_values(sources["ra"].to_numpy(), sources["dec"].to_numpy())
        inside = PixelBox(0, nx, 0, ny).holds(x, y)  # False for NaN positions
        distance = np.hypot(x - (nx - 1) / 2, y - (ny - 1) / 2)
        better = inside & (distance < best)
        home[better], best[better] = row.field, distance[better]
    return home


def build_classification_dataset(sources_path: str | Path, fields: pd.DataFrame, out_dir: str | Path, *,
                                 classes: dict[int, str], config: StampConfig,
                                 label_table: str | Path | None = None) -> dict:
    """Write ``images.npy`` and ``metadata.parquet`` into ``out_dir`` (atomically).

    ``fields``: the field table (field, image, rms_map). Labels are the
    catalogue's ``class_id`` mapped through ``classes``; with ``label_table``
    (CSV with ``source_id`` or ``name`` and ``label``) those labels replace
    them and only the sources listed there are used. Sources in no field are
    counted and skipped.

    Parameters
    ----------
    sources_path : str or Path
        The ingest stage's Parquet (``ra``, ``dec`` in deg, ``class_id``).
    fields : pandas.DataFrame
        One row per field: ``field``, ``image`` (FITS path) and ``rms_map``
        (FITS path or empty: the stamp's robust rms is used).
    out_dir : str or Path
        Directory written (replaced whole): ``images.npy`` (N, crop, crop)
        uint8 stamps (the recipe's min-max scaling to 0..255),
        ``metadata.parquet`` (one row per stamp, in the order of the images:
        source_id, label, label_name, field, ra and dec in deg, rms in image
        units, the catalogue's source name where it has one) and
        ``summary.json``.
    classes : dict of int to str
        Label code -> name.
    config : StampConfig
        The recipe (stamp and crop sides in pixels, sigma clip, mask radius).
    label_table : str or Path, optional
        CSV of labels that replace the catalogue's classes.

    Returns
    -------
    dict
        What ``summary.json`` holds: stamps written, sources skipped outside
        every field, stamps per label, array shape and dtype, the recipe.
    """
    sources = read_sources(sources_path)
    sources["label"] = sources["class_id"].astype(int)
    if label_table is not None:
        labels = pd.read_csv(label_table)
        key = "source_id" if "source_id" in labels else "name"
        names = sources["source_id"] if key == "source_id" else sources.filter(like="Name").iloc[:, 0]
        mapping = dict(zip(labels[key], labels["label"].astype(int)))
        sources["label"] = names.map(mapping)
        sources = sources[sources["label"].notna()].astype({"label": int})
    unknown = sorted(set(sources["label"]) - set(classes))
    if unknown:
        raise ValueError(f"{sources_path}: labels {unknown} have no name in the config classes")
    sources = sources.reset_index(drop=True)
    sources["field"] = _home_fields(sources, fields)
    outside = int((sources["field"] == "").sum())
    if outside:
        log.info("%d catalogue sources lie in no field image and are skipped", outside)
    sources = sources[sources["field"] != ""].reset_index(drop=True)
    stamps, rms_values = [], []
    progress = Progress("classification stamps", len(sources), unit="sources")
    by_field = fields.set_index("field")
    for field, group in sources.groupby("field", sort=True):
        image_path = by_field.loc[field, "image"]
        rms_map = by_field.loc[field].get("rms_map") or None
        rms_at = sample_image(rms_map, group["ra"], group["dec"], order=0) if rms_map else np.full(len(group), np.nan)
        with open_image(image_path) as image:
            data = image.data
            for (index, source), rms in zip(group.iterrows(), rms_at):
                x, y = image.wcs.world_to_pixel_values(source["ra"], source["dec"])
                cut = Cutout2D(data, (float(x), float(y)), (config.stamp, config.stamp), mode="partial",
                               fill_value=np.nan, copy=True)
                stamps.append((index, preprocess_stamp(cut.data, rms, config)))
                rms_values.append((index, float(rms)))
                progress.advance()
    progress.finish()
    order = [i for i, _ in sorted(stamps, key=lambda item: item[0])]
    images = np.stack([s for _, s in sorted(stamps, key=lambda item: item[0])]) if stamps else \
        np.zeros((0, config.crop, config.crop), np.uint8)
    rms_by_index = dict(rms_values)
    name_column = next((c for c in sources.columns if c.lower().endswith("source_name")), None)
    metadata = pd.DataFrame({
        "index": np.arange(len(order)), "source_id": sources.loc[order, "source_id"].to_numpy(),
        "label": sources.loc[order, "label"].to_numpy(),
        "label_name": [classes[int(v)] for v in sources.loc[order, "label"]],
        "field": sources.loc[order, "field"].to_numpy(), "ra": sources.loc[order, "ra"].to_numpy(),
        "dec": sources.loc[order, "dec"].to_numpy(), "rms": [rms_by_index[i] for i in order],
    })
    if name_column:
        metadata["name"] = sources.loc[order, name_column].to_numpy()
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        np.save(tmp / "images.npy", images)
        metadata.to_parquet(tmp / "metadata.parquet", index=False)
        summary = {"sources": int(len(metadata)), "skipped_outside_fields": outside,
                   "per_label": {classes[int(k)]: int(v)
                                 for k, v in metadata["label"].value_counts().sort_index().items()},
                   "shape": list(images.shape), "dtype": "uint8", "recipe": vars(config)}
        write_json(tmp / "summary.json", summary)
    log.info("classification dataset: %d stamps %s, per label %s", len(metadata), images.shape[1:],
             summary["per_label"])
    return summary
