"""The detector: a torchvision Faster R-CNN for single-channel radio cutouts.

* Input: one channel (the scaled views, float in [0, 1]); the first
  convolution of the backbone takes 1 channel, and the model normalises with
  a single ``image_mean`` / ``image_std`` (config ``model.normalise``; ``auto``
  = the mean and standard deviation of the training images, stored in the
  checkpoint). No weights are ever downloaded: backbones start from random
  weights or from a local checkpoint (``model.init_checkpoint``).
* Anchors come from the box statistics of the training set, measured at the
  model's input scale (torchvision resizes each image so that its side is
  ``model.min_size``): two sizes per FPN level spread geometrically from the
  smallest to the largest boxes, and the 10/50/90 % aspect ratios.
* The box coordinates are those of the COCO files (continuous, unflipped).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

__all__ = ["ModelConfig", "anchors_from_boxes", "build_model", "choose_device", "load_state_dict_adapting_channels",
           "model_scale", "param_checksum"]

#: feature maps of a ResNet-FPN backbone: strides 4, 8, 16, 32, 64
FPN_LEVELS = 5


@dataclass
class ModelConfig:
    """What defines the network (stored in every checkpoint)."""

    backbone: str = "resnet50"
    num_classes: int = 3  # without background
    min_size: int = 800
    max_size: int = 1333
    image_mean: float = 0.5
    image_std: float = 0.25
    anchor_sizes: list[list[float]] = field(default_factory=lambda: [[16.0, 24.0]] * FPN_LEVELS)
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    trainable_layers: int = 5
    detections_per_image: int = 300
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    box_batch_size_per_image: int = 256

    def as_dict(self) -> dict:
        return asdict(self)


def anchors_from_boxes(widths: np.ndarray, heights: np.ndarray, scale: float, *,
                       per_level: int = 2) -> tuple[list[list[float]], list[float]]:
    """Anchor sizes per FPN level and aspect ratios from training boxes.

    ``widths``/``heights`` in image pixels; ``scale`` = model input size /
    image size. Sizes (sqrt(w h) x scale) are spread geometrically from the
    1st percentile to the maximum over ``FPN_LEVELS x per_level`` anchors;
    ratios (h / w, torchvision's definition) are the 10/50/90 percentiles,
    rounded to 0.05 and kept apart.
    """
    widths, heights = np.asarray(widths, float), np.asarray(heights, float)
    ok = (widths > 0) & (heights > 0)
    if not ok.any():
        raise ValueError("no boxes to derive anchors from")
    sizes = np.sqrt(widths[ok] * heights[ok]) * scale
    low = max(float(np.percentile(sizes, 1)) * 0.9, 4.0)
    high = max(float(sizes.max()) * 1.1, low * 2)
    all_sizes = np.geomspace(low, high, FPN_LEVELS * per_level)
    levels = [[round(float(s), 1) for s in all_sizes[i * per_level:(i + 1) * per_level]] for i in range(FPN_LEVELS)]
    ratios = np.percentile(heights[ok] / widths[ok], [10, 50, 90])
    ratios = sorted({round(float(np.clip(r, 0.25, 4.0)) * 20) / 20 for r in ratios} | {1.0})
    # keep three distinct ratios at most (the RPN head has one output per anchor)
    if len(ratios) > 3:
        ratios = [ratios[0], 1.0, ratios[-1]]
    return levels, [float(r) for r in ratios]


def build_model(config: ModelConfig, *, norm_layer=None) -> FasterRCNN:
    """A Faster R-CNN with a 1-channel ResNet-FPN backbone and data-driven anchors.

    ``norm_layer``: the backbone's normalisation (torchvision's default,
    frozen batch norm, is meant for pretrained weights; from random weights
    group norm trains more stably with a few images per step).
    """
    if not config.backbone.startswith("resnet"):
        raise ValueError(f"model.backbone must be a ResNet (resnet18/34/50/101), got {config.backbone!r}")
    extra = {"norm_layer": norm_layer} if norm_layer is not None else {}
    backbone = resnet_fpn_backbone(backbone_name=config.backbone, weights=None,
                                   trainable_layers=config.trainable_layers, **extra)
    old = backbone.body.conv1
    backbone.body.conv1 = nn.Conv2d(1, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                                    padding=old.padding, bias=False)
    sizes = tuple(tuple(float(s) for s in level) for level in config.anchor_sizes)
    if len(sizes) != FPN_LEVELS or len({len(s) for s in sizes}) != 1:
        raise ValueError(f"anchor_sizes needs {FPN_LEVELS} levels with the same number of sizes each")
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(config.aspect_ratios),) * FPN_LEVELS)
    return FasterRCNN(
        backbone,
        num_classes=config.num_classes + 1,
        rpn_anchor_generator=anchors,
        min_size=config.min_size,
        max_size=config.max_size,
        image_mean=[config.image_mean],
        image_std=[config.image_std],
        box_detections_per_img=config.detections_per_image,
        box_score_thresh=config.score_threshold,
        box_nms_thresh=config.nms_threshold,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        box_batch_size_per_image=config.box_batch_size_per_image,
    )


def load_state_dict_adapting_channels(model: nn.Module, state: dict) -> list[str]:
    """Load ``state`` into ``model``; a 3-channel first convolution is summed to 1.

    Returns the keys that did not match (left at their initial values), e.g.
    the box predictor of a checkpoint trained with another number of classes.
    """
    own = model.state_dict()
    adapted = {}
    for key, value in state.items():
        if key not in own:
            continue
        if value.shape == own[key].shape:
            adapted[key] = value
        elif value.ndim == 4 and value.shape[1] == 3 and own[key].shape[1] == 1 and value.shape[0] == own[key].shape[0]:
            adapted[key] = value.sum(dim=1, keepdim=True)
    model.load_state_dict(adapted, strict=False)
    return sorted(set(own) - set(adapted))


def choose_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the process's GPU if there is one, else the CPU; or a torch device name."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def model_scale(image_size: int, min_size: int) -> float:
    """Factor by which torchvision resizes a square image of ``image_size``."""
    return min_size / float(image_size)


def param_checksum(model: nn.Module) -> str:
    """A short fingerprint of the weights (for tests of distributed training)."""
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(model.state_dict().values()):
        if p.dtype.is_floating_point:
            total += (p.detach().double().cpu() * (1.0 + (i % 7) * 1e-3)).sum()
    return f"{total.item():.12e}"

