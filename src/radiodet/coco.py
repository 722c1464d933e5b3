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

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from .atomic import atomic_directory, atomic_path, link_files, write_json
from .jsontext import json_floats, json_ints, json_rounded, rounded_json
from .manifest import read_manifests
from .schema import read_frame
from .streaming import DropBehind
from .tiling import SPLITS
from .workers import CAN_FORK, forked_pool

__all__ = ["ellipse_polygon", "ellipse_polygons", "build_coco", "write_coco"]

log = logging.getLogger(__name__)


def ellipse_polygons(cx, cy, major_fwhm, minor_fwhm, angle_deg, n_sigma, width, height, *,
                     vertices: int = 24) -> list[list[float]]:
    """For each ellipse, the flat [x1, y1, x2, y2, ...] of its n-sigma polygon clipped to its image.

    ``cx``, ``cy`` (centres), ``major_fwhm``/``minor_fwhm`` (pixels) and
    ``angle_deg`` (of the major axis from +x towards +y) in COCO coordinates,
    one value per ellipse; ``width``, ``height`` of each one's image (or one
    for all). An empty list where nothing is inside the image. Vertices are
    rounded to 1e-3 px. All ellipses are computed and clipped at once (numpy
    and shapely's vectorised GEOS calls).
    """
    cx, cy, major, minor, angle = (np.asarray(v, dtype=float).ravel() for v in
                                   (cx, cy, major_fwhm, minor_fwhm, angle_deg))
    n = cx.size
    width, height = (np.broadcast_to(np.asarray(v, dtype=float), (n,)) for v in (width, height))
    sigma_to_half = n_sigma / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    a, b = (major * sigma_to_half)[:, None], (minor * sigma_to_half)[:, None]
    t = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    cos_t, sin_t = np.cos(t), np.sin(t)
    c, s = np.cos(np.deg2rad(angle))[:, None], np.sin(np.deg2rad(angle))[:, None]
    xs = cx[:, None] + a * cos_t * c - b * sin_t * s
    ys = cy[:, None] + a * cos_t * s + b * sin_t * c
    # convex polygon with a rectangle: a convex polygon, or a degenerate line/point
    clipped = shapely.intersection(shapely.polygons(np.stack([xs, ys], axis=-1)), shapely.box(0, 0, width, height))
    polygon = (shapely.get_type_id(clipped) == shapely.GeometryType.POLYGON) & ~shapely.is_empty(clipped)
    coords, owner = shapely.get_coordinates(shapely.get_exterior_ring(clipped[polygon]), return_index=True)
    rings = np.split(coords, np.flatnonzero(np.diff(owner)) + 1) if len(coords) else []
    out: list[list[float]] = [[] for _ in range(n)]
    for i, ring in zip(np.flatnonzero(polygon), rings):
        out[i] = [round(v, 3) for v in ring[:-1].ravel().tolist()]  # the ring's closing vertex dropped
    return out


def ellipse_polygon(cx, cy, major_fwhm, minor_fwhm, angle_deg, n_sigma, width, height, *, vertices: int = 24):
    """:func:`ellipse_polygons` of one ellipse: its flat vertex list (empty if outside the image)."""
    return ellipse_polygons([cx], [cy], [major_fwhm], [minor_fwhm], [angle_deg], n_sigma, width, height,
                            vertices=vertices)[0]


#: one annotation as ``json.dumps`` writes its dict (keys in this order, ", " and ": " separators)
_ANNOTATION = ('{"id": %s, "image_id": %s, "category_id": %s, "bbox": [%s, %s, %s, %s], "area": %s, '
               '"iscrowd": 0, "segmentation": [%s], "source_id": %s, "flux": %s, "snr": %s, "ra": %s, "dec": %s, '
               '"centre": [%s, %s], "intrinsic": [%s, %s, %s], "pb": %s, "rms": %s}')
#: the template's literal text around its fields
_ANNOTATION_PIECES = _ANNOTATION.split("%s")


