"""Training data of the detectors, read from the COCO files the workflow writes.

* :class:`CocoRadioDetection`: whole images and boxes, for torchvision's
  Faster R-CNN (the scaled PNG/NPY views, as in the COCO file).
* :class:`SourceCrops`: random crops of the cutout FITS files in
  signal-to-noise units with the dense targets of the heatmap model
  (:mod:`radiodet.detector.heatmap`).
* :class:`EpochSampler`: wraps a sampler so that every index it yields
  carries the epoch, ``(epoch, index)``. Augmentations are drawn from a
  generator seeded by ``(seed, epoch, index)``, so they differ between epochs,
  do not depend on which worker process loads the item, and a resumed run
  draws exactly what an uninterrupted one would. (The epoch cannot be set on
  the dataset instead: DataLoader workers hold their own copies of it, and
  persistent workers never see a later change.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..images import robust_rms
from .augment import sky_symmetry, transform_points
from .heatmap import HeatmapConfig, encode_input, make_targets

__all__ = ["EpochSampler", "CocoRadioDetection", "collate_detection", "SourceCrops", "collate_crops",
           "read_coco", "cutout_snr"]

log = logging.getLogger(__name__)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` for every index of ``sampler`` (see the module docstring)."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        epoch = self.epoch
        for index in self.sampler:
            yield epoch, int(index)

    def __len__(self) -> int:
        return len(self.sampler)


def _key(key) -> tuple[int, int]:
    """(epoch, index) from a dataset key: an index alone means epoch 0."""
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return 0, int(key)


def _item_seed(seed: int, epoch: int, index: int) -> list[int]:
    return [int(seed), int(epoch), int(index)]


def read_coco(coco_json: str | Path) -> tuple[dict, list[dict], dict[int, list[dict]], list[int]]:
    """(data, images sorted by id, annotations per image id, sorted category ids)."""
    path = Path(coco_json)
    data = json.loads(path.read_text())
    images = sorted(data["images"], key=lambda image: image["id"])
    annotations: dict[int, list[dict]] = {image["id"]: [] for image in images}
    for ann in data["annotations"]:
        annotations[ann["image_id"]].append(ann)
    return data, images, annotations, sorted(c["id"] for c in data["categories"])


class CocoRadioDetection(Dataset):
    """Images and targets of one ``instances_<split>.json``, for torchvision detectors.

    Each item is ``(image, target)``: ``image`` a float32 tensor (1, H, W) in
    [0, 1] (the NPY view when the COCO file names one, else the PNG / 255);
    ``target`` has ``boxes`` (N, 4) ``[x0, y0, x1, y1]`` in COCO continuous
    coordinates, ``labels`` (N,) int64 in 1..K (index of the category in the
    file's sorted category list; 0 is the background), ``image_id``.
    Boxes thinner than ``min_box_size`` pixels are dropped (degenerate after
    clipping). ``augment=True`` applies one of the 8 flips/rotations, drawn
    from ``(seed, epoch, index)`` (keys may be ``(epoch, index)``, see
    :class:`EpochSampler`).
    """

    def __init__(self, coco_json: str | Path, *, augment: bool = False, min_box_size: float = 0.5,
                 seed: int = 0):
        self.path = Path(coco_json)
        data, self.images, self.annotations, self.category_ids = read_coco(self.path)
        self.root = self.path.parent
        self.label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self.category_names = {c["id"]: c["name"] for c in data["categories"]}
        self.augment = augment
        self.min_box_size = min_box_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, record: dict) -> torch.Tensor:
        if record.get("npy_file"):
            array = np.load(self.root / record["npy_file"]).astype(np.float32)
        else:
            array = np.asarray(Image.open(self.root / record["file_name"]), dtype=np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(array))[None]

    def augmentation(self, key) -> int:
        """The symmetry (0-7) item ``key`` gets, 0 without augmentation."""
        if not self.augment:
            return 0
        epoch, index = _key(key)
        return int(np.random.default_rng(_item_seed(self.seed, epoch, index)).integers(0, 8))

    def __getitem__(self, key):
        _, index = _key(key)
        record = self.images[index]
        image = self.load_image(record)
        anns = self.annotations[record["id"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)
        image, boxes = sky_symmetry(image, boxes[keep], self.augmentation(key))
        return image, {"boxes": boxes, "labels": labels[keep], "image_id": int(record["id"])}


def collate_detection(batch):
    """Lists of images and targets (torchvision detection models take lists)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def cutout_snr(path: str | Path) -> tuple[np.ndarray, float]:
    """A cutout FITS in signal-to-noise units: ``(data - median) / rms`` and the rms.

    The rms is the robust (MAD) noise of the cutout itself, the estimate the
    prediction stage makes for each tile of a field. NaN pixels stay NaN.
    """
    with fits.open(path, memmap=False) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float32)
    while data.ndim > 2:
        data = data[0]
    rms, median = robust_rms(data)
    if not np.isfinite(rms) or rms <= 0:
        raise ValueError(f"{path}: no finite noise estimate (all pixels NaN or constant)")
    return ((data - np.float32(median)) / np.float32(rms)).astype(np.float32), float(rms)


