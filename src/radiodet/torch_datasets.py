"""PyTorch datasets over the files this workflow writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .augment import random_sky_transform

__all__ = ["CocoRadioDetection", "collate_detection", "RadioClassification", "SelfSupervisedCrops"]


class CocoRadioDetection(Dataset):
    """Images and targets of one ``instances_<split>.json``, for torchvision detectors.

    Each item is ``(image, target)``: ``image`` a float32 tensor (1, H, W) in
    [0, 1] (the NPY view when the COCO file names one, else the PNG / 255);
    ``target`` has ``boxes`` (N, 4) ``[x0, y0, x1, y1]`` in COCO continuous
    coordinates, ``labels`` (N,) int64 in 1..K (index of the category in the
    file's sorted category list; 0 is the background), ``image_id``.
    Boxes thinner than ``min_box_size`` pixels are dropped (degenerate after
    clipping). ``augment=True`` applies a random flip/rotation.
    """

    def __init__(self, coco_json: str | Path, *, augment: bool = False, min_box_size: float = 0.5,
                 seed: int = 0):
        self.path = Path(coco_json)
        data = json.loads(self.path.read_text())
        self.root = self.path.parent
        self.images = sorted(data["images"], key=lambda image: image["id"])
        self.category_ids = sorted(c["id"] for c in data["categories"])
        self.label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self.category_names = {c["id"]: c["name"] for c in data["categories"]}
        self.annotations: dict[int, list[dict]] = {image["id"]: [] for image in self.images}
        for ann in data["annotations"]:
            self.annotations[ann["image_id"]].append(ann)
        self.augment = augment
        self.min_box_size = min_box_size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (same seed + epoch = same augmentations)."""
        self.epoch = epoch

    def load_image(self, record: dict) -> torch.Tensor:
        if record.get("npy_file"):
            array = np.load(self.root / record["npy_file"]).astype(np.float32)
        else:
            array = np.asarray(Image.open(self.root / record["file_name"]), dtype=np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(array))[None]

    def __getitem__(self, index: int):
        record = self.images[index]
        image = self.load_image(record)
        anns = self.annotations[record["id"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)
        boxes, labels = boxes[keep], labels[keep]
        if self.augment:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
            image, boxes = random_sky_transform(image, boxes, generator)
        return image, {"boxes": boxes, "labels": labels, "image_id": int(record["id"])}


def collate_detection(batch):
    """Lists of images and targets (torchvision detection models take lists)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class RadioClassification(Dataset):
    """The classification dataset: ``images.npy`` + ``metadata.parquet`` of a directory.

    Items are ``(image, label)``: ``image`` a float32 tensor (1, H, W) in
    [0, 1] (the stored uint8 / 255; ``raw=True`` gives the uint8 tensor),
    ``label`` the int class code; ``transform`` (optional) is applied to the
    image tensor. ``metadata`` is the table (source id, label name, field,
    position) in item order.
    """

    def __init__(self, directory: str | Path, *, transform=None, raw: bool = False):
        import pandas as pd

        self.directory = Path(directory)
        self.images = np.load(self.directory / "images.npy", mmap_mode="r")
        self.metadata = pd.read_parquet(self.directory / "metadata.parquet")
        if len(self.metadata) != len(self.images):
            raise ValueError(f"{self.directory}: {len(self.images)} images but {len(self.metadata)} metadata rows")
        self.transform, self.raw = transform, raw

    def __len__(self) -> int:
        return len(self.metadata)

    def __getitem__(self, index: int):
        array = torch.from_numpy(np.array(self.images[index]))[None]
        image = array if self.raw else array.float() / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.metadata["label"].iloc[index])


class SelfSupervisedCrops(Dataset):
    """The self-supervised crops of ``crops.parquet``: ``(image, source_count)``.

    ``image``: float32 tensor (1, H, W), the field-scaled NPY view in [0, 1];
    ``transform`` (e.g. DINO's multi-crop augmentation) is applied to it.
    """

    def __init__(self, table: str | Path, *, transform=None):
        import pandas as pd

        self.path = Path(table)
        self.table = pd.read_parquet(self.path)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int):
        row = self.table.iloc[index]
        image = torch.from_numpy(np.load(self.path.parent / row["npy_file"]).astype(np.float32))[None]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(row["source_count"])