class _Annotations:
    """One split's annotations, written as JSON text a range of rows at a time.

    ``mine``: the split's boxes with ``image_id``, in image then source order;
    ``polygons``: each one's clipped ellipse (may be empty: the box stands in,
    which keeps pycocotools happy). Rows ``start..stop-1`` get ids
    ``start+1..stop`` whoever writes them, so ranges written by several
    processes concatenate to one pass's list. The rows are formatted into
    ``json.dumps``'s text of their dicts a column at a time
    (:mod:`radiodet.jsontext`: ``bbox``, ``area``, ``centre`` and
    ``intrinsic`` rounded to 1e-4, the angle to 1e-3, ``pb`` to 1e-6 as
    Python's ``round`` does; floats as ``repr``), and the columns joined row
    by row with the template's literal text by Arrow, rather than building
    the dicts and encoding them (866,377 annotations in one process: 14.0 ->
    10.0 s for the whole stage); :func:`build_coco` decodes it.
    """

    #: rows formatted at a time (bounded memory, and text well under the 2 GiB of an Arrow string array)
    CHUNK = 100_000
    #: the boxes' columns an annotation is made of
    COLUMNS = ("image_id", "class_id", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "source_id", "flux", "snr", "ra",
               "dec", "x", "y", "intrinsic_major", "intrinsic_minor", "intrinsic_angle", "pb", "rms")

    def __init__(self, mine: pd.DataFrame, polygons: list[list[float]]):
        self.table = mine
        self.polygons = polygons

    def __len__(self) -> int:
        return len(self.table)

    def _segmentations(self, start: int, stop: int, bbox: tuple[np.ndarray, ...],
                       bbox_text: tuple[pa.Array, ...]) -> pa.Array:
        """Each row's polygon, as JSON text; the (rounded) box where the ellipse clipped to nothing.

        ``bbox``: the rounded x, y, w, h; ``bbox_text``: their JSON text.
        """
        x, y, w, h = bbox
        tx, ty = bbox_text[:2]
        right, top = json_floats(x + w), json_floats(y + h)
        text = pc.binary_join_element_wise("[", tx, ", ", ty, ", ", right, ", ", ty, ", ", right, ", ", top, ", ",
                                           tx, ", ", top, "]", "")
        drawn = [k for k, polygon in enumerate(self.polygons[start:stop]) if polygon]
        if drawn:
            polygons = []
            for k in drawn:
                polygon = self.polygons[start + k]
                item = ", ".join(map(float.__repr__, polygon))
                if "n" in item:  # repr's nan or inf (a finite repr has digits, ".", "e", "+", "-" only)
                    item = ", ".join(map(json.dumps, polygon))
                polygons.append("[" + item + "]")
            mask = np.zeros(len(text), dtype=bool)
            mask[drawn] = True
            text = pc.replace_with_mask(text, pa.array(mask), pa.array(polygons, pa.string()))
        return text

    def text(self, start: int = 0, stop: int | None = None) -> str:
        """Rows ``start..stop-1`` as JSON objects joined by ``", "`` (a list's items, no brackets)."""
        return self.encoded(start, stop).decode("utf-8")

    def encoded(self, start: int = 0, stop: int | None = None) -> bytes:
        """:meth:`text` as UTF-8 bytes (what the file holds)."""
        stop = len(self) if stop is None else stop
        return b", ".join(self._chunk(a, min(a + self.CHUNK, stop)) for a in range(start, stop, self.CHUNK))

    def _chunk(self, start: int, stop: int) -> bytes:
        rows = self.table.iloc[start:stop]
        column = {name: rows[name].to_numpy() for name in self.COLUMNS}
        bbox = [column[c].astype(np.float64) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
        bbox_rounded, bbox_text = zip(*(rounded_json(v, 4) for v in bbox))
        fields = [
            json_ints(np.arange(start + 1, stop + 1)), json_ints(column["image_id"]), json_ints(column["class_id"]),
            *bbox_text, json_rounded(bbox[2] * bbox[3], 4),
            self._segmentations(start, stop, bbox_rounded, bbox_text),
            json_ints(column["source_id"]), *(json_floats(column[c]) for c in ("flux", "snr", "ra", "dec")),
            json_rounded(column["x"].astype(np.float64) + 0.5, 4),
            json_rounded(column["y"].astype(np.float64) + 0.5, 4),
            json_rounded(column["intrinsic_major"], 4), json_rounded(column["intrinsic_minor"], 4),
            json_rounded(column["intrinsic_angle"], 3), json_rounded(column["pb"], 6),
            json_floats(column["rms"]),
        ]
        # the template's literal pieces between the fields, then ", " after every row
        joined = pc.binary_join_element_wise(
            *(item for literal, field in zip(_ANNOTATION_PIECES, fields) for item in (literal, field)),
            _ANNOTATION_PIECES[-1] + ", ", "")
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset:joined.offset + len(joined) + 1]
        first, end = int(offsets[0]), int(offsets[-1]) - 2  # the rows' texts lie end to end; the last ", " dropped
        return joined.buffers()[2].slice(first, end - first).to_pybytes()


