"""COCO files: the annotations built and encoded by several processes equal one pass, byte for byte."""

import json

import numpy as np
import pandas as pd
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


def test_annotations_encoded_by_several_processes_equal_one_pass_byte_for_byte(tmp_path):
    manifest, boxes = _split_tables()
    options = dict(n_sigma=3.0, fits_prefix={"f": "../cutouts/f"}, npy_prefix=None, survey="s", segmentation=True)
    classes = {1: "SS-AGN", 2: "FS-AGN", 3: "SFG"}
    head, annotations = _coco_parts("train", manifest, boxes, classes, **options)
    one_pass = json.dumps(build_coco("train", manifest, boxes, classes, **options))
    assert len(annotations) == len(boxes)
    assert _coco_json(head, annotations, 1) == one_pass
    assert _coco_json(head, annotations, 3) == one_pass  # 12 ranges over 3 processes
    decoded = json.loads(one_pass)
    assert [a["id"] for a in decoded["annotations"]] == list(range(1, len(boxes) + 1))
    boxed = [a for a in decoded["annotations"] if len(a["segmentation"][0]) == 8]
    assert boxed, "the ellipses off the image fall back to their box"
    path = tmp_path / "instances_train.json"
    path.write_text(one_pass)
    coco = COCO(str(path))  # the real pycocotools reads it
    assert len(coco.getAnnIds()) == len(boxes) and len(coco.getImgIds()) == len(manifest)


def test_an_empty_split_encodes_as_json_dumps_does():
    manifest, boxes = _split_tables(n_boxes=10)
    options = dict(n_sigma=3.0, fits_prefix={"f": "."}, npy_prefix=None, survey="s", segmentation=False)
    head, annotations = _coco_parts("test", manifest, boxes, {1: "a"}, **options)
    assert len(annotations) == 0
    assert _coco_json(head, annotations, 2) == json.dumps(build_coco("test", manifest, boxes, {1: "a"}, **options))
