"""Augmentations that respect the sky: flips and 90-degree rotations.

Radio sources have no preferred orientation, so a cutout flipped or turned by
a multiple of 90 degrees is another plausible cutout; no interpolation is
involved, so pixel values and noise are untouched.

Coordinates
-----------
* Boxes are COCO continuous coordinates ``[x0, y0, x1, y1]`` of an image of
  width W and height H (pixel (i, j) covers [i, i + 1) x [j, j + 1)).
* Points are 0-based pixel coordinates ``(x, y)`` (pixel (i, j) is centred
  on (i, j)); angles are degrees from +x towards +y in the pixel frame.

The 8 symmetries are numbered 0-7: bit 0 mirrors x, bits 1-2 give the number
of quarter turns applied after it (:func:`sky_symmetry`).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["hflip", "vflip", "rot90", "random_sky_transform", "sky_symmetry", "transform_points"]


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror x: pixel column i -> W - 1 - i, coordinate x -> W - x."""
    width = image.shape[-1]
    flipped = boxes.clone()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return image.flip(-1), flipped


def vflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror y: pixel row j -> H - 1 - j, coordinate y -> H - y."""
    height = image.shape[-2]
    flipped = boxes.clone()
    flipped[:, 1], flipped[:, 3] = height - boxes[:, 3], height - boxes[:, 1]
    return image.flip(-2), flipped


def rot90(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.rot90(image, 1, dims=(-2, -1))``: new[i, j] = old[j, W - 1 - i].

    A point (x, y) moves to (y, W - x); the new image is W high and H wide.
    """
    width = image.shape[-1]
    turned = torch.stack([boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]], dim=1)
    return torch.rot90(image, 1, dims=(-2, -1)), turned


def sky_symmetry(image: torch.Tensor, boxes: torch.Tensor, choice: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetry number ``choice`` (0-7) of the square applied to an image and its boxes."""
    if choice & 1:
        image, boxes = hflip(image, boxes)
    for _ in range((choice >> 1) & 3):
        image, boxes = rot90(image, boxes)
    return image, boxes


def random_sky_transform(image: torch.Tensor, boxes: torch.Tensor,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the 8 flips/rotations of the square's symmetry group, uniformly."""
    return sky_symmetry(image, boxes, int(torch.randint(0, 8, (1,), generator=generator)))


def transform_points(x: np.ndarray, y: np.ndarray, angle_deg: np.ndarray, choice: int, width: int,
                     height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where 0-based pixel points and pixel-frame angles go under symmetry ``choice``.

    Matches :func:`sky_symmetry` on an image of ``width`` x ``height``: a
    mirror in x sends x to W - 1 - x and an angle to 180 - angle; a quarter
    turn sends (x, y) to (y, W - 1 - x) and an angle to angle - 90 (the image
    then has width H and height W).
    """
    x, y, angle = np.asarray(x, float), np.asarray(y, float), np.asarray(angle_deg, float)
    if choice & 1:
        x, angle = width - 1 - x, 180.0 - angle
    for _ in range((choice >> 1) & 3):
        x, y, angle = y, width - 1 - x, angle - 90.0
        width, height = height, width
    return x, y, np.mod(angle, 180.0)