def _coco_parts(split: str, manifest: pd.DataFrame, boxes: pd.DataFrame, classes: dict[int, str], *,
                n_sigma: float, fits_prefix: dict[str, str], npy_prefix: dict[str, str] | None,
                survey: str, segmentation: bool) -> tuple[dict, _Annotations]:
    """The COCO dict of one split without its annotations, and the annotations (see :func:`build_coco`)."""
    images = []
    sub = manifest[manifest["split"] == split].sort_values(["field", "cutout_id"]).reset_index(drop=True)
    image_ids = {cutout_id: i for i, cutout_id in enumerate(sub["cutout_id"], start=1)}
    joined: dict[tuple[str, str], str] = {}
    for image_id, row in enumerate(sub.itertuples(), start=1):
        record = {"id": image_id, "file_name": f"images/{split}/{row.cutout_id}.png", "width": int(row.width),
                  "height": int(row.height), "cutout_id": row.cutout_id, "field": row.field,
                  "fits_file": _path_under(fits_prefix[row.field], row.file, joined),
                  "parent_x0": int(row.x0), "parent_y0": int(row.y0)}
        if npy_prefix:
            record["npy_file"] = _path_under(npy_prefix[row.field], f"{row.cutout_id}.npy", joined)
        images.append(record)
    # annotations in image order, then by source id (one pass, no per-image frames), taken from the
    # boxes in one copy: a copy, a sort and a new index each copied all 866,377 rows of an SDC1 field
    keep = np.flatnonzero(((boxes["split"] == split) & boxes["cutout_id"].isin(image_ids)).to_numpy())
    image_of_row = boxes["cutout_id"].take(keep).map(image_ids).to_numpy(np.int64)
    order = np.lexsort((boxes["source_id"].to_numpy()[keep], image_of_row))  # stable, as sort_values(kind="stable")
    mine = boxes.take(keep[order])
    mine.index = pd.RangeIndex(len(mine))
    mine["image_id"] = image_of_row[order]
    sizes = sub.set_index("cutout_id").loc[mine["cutout_id"], ["width", "height"]].to_numpy()
    polygons = (ellipse_polygons(mine["x"] + 0.5, mine["y"] + 0.5, mine["ellipse_major"], mine["ellipse_minor"],
                                 mine["ellipse_angle"], n_sigma, sizes[:, 0], sizes[:, 1])
                if segmentation and len(mine) else [[] for _ in range(len(mine))])
    head = {
        "info": {"description": f"radiodet {survey} {split} split", "version": "1",
                 "conventions": "bbox [x, y, w, h] in continuous pixel coordinates of the unflipped image "
                                "(row 0 = FITS row 0); 0-based FITS pixel (x, y) -> (x + 0.5, y + 0.5)"},
        "licenses": [],
        "images": images,
        "annotations": None,
        "categories": [{"id": int(k), "name": str(v), "supercategory": "radio_source"}
                       for k, v in sorted(classes.items())],
    }
    return head, _Annotations(mine, polygons)


def _path_under(prefix: str, name: str, joined: dict[tuple[str, str], str]) -> str:
    """``str(Path(prefix) / name)``, the directory part of ``name`` joined by pathlib once per distinct one.

    ``joined`` caches those joins (25,600 images: two pathlib joins per image took a tenth of the job).
    """
    head, tail = os.path.split(name)
    if tail in ("", ".", ".."):
        return str(Path(prefix) / name)
    base = joined.get((prefix, head))
    if base is None:
        base = joined[(prefix, head)] = str(Path(prefix) / head)
    return tail if base == "." else f"{base}/{tail}"


def build_coco(split: str, manifest: pd.DataFrame, boxes: pd.DataFrame, classes: dict[int, str], *,
               n_sigma: float, fits_prefix: dict[str, str], npy_prefix: dict[str, str] | None = None,
               survey: str = "", segmentation: bool = True) -> dict:
    """The COCO dict of one split (pure function; paths given as prefixes).

    ``fits_prefix[field]`` is the path, relative to the JSON, of the directory
    the manifest's ``file`` entries are relative to; ``npy_prefix[field]`` the
    directory of the NPY views.
    """
    head, annotations = _coco_parts(split, manifest, boxes, classes, n_sigma=n_sigma, fits_prefix=fits_prefix,
                                    npy_prefix=npy_prefix, survey=survey, segmentation=segmentation)
    return json.loads(_coco_json(head, annotations, 1))


