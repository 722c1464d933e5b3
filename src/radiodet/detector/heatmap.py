"""A full-resolution source-centre detector that regresses each source's properties.

SDC1 sources are 2-10 pixels across and often closer to each other than a
beam; anchor-based detectors working at stride 4-32 merge them. This model
keeps the image's own resolution at its output (a small U-Net built from
torch.nn parts, CenterNet-style heads):

* ``heatmap`` (1 channel): logit of "a source centre lies in this pixel",
  trained against Gaussian bumps of ``heatmap_sigma`` pixels around every
  labelled source with CenterNet's penalty-reduced focal loss;
* ``offset`` (2): sub-pixel position of the centre in that pixel, (x, y);
* ``log_flux`` (1): natural log of the integrated flux density over the local
  noise, ``ln(S pb / rms)`` (S in Jy, rms in Jy/beam: the flux in noise units,
  so the model is scale-free);
* ``log_size`` (2): natural log of the intrinsic (beam-deconvolved) major and
  minor FWHM in pixels (floored at ``MIN_SIZE_PX``);
* ``angle`` (2): ``(cos 2 theta, sin 2 theta)`` of the major axis, theta from
  +x towards +y in the pixel frame;
* ``class`` (K): class logits.

Input: the image divided by its robust noise (signal-to-noise units), as two
channels (:func:`encode_input`): linear up to 20 sigma, and asinh-compressed
for the bright end. Pixel coordinates are 0-based (pixel (i, j) is centred on
(i, j)); a source at (x, y) belongs to pixel (round(x), round(y)).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..configuration import schema_config

__all__ = ["HeatmapConfig", "HeatmapNet", "encode_input", "make_targets", "heatmap_loss", "decode", "build_model",
           "resolve_config", "training_data", "validation_batches", "losses", "detect", "for_inference", "INPUT",
           "MIN_SIZE_PX", "HEAD_CHANNELS"]

#: intrinsic sizes below this (pixels FWHM) are treated as this (a log needs a floor)
MIN_SIZE_PX = 0.05
#: output channels per head, in the order of the output tensor
HEAD_CHANNELS = {"heatmap": 1, "offset": 2, "log_flux": 1, "log_size": 2, "angle": 2}


@schema_config("model", "heatmap", frozen=False)
class HeatmapConfig:
    """What defines the network (stored in every checkpoint; config ``model.heatmap``, defaults from the schema)."""

    num_classes: int = 3  #: not a config key: the number of COCO categories
    width: int            #: channels at full resolution (x2 per level down)
    levels: int           #: down-sampling steps (receptive field grows as 2^levels)
    heatmap_sigma: float  #: pixels, Gaussian bump of the heatmap targets
    focal_alpha: float
    focal_beta: float
    #: loss weights of the regression heads
    offset_weight: float
    flux_weight: float
    size_weight: float
    angle_weight: float
    class_weight: float

    def as_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class HeatmapNet(nn.Module):
    """U-Net with stride-1 output heads (see the module docstring).

    ``forward(x)`` takes (N, 2, H, W) encoded input (:func:`encode_input`)
    with H and W multiples of ``2 ** levels`` and returns a dict of (N, C, H,
    W) maps: ``heatmap`` logits, ``offset``, ``log_flux``, ``log_size``,
    ``angle``, ``class`` logits.
    """

    def __init__(self, config: HeatmapConfig):
        super().__init__()
        self.config = config
        w = config.width
        widths = [w * 2 ** i for i in range(config.levels + 1)]
        self.down = nn.ModuleList([_block(2, widths[0])] + [_block(widths[i - 1], widths[i])
                                                            for i in range(1, len(widths))])
        self.up = nn.ModuleList([_block(widths[i + 1] + widths[i], widths[i]) for i in range(config.levels)])
        self.neck = nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True))
        self.outputs = sum(HEAD_CHANNELS.values()) + config.num_classes
        self.head = nn.Conv2d(w, self.outputs, 1)
        with torch.no_grad():  # start with a low source prior (CenterNet's bias init)
            self.head.bias.zero_()
            self.head.bias[0] = -4.0

    @property
    def stride_multiple(self) -> int:
        return 2 ** self.config.levels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(self.config.levels)):
            x = self.up[i](torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skips[i]], dim=1))
        out = self.head(self.neck(x))
        maps, start = {}, 0
        for name, n in [*HEAD_CHANNELS.items(), ("class", self.config.num_classes)]:
            maps[name] = out[:, start:start + n]
            start += n
        return maps


def encode_input(snr: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) signal-to-noise image -> (N, 2, H, W) network input.

    Channel 0 is linear (clipped at -5 and 20 sigma, divided by 5), channel 1
    ``asinh(snr / 10)`` for the bright end. NaN pixels become 0 (noise mean).
    """
    snr = torch.nan_to_num(snr, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.cat([snr.clamp(-5.0, 20.0) / 5.0, torch.asinh(snr / 10.0)], dim=1)


def make_targets(x: np.ndarray, y: np.ndarray, log_flux: np.ndarray, major_px: np.ndarray, minor_px: np.ndarray,
                 angle_deg: np.ndarray, label: np.ndarray, height: int, width: int,
                 config: HeatmapConfig) -> dict[str, np.ndarray]:
    """Dense training targets of one image from its source list.

    ``x, y``: 0-based pixel positions (sources outside the image are ignored);
    ``log_flux``: ln(S pb / rms); ``major_px, minor_px``: intrinsic FWHM in
    pixels; ``angle_deg``: major axis from +x towards +y; ``label``: class
    index 0..K-1. Where several sources share a pixel, the brightest one sets
    the regression targets there.

    Returns float32 arrays: ``heatmap`` (H, W) in [0, 1] (1 exactly at each
    source's pixel), ``reg`` (7, H, W) = offset x, offset y, log flux, log
    major, log minor, cos 2 theta, sin 2 theta; ``reg_mask`` (H, W) 1 at
    source pixels; ``angle_weight`` (H, W) the ellipticity (major - minor) /
    (major + minor) at source pixels; ``label`` (H, W) int64 (-1 elsewhere).
    """
    heatmap = np.zeros((height, width), np.float32)
    reg = np.zeros((7, height, width), np.float32)
    reg_mask = np.zeros((height, width), np.float32)
    angle_weight = np.zeros((height, width), np.float32)
    labels = np.full((height, width), -1, np.int64)
    px, py = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
    sigma = config.heatmap_sigma
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    bump = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)
    order = np.argsort(log_flux[inside], kind="stable")  # brightest written last
    for i in np.flatnonzero(inside)[order]:
        j0, j1 = max(py[i] - radius, 0), min(py[i] + radius + 1, height)
        i0, i1 = max(px[i] - radius, 0), min(px[i] + radius + 1, width)
        patch = bump[j0 - py[i] + radius:j1 - py[i] + radius, i0 - px[i] + radius:i1 - px[i] + radius]
        np.maximum(heatmap[j0:j1, i0:i1], patch, out=heatmap[j0:j1, i0:i1])
        major = max(float(major_px[i]), MIN_SIZE_PX)
        minor = min(max(float(minor_px[i]), MIN_SIZE_PX), major)
        theta = np.deg2rad(2.0 * angle_deg[i])
        reg[:, py[i], px[i]] = [x[i] - px[i], y[i] - py[i], log_flux[i], np.log(major), np.log(minor),
                                np.cos(theta), np.sin(theta)]
        reg_mask[py[i], px[i]] = 1.0
        angle_weight[py[i], px[i]] = (major - minor) / (major + minor)
        labels[py[i], px[i]] = label[i]
    return {"heatmap": heatmap, "reg": reg, "reg_mask": reg_mask, "angle_weight": angle_weight, "label": labels}


