"""The detector models a config can name (``model.kind``), behind one interface.

Each kind is a module with:

* ``INPUT``: what the model reads, ``"snr"`` (the image divided by its local
  robust noise) or ``"view"`` (scaled like the PNG/NPY views);
* ``resolve_config(settings, train_json, num_classes)`` -> the network's
  config dataclass (``settings`` = the config's ``model.<kind>`` section;
  ``auto`` values are measured on the training data);
* ``build_model(config)`` -> ``nn.Module``;
* ``training_data(train_json, config, train_settings, seed)`` -> (dataset,
  collate); items are keyed ``(epoch, index)``
  (:class:`radiodet.detector.data.EpochSampler`);
* ``validation_batches(val_json, config, train_settings)`` -> fixed batches
  of the val split for :func:`losses` in eval mode (empty: no validation);
* ``losses(model, batch, device)`` -> dict of loss tensors;
* ``batch_image_ids(batch)`` -> COCO image ids in a batch (for tests of
  distributed sampling; may be empty);
* ``for_inference(model, device)`` -> the model ready for prediction on
  ``device`` (e.g. layers fused);
* ``detect(model, images, min_score=...)`` -> per image, arrays ``x, y``
  (0-based pixels of the image), ``score``, ``label`` (class index 0..K-1)
  and whatever else the kind estimates.

``heatmap`` (the default) is a full-resolution source-centre network that
also regresses flux, sizes and PA; ``faster_rcnn`` is torchvision's
Faster R-CNN on the scaled views.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from types import ModuleType

import torch
from torch import nn

from . import faster_rcnn, heatmap
from .checkpoints import load_checkpoint

__all__ = ["KINDS", "kind_module", "build_from_settings", "model_from_checkpoint", "pad_to_multiple"]

log = logging.getLogger(__name__)

KINDS: dict[str, ModuleType] = {"heatmap": heatmap, "faster_rcnn": faster_rcnn}
_CONFIGS = {"heatmap": heatmap.HeatmapConfig, "faster_rcnn": faster_rcnn.FasterRCNNConfig}


def kind_module(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise ValueError(f"model.kind must be one of {sorted(KINDS)}, got {kind!r}")
    return KINDS[kind]


def build_from_settings(model_settings: dict, train_json, num_classes: int) -> tuple[nn.Module, object, dict]:
    """A fresh network from the config's ``model`` section: (model, its config, the config as a dict).

    ``model.init_checkpoint`` (a local file) initialises matching weights;
    it is loaded with :func:`radiodet.detector.checkpoints.load_checkpoint`
    (no pickled code runs).
    """
    kind = model_settings["kind"]
    module = kind_module(kind)
    config = module.resolve_config(dict(model_settings.get(kind, {})), train_json, num_classes)
    model = module.build_model(config)
    init = model_settings.get("init_checkpoint")
    if init:
        state = load_checkpoint(init)
        state = state.get("model", state)
        missing = faster_rcnn.load_state_dict_adapting_channels(model, state)
        log.info("initialised from %s (%d tensors left at random init)", init, len(missing))
    return model, config, {"kind": kind, **asdict(config)}


def model_from_checkpoint(path) -> tuple[nn.Module, dict]:
    """The trained network (eval mode, CPU) and the settings stored with it."""
    state = load_checkpoint(path)
    settings = state["config"]
    network = dict(settings["network"])
    kind = network.pop("kind")
    model = kind_module(kind).build_model(_CONFIGS[kind](**network))
    model.load_state_dict(state["model"])
    return model.eval(), settings


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (N, C, H, W) at the bottom/right so H and W are multiples of ``multiple``."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        images = torch.nn.functional.pad(images, (0, pad_w, 0, pad_h))
    return images