def _annotation_sources(anns: list[dict], category_index: dict[int, int], rms: float, path: Path,
                        image_id: int) -> dict[str, np.ndarray]:
    """Per-source arrays of one image's annotations, in the units of the heatmap targets."""
    if anns and ("centre" not in anns[0] or "intrinsic" not in anns[0] or "pb" not in anns[0]):
        raise ValueError(f"{path}: annotations of image {image_id} lack 'centre', 'intrinsic' or 'pb' (a COCO "
                         f"file from an older version of the workflow): rerun its coco rule")
    centre = np.array([a["centre"] for a in anns], float).reshape(-1, 2)
    intrinsic = np.array([a["intrinsic"] for a in anns], float).reshape(-1, 3)
    flux = np.array([a["flux"] * a["pb"] for a in anns], float)
    with np.errstate(divide="ignore"):
        log_flux = np.log(np.maximum(flux, 1e-30) / rms)
    return {"x": centre[:, 0] - 0.5, "y": centre[:, 1] - 0.5, "log_flux": log_flux,
            "major": intrinsic[:, 0], "minor": intrinsic[:, 1], "angle": intrinsic[:, 2],
            "label": np.array([category_index[a["category_id"]] for a in anns], np.int64),
            "snr": np.array([a.get("snr", np.inf) for a in anns], float)}


class SourceCrops(Dataset):
    """Random crops of the cutouts of a COCO file, with heatmap targets.

    ``len`` is ``images x crops_per_image``; item ``(epoch, index)`` is a
    ``crop`` x ``crop`` window of image ``index // crops_per_image`` at a
    position and symmetry drawn from ``(seed, epoch, index)``. Items are
    ``(input, targets)``: ``input`` (2, crop, crop) from
    :func:`radiodet.detector.heatmap.encode_input`, ``targets`` the arrays of
    :func:`radiodet.detector.heatmap.make_targets` as tensors plus ``valid``
    (0 on padding and around sources fainter than ``label_min_snr``, which
    are neither sources nor background to learn from).

    The cutouts are read from the FITS files the COCO file names
    (``fits_file``), in signal-to-noise units (:func:`cutout_snr`); up to
    ``cache_pixels`` pixels are kept in memory per process.
    """

    def __init__(self, coco_json: str | Path, config: HeatmapConfig, *, crop: int = 128,
                 crops_per_image: int = 8, augment: bool = True, seed: int = 0, label_min_snr: float | None = None,
                 cache_pixels: int = 64_000_000):
        self.path = Path(coco_json)
        _, self.images, self.annotations, self.category_ids = read_coco(self.path)
        self.root = self.path.parent
        self.category_index = {cid: i for i, cid in enumerate(self.category_ids)}
        self.config, self.crop, self.crops_per_image = config, int(crop), int(crops_per_image)
        self.augment, self.seed, self.label_min_snr = augment, seed, label_min_snr
        total = sum(r["width"] * r["height"] for r in self.images)
        self._cache: dict[int, tuple[np.ndarray, float]] | None = {} if total <= cache_pixels else None
        missing = [r["file_name"] for r in self.images if not r.get("fits_file")]
        if missing:
            raise ValueError(f"{self.path}: images without 'fits_file' (e.g. {missing[0]}): the heatmap model reads "
                             f"the cutout FITS files")

    def __len__(self) -> int:
        return len(self.images) * self.crops_per_image

    def snr_image(self, image_index: int) -> tuple[np.ndarray, float]:
        if self._cache is not None and image_index in self._cache:
            return self._cache[image_index]
        loaded = cutout_snr(self.root / self.images[image_index]["fits_file"])
        if self._cache is not None:
            self._cache[image_index] = loaded
        return loaded

    def sources(self, image_index: int, rms: float) -> dict[str, np.ndarray]:
        record = self.images[image_index]
        return _annotation_sources(self.annotations[record["id"]], self.category_index, rms, self.path, record["id"])

    def __getitem__(self, key):
        epoch, index = _key(key)
        image_index = index // self.crops_per_image
        snr, rms = self.snr_image(image_index)
        src = self.sources(image_index, rms)
        rng = np.random.default_rng(_item_seed(self.seed, epoch, index))
        height, width = snr.shape
        size = self.crop
        x0 = int(rng.integers(0, max(width - size, 0) + 1))
        y0 = int(rng.integers(0, max(height - size, 0) + 1))
        window = np.zeros((size, size), np.float32)
        valid = np.zeros((size, size), np.float32)
        part = snr[y0:y0 + size, x0:x0 + size]
        window[:part.shape[0], :part.shape[1]] = np.nan_to_num(part, nan=0.0)
        valid[:part.shape[0], :part.shape[1]] = np.isfinite(part)
        x, y = src["x"] - x0, src["y"] - y0
        label = np.ones(len(x), bool) if self.label_min_snr is None else src["snr"] >= self.label_min_snr
        choice = int(rng.integers(0, 8)) if self.augment else 0
        image = torch.from_numpy(window)[None]
        valid_t = torch.from_numpy(valid)[None]
        image, _ = sky_symmetry(image, torch.zeros(0, 4), choice)
        valid_t, _ = sky_symmetry(valid_t, torch.zeros(0, 4), choice)
        x, y, angle = transform_points(x, y, src["angle"], choice, size, size)
        targets = make_targets(x[label], y[label], src["log_flux"][label], src["major"][label], src["minor"][label],
                               angle[label], src["label"][label], size, size, self.config)
        valid = valid_t[0].numpy().copy()
        for xi, yi in zip(x[~label], y[~label]):
            i, j = int(round(xi)), int(round(yi))
            valid[max(j - 2, 0):j + 3, max(i - 2, 0):i + 3] = 0.0
        out = {k: torch.from_numpy(v) for k, v in targets.items()}
        out["valid"] = torch.from_numpy(valid)
        return encode_input(image[None])[0], out


def collate_crops(batch):
    """Stacked inputs (N, 2, H, W) and a dict of stacked target tensors."""
    inputs, targets = zip(*batch)
    return torch.stack(inputs), {k: torch.stack([t[k] for t in targets]) for k in targets[0]}
