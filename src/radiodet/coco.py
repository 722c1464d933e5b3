"""COCO detection annotation files, one per split, with the images beside them.

Layout of ``results/<survey>/coco/``::

    instances_train.json  instances_val.json  instances_test.json
    images/<split>/<cutout_id>.png

* ``images[].file_name`` is relative to the JSON's directory;
  ``images[].fits_file`` is the cutout FITS (with its own WCS), also relative
  to the JSON, so any box can be mapped back to the sky; ``npy_file`` likewise
  when NPY views exist.
* ``annotations[].bbox`` is ``[x, y, width, height]`` in floats, COCO
  continuous image coordinates, image array unflipped (row 0 = FITS row 0): a
  source at 0-based FITS pixel (x, y) of the cutout sits at (x + 0.5, y + 0.5).
* ``annotations[]`` also carry ``source_id``, ``flux`` (Jy, the catalogue's,
  not attenuated by the primary beam), ``snr``, ``ra``, ``dec`` (deg),
  ``centre`` ``[x, y]`` (the source position in the same COCO continuous
  coordinates, unclipped), ``intrinsic`` ``[major, minor, angle]`` (the
  source's own Gaussian before the beam: FWHM in pixels, major axis angle in
  degrees from +x towards +y), ``pb`` (primary-beam response at the source, 1
  without a primary beam; the image shows ``flux x pb``) and ``rms`` (the
  noise the filter used, image unit); ``area`` is the box area;
  ``segmentation`` is the box ellipse (source convolved with the beam) as a
  polygon clipped to the image.
* ``categories`` come from the config ``classes`` mapping (id -> name).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from shapely.geometry import Polygon
from shapely.geometry import box as shapely_box

from .atomic import atomic_directory, write_json
from .manifest import read_manifests
from .tiling import SPLITS

__all__ = ["ellipse_polygon", "build_coco", "write_coco"]

log = logging.getLogger(__name__)


def ellipse_polygon(cx, cy, major_fwhm, minor_fwhm, angle_deg, n_sigma, width, height, *, vertices: int = 24):
    """Flat [x1, y1, x2, y2, ...] of the n-sigma ellipse clipped to the image.

    ``major_fwhm``/``minor_fwhm`` in pixels, ``angle_deg`` of the major axis
    from +x towards +y; all in COCO coordinates. Empty list if nothing is
    inside the image.
    """
    sigma_to_half = n_sigma / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    a, b = major_fwhm * sigma_to_half, minor_fwhm * sigma_to_half
    t = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    xs = cx + a * np.cos(t) * c - b * np.sin(t) * s
    ys = cy + a * np.cos(t) * s + b * np.sin(t) * c
    # convex polygon with a rectangle: a convex polygon, or a degenerate line/point
    clipped = Polygon(np.column_stack([xs, ys])).intersection(shapely_box(0, 0, width, height))
    if clipped.is_empty or clipped.geom_type != "Polygon":
        return []
    coords = np.asarray(clipped.exterior.coords)[:-1]
    return [round(float(v), 3) for v in coords.ravel()]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_coco(split: str, manifest: pd.DataFrame, boxes: pd.DataFrame, classes: dict[int, str], *,
               n_sigma: float, fits_prefix: dict[str, str], npy_prefix: dict[str, str] | None = None,
               survey: str = "", segmentation: bool = True) -> dict:
    """The COCO dict of one split (pure function; paths given as prefixes).

    ``fits_prefix[field]`` is the path, relative to the JSON, of the directory
    the manifest's ``file`` entries are relative to; ``npy_prefix[field]`` the
    directory of the NPY views.
    """
    images, annotations = [], []
    sub = manifest[manifest["split"] == split].sort_values(["field", "cutout_id"]).reset_index(drop=True)
    by_cutout = {cid: g for cid, g in boxes[boxes["split"] == split].groupby("cutout_id", sort=True)}
    annotation_id = 1
    for image_id, row in enumerate(sub.itertuples(), start=1):
        record = {"id": image_id, "file_name": f"images/{split}/{row.cutout_id}.png", "width": int(row.width),
                  "height": int(row.height), "cutout_id": row.cutout_id, "field": row.field,
                  "fits_file": str(Path(fits_prefix[row.field]) / row.file),
                  "parent_x0": int(row.x0), "parent_y0": int(row.y0)}
        if npy_prefix:
            record["npy_file"] = str(Path(npy_prefix[row.field]) / f"{row.cutout_id}.npy")
        images.append(record)
        group = by_cutout.get(row.cutout_id)
        if group is None:
            continue
        for box in group.sort_values("source_id").itertuples():
            annotations.append({
                "id": annotation_id, "image_id": image_id, "category_id": int(box.class_id),
                "bbox": [round(float(v), 4) for v in (box.bbox_x, box.bbox_y, box.bbox_w, box.bbox_h)],
                "area": round(float(box.bbox_w * box.bbox_h), 4), "iscrowd": 0,
                "segmentation": [ellipse_polygon(box.x + 0.5, box.y + 0.5, box.ellipse_major, box.ellipse_minor,
                                                 box.ellipse_angle, n_sigma, row.width, row.height)
                                 if segmentation else []],
                "source_id": int(box.source_id), "flux": float(box.flux), "snr": float(box.snr),
                "ra": float(box.ra), "dec": float(box.dec),
                "centre": [round(float(box.x) + 0.5, 4), round(float(box.y) + 0.5, 4)],
                "intrinsic": [round(float(box.intrinsic_major), 4), round(float(box.intrinsic_minor), 4),
                              round(float(box.intrinsic_angle), 3)],
                "pb": round(float(box.pb), 6), "rms": float(box.rms),
            })
            annotation_id += 1
    # drop polygons that clipped to nothing (keeps pycocotools happy)
    for ann in annotations:
        if not ann["segmentation"][0]:
            x, y, w, h = ann["bbox"]
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {
        "info": {"description": f"radiodet {survey} {split} split", "version": "1",
                 "conventions": "bbox [x, y, w, h] in continuous pixel coordinates of the unflipped image "
                                "(row 0 = FITS row 0); 0-based FITS pixel (x, y) -> (x + 0.5, y + 0.5)"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": int(k), "name": str(v), "supercategory": "radio_source"}
                       for k, v in sorted(classes.items())],
    }


def write_coco(boxes_path: str | Path, manifest_paths: dict[str, str | Path], views_dirs: dict[str, str | Path],
               out_dir: str | Path, summary_path: str | Path, *, classes: dict[int, str], n_sigma: float,
               survey: str = "", ownership_path: str | Path | None = None, segmentation: bool = True) -> dict:
    """Write ``instances_<split>.json`` and link the PNG views into ``images/``.

    Parameters
    ----------
    boxes_path : str or Path
        The boxes stage's Parquet (COCO pixel-edge boxes, ellipses, centres).
    manifest_paths, views_dirs : dict
        {field: manifest}, {field: views directory} (the PNGs become the images).
    out_dir, summary_path : str or Path
        The COCO directory (it appears atomically) and a JSON summary.
    classes : dict
        Class code -> name: the COCO categories (ids are the codes).
    n_sigma : float
        The boxes' half-size in sigma (for the ellipse segmentation polygons).
    ownership_path : str or Path, optional
        The index stage's cutout ownership: only cutouts owned by their field
        become images (overlapping mosaics give each patch of sky once).
    segmentation : bool
        Write each source's ellipse as a polygon.

    Returns
    -------
    dict
        Images and annotations per split (also written to ``summary_path``).
    """
    out_dir = Path(out_dir)
    boxes = pd.read_parquet(boxes_path)
    manifests = read_manifests(manifest_paths, ownership_path)
    unknown = set(boxes["class_id"].unique()) - set(classes)
    if unknown:
        raise ValueError(f"{boxes_path}: class ids {sorted(unknown)} have no name in the config classes")
    final = out_dir.resolve()

    def rel(path) -> str:
        return os.path.relpath(Path(path).resolve(), final)

    fits_prefix = {field: rel(Path(p).parent) for field, p in manifest_paths.items()}
    npy_prefix = {field: rel(d) for field, d in views_dirs.items()
                  if any(Path(d).glob("*.npy"))} or None
    summary = {"images": {}, "annotations": {}}
    with atomic_directory(out_dir) as tmp:
        for split in SPLITS:
            coco = build_coco(split, manifests, boxes, classes, n_sigma=n_sigma, fits_prefix=fits_prefix,
                              npy_prefix=npy_prefix if npy_prefix and len(npy_prefix) == len(views_dirs) else None,
                              survey=survey, segmentation=segmentation)
            for image in coco["images"]:
                _link_or_copy(Path(views_dirs[image["field"]]) / f"{image['cutout_id']}.png", tmp / image["file_name"])
            write_json(tmp / f"instances_{split}.json", coco, indent=None)
            summary["images"][split] = len(coco["images"])
            summary["annotations"][split] = len(coco["annotations"])
            log.info("%s: %d images, %d annotations", split, len(coco["images"]), len(coco["annotations"]))
    write_json(summary_path, summary)
    return summary
