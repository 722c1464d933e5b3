"""The detector: augmentations, anchors, training (one and two processes), resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from radiodet.augment import hflip, random_sky_transform, rot90, vflip
from radiodet.detector import (
    ModelConfig,
    anchors_from_boxes,
    build_model,
    load_state_dict_adapting_channels,
)
from radiodet.torch_datasets import CocoRadioDetection


def _bright_pixel_box(image):
    y, x = np.unravel_index(int(torch.argmax(image[0])), image.shape[1:])
    return x + 0.5, y + 0.5  # centre of that pixel in continuous coordinates


@pytest.mark.parametrize("transform", [hflip, vflip, rot90])
def test_boxes_follow_the_pixels(transform):
    image = torch.zeros(1, 20, 30)
    image[0, 4, 7] = 1.0  # row 4, column 7
    box = torch.tensor([[6.0, 3.0, 9.0, 6.0]])  # around pixel (7, 4): centre (7.5, 4.5)
    new_image, new_box = transform(image, box)
    cx, cy = _bright_pixel_box(new_image)
    assert ((new_box[0, 0] + new_box[0, 2]) / 2).item() == pytest.approx(cx)
    assert ((new_box[0, 1] + new_box[0, 3]) / 2).item() == pytest.approx(cy)
    assert (new_box[0, 2] - new_box[0, 0]).item() > 0 and (new_box[0, 3] - new_box[0, 1]).item() > 0


def test_random_sky_transform_is_one_of_eight_and_keeps_box_shape_set():
    image = torch.zeros(1, 16, 16)
    image[0, 2, 11] = 1.0
    box = torch.tensor([[10.0, 1.0, 13.0, 4.0]])
    outcomes = set()
    for seed in range(64):
        new_image, new_box = random_sky_transform(image, box, torch.Generator().manual_seed(seed))
        cx, cy = _bright_pixel_box(new_image)
        assert ((new_box[0, 0] + new_box[0, 2]) / 2).item() == pytest.approx(cx)
        outcomes.add((cx, cy))
    assert len(outcomes) == 8


def test_anchors_come_from_the_box_statistics():
    rng = np.random.default_rng(0)
    widths = rng.normal(5.3, 0.3, 1000).clip(4, None)
    heights = widths * rng.normal(1.0, 0.05, 1000)
    levels, ratios = anchors_from_boxes(widths, heights, scale=4.0)
    assert len(levels) == 5 and all(len(level) == 2 for level in levels)
    assert levels[0][0] <= 4.0 * np.percentile(np.sqrt(widths * heights), 1)
    assert levels[-1][-1] >= 4.0 * np.sqrt(widths * heights).max()
    assert 1.0 in ratios and all(0.5 < r < 2.0 for r in ratios)


def test_one_channel_model_runs_and_loads_3_channel_weights():
    config = ModelConfig(backbone="resnet18", num_classes=2, min_size=64, max_size=64,
                         anchor_sizes=[[4.0, 6.0], [8.0, 12.0], [16.0, 24.0], [32.0, 48.0], [64.0, 96.0]])
    model = build_model(config).eval()
    assert model.backbone.body.conv1.in_channels == 1
    with torch.no_grad():
        out = model([torch.rand(1, 64, 64)])
    assert set(out[0]) == {"boxes", "scores", "labels"}
    state = {k: v for k, v in model.state_dict().items()}
    state["backbone.body.conv1.weight"] = torch.ones(64, 3, 7, 7)
    load_state_dict_adapting_channels(model, state)
    assert torch.allclose(model.backbone.body.conv1.weight, torch.full((64, 1, 7, 7), 3.0))


def make_coco(tmp_path, n_images=8, size=64, seed=0):
    """A small COCO file with NPY images of Gaussian blobs and their boxes."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for image_id in range(1, n_images + 1):
        data = rng.normal(0.1, 0.02, (size, size)).astype(np.float32)
        for k in range(4):
            x, y = rng.uniform(6, size - 6, 2)
            data += 0.8 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2**2))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1 + k % 2,
                                "bbox": [x + 0.5 - 3, y + 0.5 - 3, 6.0, 6.0], "area": 36.0, "iscrowd": 0})
        np.save(tmp_path / f"img{image_id}.npy", np.clip(data, 0, 1))
        images.append({"id": image_id, "file_name": f"img{image_id}.png", "npy_file": f"img{image_id}.npy",
                       "width": size, "height": size})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps(coco))
    return path