#: stands for the annotations list in the encoded head (a NUL never occurs in the COCO content)
_ANNOTATIONS_SLOT = "\0radiodet-annotations\0"
#: a split with fewer annotations per worker is written by one process (a fork costs more)
_MIN_ROWS_PER_WORKER = 50_000
#: the annotations being encoded, inherited by the forked workers of :func:`_coco_json`
_ENCODING: _Annotations | None = None


def _encode_range(start: int, stop: int) -> bytes:
    """The JSON of rows ``start..stop-1`` of :data:`_ENCODING`, without the list's brackets (UTF-8)."""
    return _ENCODING.encoded(start, stop)


def _coco_json_pieces(head: dict, annotations: _Annotations, workers: int) -> list[bytes]:
    """The UTF-8 bytes of the text ``json.dumps`` writes for the COCO dict, in pieces to write one after another.

    The annotations are written by ``workers`` processes: ``json.dumps``
    writes a list as its items' encodings joined by ``", "``, so contiguous
    ranges encoded apart and joined the same way give the same text.
    """
    global _ENCODING
    n = len(annotations)
    workers = max(1, min(int(workers), n // _MIN_ROWS_PER_WORKER))
    if workers == 1 or not CAN_FORK:  # spawned workers would not see the table
        pieces = [annotations.encoded()]
    else:
        bounds = np.linspace(0, n, 4 * workers + 1).astype(int)  # a few ranges per worker: even finishing
        _ENCODING = annotations
        try:
            with forked_pool(workers) as pool:
                pieces = list(pool.map(_encode_range, bounds[:-1], bounds[1:]))
        finally:
            _ENCODING = None
    text = json.dumps({**head, "annotations": _ANNOTATIONS_SLOT})
    slot = json.dumps(_ANNOTATIONS_SLOT)
    if text.count(slot) != 1:
        raise RuntimeError("the COCO head holds the annotations placeholder more than once")
    before, after = text.split(slot)
    out = [before.encode("utf-8"), b"["]
    for k, piece in enumerate(piece for piece in pieces if piece):
        out += [b", ", piece] if k else [piece]
    return out + [b"]", after.encode("utf-8")]


def _coco_json(head: dict, annotations: _Annotations, workers: int) -> str:
    """The text ``json.dumps`` writes for the COCO dict (:func:`_coco_json_pieces` joined)."""
    return b"".join(_coco_json_pieces(head, annotations, workers)).decode("utf-8")


def write_coco(boxes_path: str | Path, manifest_paths: dict[str, str | Path], views_dirs: dict[str, str | Path],
               out_dir: str | Path, summary_path: str | Path, *, classes: dict[int, str], n_sigma: float,
               survey: str = "", ownership_path: str | Path | None = None, segmentation: bool = True,
               workers: int = 1) -> dict:
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
    workers : int
        Processes building and encoding the annotations (the rule's threads);
        the files are the same whatever the number.

    Returns
    -------
    dict
        Images and annotations per split (also written to ``summary_path``).
    """
    out_dir = Path(out_dir)
    boxes = read_frame(boxes_path)
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
            head, annotations = _coco_parts(
                split, manifests, boxes, classes, n_sigma=n_sigma, fits_prefix=fits_prefix,
                npy_prefix=npy_prefix if npy_prefix and len(npy_prefix) == len(views_dirs) else None,
                survey=survey, segmentation=segmentation)
            link_files((os.path.join(views_dirs[image["field"]], f"{image['cutout_id']}.png"),
                        os.path.join(tmp, image["file_name"])) for image in head["images"])
            # written drop-behind, as the cutouts and views: 400 MB for an SDC1 field, read back by training only
            with atomic_path(tmp / f"instances_{split}.json") as path, DropBehind() as files:
                files.write(path, *_coco_json_pieces(head, annotations, workers), b"\n")
            summary["images"][split] = len(head["images"])
            summary["annotations"][split] = len(annotations)
            log.info("%s: %d images, %d annotations", split, len(head["images"]), len(annotations))
    write_json(summary_path, summary)
    return summary