def _focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, beta: float,
                valid: torch.Tensor | None) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, summed (normalise outside)."""
    logits = logits.float()
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    positive = target >= 1.0 - 1e-4
    pos_loss = -((1 - p) ** alpha) * log_p
    neg_loss = -((1 - target) ** beta) * (p**alpha) * log_not_p
    loss = torch.where(positive, pos_loss, neg_loss)
    if valid is not None:
        loss = loss * valid
    return loss.sum()


def heatmap_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                 config: HeatmapConfig) -> dict[str, torch.Tensor]:
    """Loss terms of a batch: focal heatmap loss and L1 regressions at source pixels.

    ``targets`` holds the batched arrays of :func:`make_targets` plus
    ``valid`` (N, H, W): 0 on padding. Every term is divided by the number of
    sources in the batch (at least 1).
    """
    valid = targets.get("valid")
    mask = targets["reg_mask"]
    count = mask.sum().clamp_min(1.0)
    losses = {"loss_heatmap": _focal_loss(outputs["heatmap"][:, 0], targets["heatmap"], config.focal_alpha,
                                          config.focal_beta, valid) / count}
    reg = targets["reg"]

    def masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return (torch.abs(pred.float() - target) * weight[:, None]).sum() / count

    losses["loss_offset"] = config.offset_weight * masked_l1(outputs["offset"], reg[:, 0:2], mask)
    losses["loss_flux"] = config.flux_weight * masked_l1(outputs["log_flux"], reg[:, 2:3], mask)
    losses["loss_size"] = config.size_weight * masked_l1(outputs["log_size"], reg[:, 3:5], mask)
    losses["loss_angle"] = config.angle_weight * masked_l1(torch.tanh(outputs["angle"]), reg[:, 5:7],
                                                           mask * targets["angle_weight"])
    labels = targets["label"]
    if (labels >= 0).any():
        losses["loss_class"] = config.class_weight * F.cross_entropy(
            outputs["class"].float(), labels, ignore_index=-1, reduction="sum") / count
    else:
        losses["loss_class"] = outputs["class"].sum() * 0.0
    return losses


@torch.no_grad()
def decode(outputs: dict[str, torch.Tensor], *, min_score: float = 0.05, max_detections: int = 100_000,
           pool: int = 3) -> list[dict[str, np.ndarray]]:
    """Peaks of the heatmaps -> detections per image.

    A detection is a pixel whose score (sigmoid of the heatmap) is at least
    ``min_score`` and the maximum of its ``pool`` x ``pool`` neighbourhood.
    Returns, per image, arrays ``x, y`` (0-based pixels, with the sub-pixel
    offset), ``score``, ``label`` (class index 0..K-1), ``class_prob`` (of that
    class), ``log_flux``, ``major_px``, ``minor_px`` (intrinsic FWHM, pixels),
    ``angle`` (degrees from +x towards +y).
    """
    scores = torch.sigmoid(outputs["heatmap"][:, 0].float())
    peaks = (scores == F.max_pool2d(scores[:, None], pool, stride=1, padding=pool // 2)[:, 0]) & (scores >= min_score)
    results = []
    for n in range(scores.shape[0]):
        jj, ii = torch.nonzero(peaks[n], as_tuple=True)
        s = scores[n, jj, ii]
        if s.numel() > max_detections:
            s, order = torch.topk(s, max_detections)
            jj, ii = jj[order], ii[order]
        offset = outputs["offset"][n][:, jj, ii].float()
        log_size = outputs["log_size"][n][:, jj, ii].float()
        angle = torch.tanh(outputs["angle"][n][:, jj, ii].float())
        probs = torch.softmax(outputs["class"][n][:, jj, ii].float(), dim=0)
        prob, label = probs.max(dim=0) if probs.numel() else (probs.sum(0), probs.sum(0).long())
        major = torch.exp(log_size.max(dim=0).values)
        minor = torch.exp(log_size.min(dim=0).values)
        results.append({
            "x": (ii.float() + offset[0]).cpu().numpy().astype(np.float64),
            "y": (jj.float() + offset[1]).cpu().numpy().astype(np.float64),
            "score": s.cpu().numpy().astype(np.float64),
            "label": label.cpu().numpy().astype(np.int64),
            "class_prob": prob.cpu().numpy().astype(np.float64),
            "log_flux": outputs["log_flux"][n][0, jj, ii].float().cpu().numpy().astype(np.float64),
            "major_px": major.cpu().numpy().astype(np.float64),
            "minor_px": minor.cpu().numpy().astype(np.float64),
            "angle": np.mod(np.rad2deg(0.5 * torch.atan2(angle[1], angle[0]).cpu().numpy()), 180.0),
        })
    return results


# --------------------------------------------------------------------------
# the interface of a model kind (see radiodet.detector.models)

#: what the model reads: the image in signal-to-noise units
INPUT = "snr"


def resolve_config(settings: dict, train_json, num_classes: int) -> HeatmapConfig:
    """The network's config from the ``model.heatmap`` settings (an unknown key is a ConfigError naming it)."""
    return HeatmapConfig.from_config({**settings, "num_classes": num_classes})


