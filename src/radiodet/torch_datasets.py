"""PyTorch datasets over the classification and self-supervised datasets this workflow writes.

The detection datasets (COCO files with their cutouts) are in
:mod:`radiodet.detector.data`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["RadioClassification", "SelfSupervisedCrops"]


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
