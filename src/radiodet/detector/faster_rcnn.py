"""torchvision's Faster R-CNN for single-channel radio cutouts (``model.kind: faster_rcnn``).

* Input: one channel, the scaled views (float in [0, 1], the field's
  interval and stretch, exactly as the COCO images); the first convolution of
  the backbone takes 1 channel, and the model normalises with a single
  ``image_mean`` / ``image_std`` (``auto`` = the mean and standard deviation
  of the training images, stored in the checkpoint). No weights are ever
  downloaded: backbones start from random weights or from a local checkpoint
  (``init_checkpoint``, loaded safely, 3-channel first convolutions summed).
* Anchors come from the box statistics of the training set, measured at the
  model's input scale (torchvision resizes each image so that its side is
  ``min_size``): two sizes per FPN level spread geometrically from the
  smallest to the largest boxes, and the 10/50/90 % aspect ratios.
* The box coordinates are those of the COCO files (continuous, unflipped);
  a detection's position is its box centre (0-based pixel = COCO - 0.5).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, field

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from ..configuration import schema_config

__all__ = ["FasterRCNNConfig", "anchors_from_boxes", "build_model", "load_state_dict_adapting_channels",
           "model_scale", "resolve_config", "training_data", "validation_batches", "losses", "detect", "for_inference",
           "INPUT"]

log = logging.getLogger(__name__)

#: feature maps of a ResNet-FPN backbone: strides 4, 8, 16, 32, 64
FPN_LEVELS = 5
#: what the model reads: the scaled views
INPUT = "view"


@schema_config("model", "faster_rcnn", frozen=False, ignore=("normalise", "anchors"))
class FasterRCNNConfig:
    """What defines the network (stored in every checkpoint).

    The keys of config ``model.faster_rcnn`` take their defaults from the
    schema; the others are resolved from the training data
    (:func:`resolve_config`) or fixed here.
    """

    backbone: str
    norm: str
    num_classes: int = 3  # without background
    min_size: int
    max_size: int
    image_mean: float = 0.5
    image_std: float = 0.25
    anchor_sizes: list[list[float]] = field(default_factory=lambda: [[16.0, 24.0]] * FPN_LEVELS)
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    trainable_layers: int = 5
    detections_per_image: int
    score_threshold: float
    nms_threshold: float
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


def model_scale(image_size: int, min_size: int) -> float:
    """Factor by which torchvision resizes a square image of ``image_size``."""
    return min_size / float(image_size)


_NORMS = {"group": lambda c: nn.GroupNorm(32, c), "batch": nn.BatchNorm2d, "frozen": None}


def build_model(config: FasterRCNNConfig) -> FasterRCNN:
    """A Faster R-CNN with a 1-channel ResNet-FPN backbone and data-driven anchors.

    ``config.norm``: the backbone's normalisation (torchvision's default,
    frozen batch norm, is meant for pretrained weights; from random weights
    group norm trains more stably with a few images per step).
    """
    if not config.backbone.startswith("resnet"):
        raise ValueError(f"model.faster_rcnn.backbone must be a ResNet (resnet18/34/50/101), got {config.backbone!r}")
    if config.norm not in _NORMS:
        raise ValueError(f"model.faster_rcnn.norm must be one of {sorted(_NORMS)}, got {config.norm!r}")
    norm_layer = _NORMS[config.norm]
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


# --------------------------------------------------------------------------
# the interface of a model kind (see radiodet.detector.models)


def _dataset_statistics(dataset, *, max_images: int = 200) -> dict:
    """Mean/std of the images and the box sizes, on the un-augmented training set."""
    pixels, widths, heights, sides = [], [], [], []
    for index in range(min(len(dataset), max_images)):
        record = dataset.images[index]
        image = dataset.load_image(record)
        pixels.append(image.flatten()[:: max(1, image.numel() // 20000)])
        sides.append(max(record["width"], record["height"]))
    for anns in dataset.annotations.values():
        for ann in anns:
            widths.append(ann["bbox"][2])
            heights.append(ann["bbox"][3])
    values = torch.cat(pixels) if pixels else torch.zeros(1)
    return {"mean": float(values.mean()), "std": float(values.std().clamp_min(1e-3)),
            "widths": np.array(widths), "heights": np.array(heights),
            "image_size": int(np.median(sides)) if sides else 0}


def resolve_config(settings: dict, train_json, num_classes: int) -> FasterRCNNConfig:
    """The network's config from ``model.faster_rcnn`` settings and the training data ('auto' values)."""
    from .data import CocoRadioDetection

    stats = _dataset_statistics(CocoRadioDetection(train_json))
    normalise = settings.get("normalise", {})
    mean = stats["mean"] if normalise.get("mean", "auto") == "auto" else float(normalise["mean"])
    std = stats["std"] if normalise.get("std", "auto") == "auto" else float(normalise["std"])
    config = FasterRCNNConfig(backbone=settings["backbone"], norm=settings["norm"], num_classes=num_classes,
                              min_size=settings["min_size"], max_size=settings["max_size"], image_mean=mean,
                              image_std=std, detections_per_image=settings["detections_per_image"],
                              score_threshold=settings["score_threshold"], nms_threshold=settings["nms_threshold"])
    if not len(stats["widths"]):
        raise ValueError(f"{train_json}: no annotations to derive anchors from")
    scale = model_scale(stats["image_size"], settings["min_size"])
    config.anchor_sizes, config.aspect_ratios = anchors_from_boxes(stats["widths"], stats["heights"], scale)
    log.info("anchors %s, ratios %s, normalisation mean %.4f std %.4f", config.anchor_sizes, config.aspect_ratios,
             config.image_mean, config.image_std)
    return config


def training_data(train_json, config: FasterRCNNConfig, train_settings: dict, seed: int):
    """(dataset, collate function) of the training split."""
    from .data import CocoRadioDetection, collate_detection

    return CocoRadioDetection(train_json, augment=True, seed=seed), collate_detection


def validation_batches(val_json, config: FasterRCNNConfig, train_settings: dict, **_) -> list:
    """None: torchvision's detection models give losses only in training mode (the last epoch is kept)."""
    return []


def losses(model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
    images, targets = batch
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return model(images, targets)


def batch_image_ids(batch) -> list[int]:
    return [int(t["image_id"]) for t in batch[1]]


def for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    return model.eval().to(device)


@torch.no_grad()
def detect(model: nn.Module, images: torch.Tensor, *, min_score: float) -> list[dict[str, np.ndarray]]:
    """Detections of a batch of view tiles (N, 1, H, W): box centres as positions.

    Returns per tile ``x, y`` (0-based pixels), ``score``, ``label`` (class
    index 0..K-1) and the box ``box_x0..box_y1`` (COCO continuous coordinates).
    """
    model.roi_heads.score_thresh = min_score
    outputs = model(list(images))
    results = []
    for output in outputs:
        boxes = output["boxes"].float().cpu().numpy().astype(np.float64)
        results.append({
            "x": (boxes[:, 0] + boxes[:, 2]) / 2 - 0.5, "y": (boxes[:, 1] + boxes[:, 3]) / 2 - 0.5,
            "score": output["scores"].float().cpu().numpy().astype(np.float64),
            "label": output["labels"].cpu().numpy().astype(np.int64) - 1,
            "box_x0": boxes[:, 0], "box_y0": boxes[:, 1], "box_x1": boxes[:, 2], "box_y1": boxes[:, 3],
        })
    return results