def build_model(config: HeatmapConfig) -> HeatmapNet:
    return HeatmapNet(config)


def for_inference(model: HeatmapNet, device: torch.device) -> HeatmapNet:
    """An eval-mode copy with each convolution, batch norm and ReLU fused into one (same outputs, faster)."""
    import copy

    from torch.ao.quantization import fuse_modules

    fused = copy.deepcopy(model).eval()
    for block in list(fused.down) + list(fused.up):
        fuse_modules(block, [["0", "1", "2"], ["3", "4", "5"]], inplace=True)
    fused = fused.to(device)
    return fused.to(memory_format=torch.channels_last) if device.type == "cpu" else fused


def training_data(train_json, config: HeatmapConfig, train_settings: dict, seed: int):
    """(dataset, collate function): random crops of the training cutouts with their targets."""
    from .data import SourceCrops, collate_crops

    dataset = SourceCrops(train_json, config, crop=train_settings["crop"],
                          crops_per_image=train_settings["crops_per_image"], augment=True, seed=seed,
                          label_min_snr=train_settings.get("label_min_snr"))
    return dataset, collate_crops


def validation_batches(val_json, config: HeatmapConfig, train_settings: dict, *, max_images: int = 64,
                       batch_size: int = 8) -> list:
    """The val split's cutouts, whole and unaugmented, as batches for :func:`losses` (at most ``max_images``)."""
    from .data import SourceCrops, collate_crops, read_coco

    _, images, _, _ = read_coco(val_json)
    if not images:
        return []
    multiple = 2 ** config.levels
    side = max(max(r["width"], r["height"]) for r in images)
    dataset = SourceCrops(val_json, config, crop=-(-side // multiple) * multiple, crops_per_image=1, augment=False,
                          label_min_snr=train_settings.get("label_min_snr"))
    items = [dataset[(0, i)] for i in range(min(len(dataset), max_images))]
    return [collate_crops(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def losses(model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
    inputs, targets = batch
    inputs = inputs.to(device, non_blocking=True)
    targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
    config = model.module.config if hasattr(model, "module") else model.config
    return heatmap_loss(model(inputs), targets, config)


def batch_image_ids(batch) -> list[int]:
    return []


@torch.no_grad()
def detect(model: nn.Module, images: torch.Tensor, *, min_score: float) -> list[dict[str, np.ndarray]]:
    """Detections of a batch of signal-to-noise tiles (N, 1, H, W), H and W multiples of 2^levels."""
    inputs = encode_input(images)
    if inputs.device.type == "cpu":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return decode(model(inputs), min_score=min_score)
