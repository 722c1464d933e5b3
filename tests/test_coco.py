"""COCO files: the annotations as text, written by one or several processes, equal json.dumps of their dicts."""

import json

import numpy as np
import pandas as pd
import pytest
from pycocotools.coco import COCO

from radiodet.coco import _coco_json, _coco_parts, build_coco


def _split_tables(n_cutouts: int = 40, n_boxes: int = 30_000, seed: int = 5):
    """A manifest of 100 px cutouts and boxes in the catalogue's units (Jy, deg, px), some off the image."""
    rng = np.random.default_rng(seed)
    ids = [f"f_x{100 * (i % 8):05d}_y{100 * (i // 8):05d}" for i in range(n_cutouts)]
    manifest = pd.DataFrame({"cutout_id": ids, "field": "f", "split": "train", "file": [f"fits/{c}.fits" for c in ids],
                             "width": 100, "height": 100, "x0": [100 * (i % 8) for i in range(n_cutouts)],
                             "y0": [100 * (i // 8) for i in range(n_cutouts)]})
    x, y = rng.uniform(-3, 103, n_boxes), rng.uniform(-3, 103, n_boxes)
    major = rng.uniform(2.5, 12, n_boxes)
    minor = major * rng.uniform(0.3, 1, n_boxes)
    boxes = pd.DataFrame({
        "split": "train", "cutout_id": rng.choice(ids, n_boxes), "source_id": rng.permutation(n_boxes) * 7 + 3,
        "class_id": rng.integers(1, 4, n_boxes), "x": x, "y": y,
        "bbox_x": np.clip(x - major, 0, 100), "bbox_y": np.clip(y - major, 0, 100),
        "bbox_w": rng.uniform(0, 20, n_boxes), "bbox_h": rng.uniform(0, 20, n_boxes),
        "flux": 10 ** rng.uniform(-7, -3, n_boxes), "snr": rng.uniform(3, 1e3, n_boxes),
        "ra": rng.uniform(-0.5, 0.5, n_boxes) % 360, "dec": rng.uniform(-30.5, -29.5, n_boxes),
        "intrinsic_major": major / 2, "intrinsic_minor": minor / 2, "intrinsic_angle": rng.uniform(-90, 90, n_boxes),
        "pb": rng.uniform(0.2, 1, n_boxes), "rms": rng.normal(2e-7, 1e-8, n_boxes),
        "ellipse_major": major, "ellipse_minor": minor, "ellipse_angle": rng.uniform(-90, 90, n_boxes),
    })
    far = rng.random(n_boxes) < 0.01  # ellipses wholly outside: their polygon becomes the box
    boxes.loc[far, ["x", "y"]] = 400.0
    return manifest, boxes


def _reference_records(mine: pd.DataFrame, polygons: list[list[float]]) -> list[dict]:
    """The annotation dicts built one by one: what the COCO text must decode to (and json.dumps to)."""
    out = []
    for k, row in enumerate(mine.itertuples()):
        bbox = [round(float(getattr(row, c)), 4) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
        polygon = polygons[k]
        if not polygon:
            x, y, w, h = bbox
            polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
        out.append({
            "id": k + 1, "image_id": int(row.image_id), "category_id": int(row.class_id), "bbox": bbox,
            "area": round(float(row.bbox_w * row.bbox_h), 4), "iscrowd": 0, "segmentation": [polygon],
            "source_id": int(row.source_id), "flux": float(row.flux), "snr": float(row.snr), "ra": float(row.ra),
            "dec": float(row.dec), "centre": [round(float(row.x) + 0.5, 4), round(float(row.y) + 0.5, 4)],
            "intrinsic": [round(float(row.intrinsic_major), 4), round(float(row.intrinsic_minor), 4),
                          round(float(row.intrinsic_angle), 3)],
            "pb": round(float(row.pb), 6), "rms": float(row.rms)})
    return out


def _reference_text(head: dict, annotations) -> str:
    return json.dumps({**head, "annotations": _reference_records(annotations.table, annotations.polygons)})


def test_annotations_written_by_several_processes_equal_json_dumps_of_the_dicts(tmp_path, monkeypatch):
    import radiodet.coco

    monkeypatch.setattr(radiodet.coco, "_MIN_ROWS_PER_WORKER", 1000)
    manifest, boxes = _split_tables()
    options = dict(n_sigma=3.0, fits_prefix={"f": "../cutouts/f"}, npy_prefix=None, survey="s", segmentation=True)
    classes = {1: "SS-AGN", 2: "FS-AGN", 3: "SFG"}
    head, annotations = _coco_parts("train", manifest, boxes, classes, **options)
    one_pass = _reference_text(head, annotations)
    assert len(annotations) == len(boxes)
    assert _coco_json(head, annotations, 1) == one_pass
    assert _coco_json(head, annotations, 3) == one_pass  # 12 ranges over 3 processes (30,000 rows)
    assert json.dumps(build_coco("train", manifest, boxes, classes, **options)) == one_pass
    decoded = json.loads(one_pass)
    assert [a["id"] for a in decoded["annotations"]] == list(range(1, len(boxes) + 1))
    boxed = [a for a in decoded["annotations"] if len(a["segmentation"][0]) == 8]
    assert boxed, "the ellipses off the image fall back to their box"
    path = tmp_path / "instances_train.json"
    path.write_text(one_pass)
    coco = COCO(str(path))  # the real pycocotools reads it
    assert len(coco.getAnnIds()) == len(boxes) and len(coco.getImgIds()) == len(manifest)


def test_values_json_writes_as_nan_or_infinity_are_written_as_json_dumps_does():
    manifest, boxes = _split_tables(n_boxes=500)
    boxes.loc[3, "flux"] = np.nan
    boxes.loc[4, "rms"] = np.inf
    boxes.loc[5, "pb"] = -np.inf
    boxes.loc[6, "bbox_w"] = np.nan  # its area, and the box standing in for its polygon
    boxes.loc[6, ["x", "y"]] = 400.0
    for segmentation in (True, False):
        options = dict(n_sigma=3.0, fits_prefix={"f": "."}, npy_prefix=None, survey="s", segmentation=segmentation)
        head, annotations = _coco_parts("train", manifest, boxes, {1: "a", 2: "b", 3: "c"}, **options)
        text = _coco_json(head, annotations, 1)
        assert text == _reference_text(head, annotations)
        assert "NaN" in text and "Infinity" in text and "-Infinity" in text


def test_an_empty_split_encodes_as_json_dumps_does():
    manifest, boxes = _split_tables(n_boxes=10)
    options = dict(n_sigma=3.0, fits_prefix={"f": "."}, npy_prefix=None, survey="s", segmentation=False)
    head, annotations = _coco_parts("test", manifest, boxes, {1: "a"}, **options)
    assert len(annotations) == 0
    assert _coco_json(head, annotations, 2) == _reference_text(head, annotations)
    assert build_coco("test", manifest, boxes, {1: "a"}, **options)["annotations"] == []


@pytest.mark.parametrize("prefix", [".", "..", "../cutouts/f", "a//b/", "./a", "/abs/dir"])
@pytest.mark.parametrize("name", ["x.fits", "fits/x.fits", "./fits//x.fits", "a/../b/x.npy", "/abs/x.fits", "fits/",
                                  "fits/.", ".", ".."])
def test_paths_under_a_prefix_are_the_ones_pathlib_joins(prefix, name):
    from pathlib import Path

    from radiodet.coco import _path_under

    cache = {}
    assert _path_under(prefix, name, cache) == str(Path(prefix) / name)
    assert _path_under(prefix, name, cache) == str(Path(prefix) / name)  # from the cache