TINY = {"model": {"backbone": "resnet18", "min_size": 64, "max_size": 64},
        "train": {"epochs": 2, "batch_size": 2, "lr": 0.01, "warmup_steps": 2, "workers": 0}}


def run_train(train_json, out_dir, settings, *, nproc=1, debug_dir=None, timeout=600):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "radiodet.train"] if nproc > 1 else [sys.executable, "-m", "radiodet.train"]
    command += ["--train-json", str(train_json), "--out-dir", str(out_dir), "--config-json", json.dumps(settings),
                "--device", "cpu"]
    if debug_dir:
        command += ["--debug-dir", str(debug_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def test_dataset_targets_and_labels(tmp_path):
    dataset = CocoRadioDetection(make_coco(tmp_path))
    image, target = dataset[0]
    assert image.shape == (1, 64, 64) and image.dtype == torch.float32
    assert target["boxes"].shape == (4, 4) and set(target["labels"].tolist()) == {1, 2}


def test_training_writes_checkpoints_loss_log_and_resumes_exactly(tmp_path):
    train_json = make_coco(tmp_path)
    # uninterrupted: 2 epochs
    run_train(train_json, tmp_path / "full", TINY, debug_dir=tmp_path / "full_debug")
    # interrupted after the first epoch (max_steps = steps per epoch), then resumed
    stopped = {**TINY, "train": {**TINY["train"], "max_steps": 4}}
    run_train(train_json, tmp_path / "resumed", stopped)
    assert [p.name for p in sorted((tmp_path / "resumed" / "checkpoints").glob("*.pth"))] == ["epoch_0000.pth"]
    done = run_train(train_json, tmp_path / "resumed", TINY, debug_dir=tmp_path / "resumed_debug")
    assert "resuming from" in done.stderr
    full = json.loads((tmp_path / "full_debug" / "rank0.json").read_text())
    resumed = json.loads((tmp_path / "resumed_debug" / "rank0.json").read_text())
    assert full["steps"] == resumed["steps"] == 8
    assert float(full["checksum"]) == pytest.approx(float(resumed["checksum"]), rel=1e-9)
    loss = (tmp_path / "full" / "loss.csv").read_text().splitlines()
    assert loss[0].startswith("step,epoch,lr,loss") and len(loss) == 9
    checkpoint = torch.load(tmp_path / "full" / "checkpoints" / "epoch_0001.pth", weights_only=False)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "config", "scaler"} <= set(checkpoint)
    summary = json.loads((tmp_path / "full" / "train.json").read_text())
    assert summary["steps"] == 8 and summary["images_per_second"] > 0


def test_two_process_ddp_on_cpu(tmp_path):
    train_json = make_coco(tmp_path, n_images=8)
    run_train(train_json, tmp_path / "ddp", TINY, nproc=2, debug_dir=tmp_path / "debug")
    ranks = [json.loads((tmp_path / "debug" / f"rank{r}.json").read_text()) for r in (0, 1)]
    # identical weights at the end
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    # each rank saw a different half of the data in each epoch
    for epoch in range(2):
        halves = [set(r["seen_image_ids"][epoch * 4:(epoch + 1) * 4]) for r in ranks]
        assert not halves[0] & halves[1] and halves[0] | halves[1] == set(range(1, 9))
    # only rank 0 wrote files
    assert ranks[1]["wrote"] == [] and len(ranks[0]["wrote"]) == 4
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoints" / "epoch_0001.pth", weights_only=False)
    assert checkpoint["rank"] == 0 and checkpoint["config"]["world_size"] == 2
