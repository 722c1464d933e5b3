"""The detectors: augmentations, models, targets, training (one and two processes), resume, checkpoints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from astropy.io import fits
from conftest import REPO, sky_header, write_image
from torch.utils.data import DataLoader, SequentialSampler

from radiodet.detector.augment import (
    hflip,
    random_sky_transform,
    rot90,
    sky_symmetry,
    transform_points,
    vflip,
)
from radiodet.detector.checkpoints import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from radiodet.detector.data import (
    CocoRadioDetection,
    EpochSampler,
    SourceCrops,
    collate_crops,
)
from radiodet.detector.faster_rcnn import (
    FasterRCNNConfig,
    anchors_from_boxes,
    build_model,
    load_state_dict_adapting_channels,
)
from radiodet.detector.heatmap import HeatmapConfig, HeatmapNet, decode, make_targets
from radiodet.detector.models import model_from_checkpoint
from radiodet.detector.train import ValSelection

NOISE = 3.8e-7  # Jy/beam, SDC1's


def _bright_pixel(image):
    y, x = np.unravel_index(int(torch.argmax(image[0])), image.shape[1:])
    return x, y


@pytest.mark.parametrize("transform", [hflip, vflip, rot90])
def test_boxes_follow_the_pixels(transform):
    image = torch.zeros(1, 20, 30)
    image[0, 4, 7] = 1.0  # row 4, column 7
    box = torch.tensor([[6.0, 3.0, 9.0, 6.0]])  # around pixel (7, 4): centre (7.5, 4.5)
    new_image, new_box = transform(image, box)
    cx, cy = _bright_pixel(new_image)
    assert ((new_box[0, 0] + new_box[0, 2]) / 2).item() == pytest.approx(cx + 0.5)
    assert ((new_box[0, 1] + new_box[0, 3]) / 2).item() == pytest.approx(cy + 0.5)
    assert (new_box[0, 2] - new_box[0, 0]).item() > 0 and (new_box[0, 3] - new_box[0, 1]).item() > 0


def test_random_sky_transform_is_one_of_eight():
    image = torch.zeros(1, 16, 16)
    image[0, 2, 11] = 1.0
    box = torch.tensor([[10.0, 1.0, 13.0, 4.0]])
    outcomes = set()
    for seed in range(64):
        new_image, new_box = random_sky_transform(image, box, torch.Generator().manual_seed(seed))
        cx, cy = _bright_pixel(new_image)
        assert ((new_box[0, 0] + new_box[0, 2]) / 2).item() == pytest.approx(cx + 0.5)
        outcomes.add((cx, cy))
    assert len(outcomes) == 8


@pytest.mark.parametrize("choice", range(8))
def test_points_and_angles_follow_the_pixels(choice):
    """A line of pixels at 30 deg from +x: its pixels and its angle move as transform_points says."""
    image = torch.zeros(1, 21, 25)  # not square: width and height must not be mixed up
    for t in np.linspace(-6, 6, 60):
        image[0, int(round(9 + t * np.sin(np.radians(30)))), int(round(14 + t * np.cos(np.radians(30))))] = 1.0
    image[0, 9, 14] = 2.0  # the centre, brightest
    moved, _ = sky_symmetry(image, torch.zeros(0, 4), choice)
    x, y, angle = transform_points(np.array([14.0]), np.array([9.0]), np.array([30.0]), choice, 25, 21)
    assert (x[0], y[0]) == _bright_pixel(moved)
    ys, xs = np.nonzero(moved[0].numpy() > 0)
    cov = np.cov(np.vstack([xs, ys]))
    measured = np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])) % 180
    assert min(abs(measured - angle[0]), 180 - abs(measured - angle[0])) < 3.0


def test_anchors_come_from_the_box_statistics():
    rng = np.random.default_rng(0)
    widths = rng.normal(5.3, 0.3, 1000).clip(4, None)
    heights = widths * rng.normal(1.0, 0.05, 1000)
    levels, ratios = anchors_from_boxes(widths, heights, scale=4.0)
    assert len(levels) == 5 and all(len(level) == 2 for level in levels)
    assert levels[0][0] <= 4.0 * np.percentile(np.sqrt(widths * heights), 1)
    assert levels[-1][-1] >= 4.0 * np.sqrt(widths * heights).max()
    assert 1.0 in ratios and all(0.5 < r < 2.0 for r in ratios)


def test_one_channel_faster_rcnn_runs_and_loads_3_channel_weights():
    config = FasterRCNNConfig(backbone="resnet18", num_classes=2, min_size=64, max_size=64,
                              anchor_sizes=[[4.0, 6.0], [8.0, 12.0], [16.0, 24.0], [32.0, 48.0], [64.0, 96.0]])
    model = build_model(config).eval()
    assert model.backbone.body.conv1.in_channels == 1
    with torch.no_grad():
        out = model([torch.rand(1, 64, 64)])
    assert set(out[0]) == {"boxes", "scores", "labels"}
    state = dict(model.state_dict())
    state["backbone.body.conv1.weight"] = torch.ones(64, 3, 7, 7)
    load_state_dict_adapting_channels(model, state)
    assert torch.allclose(model.backbone.body.conv1.weight, torch.full((64, 1, 7, 7), 3.0))


# --------------------------------------------------------------------------
# the heatmap model


def test_heatmap_targets_decode_back_to_the_sources():
    """Targets turned into perfect outputs decode to the sources' positions and properties."""
    config = HeatmapConfig(num_classes=3)
    x, y = np.array([10.3, 20.0, 30.7]), np.array([5.6, 22.45, 30.0])
    targets = make_targets(x, y, np.log([5.0, 50.0, 500.0]), np.array([1.0, 2.0, 0.0]), np.array([0.5, 1.0, 0.0]),
                           np.array([30.0, 120.0, 0.0]), np.array([2, 0, 1]), 40, 48, config)
    assert targets["heatmap"][6, 10] == 1.0 and targets["heatmap"][22, 20] == 1.0 and targets["heatmap"][30, 31] == 1.0
    heat = torch.from_numpy(targets["heatmap"]).clamp(1e-6, 1 - 1e-6)
    reg = torch.from_numpy(targets["reg"])
    classes = torch.full((3, 40, 48), -10.0)
    for label, (i, j) in zip([2, 0, 1], [(10, 6), (20, 22), (31, 30)]):
        classes[label, j, i] = 10.0
    outputs = {"heatmap": torch.logit(heat)[None, None], "offset": reg[None, 0:2], "log_flux": reg[None, 2:3],
               "log_size": reg[None, 3:5], "angle": torch.atanh(reg[None, 5:7].clamp(-0.999999, 0.999999)),
               "class": classes[None]}
    found = decode(outputs, min_score=0.5)[0]
    order = np.argsort(found["x"])
    np.testing.assert_allclose(found["x"][order], x, atol=1e-5)
    np.testing.assert_allclose(found["y"][order], y, atol=1e-5)
    np.testing.assert_allclose(np.exp(found["log_flux"][order]), [5, 50, 500], rtol=1e-5)
    np.testing.assert_allclose(found["major_px"][order][:2], [1.0, 2.0], rtol=1e-4)
    np.testing.assert_allclose(found["angle"][order][:2], [30.0, 120.0], atol=0.01)
    assert found["label"][order].tolist() == [2, 0, 1]


def test_whole_field_detection_closes_the_image(tmp_path, monkeypatch):
    """The tile reader's handle on the image is closed when detection ends, not when it is collected."""
    from radiodet.detector import heatmap, predict
    from radiodet.detector.predict import PredictConfig, detect_field

    kept = []

    class KeptBands(predict._Bands):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            kept.append(self)  # alive after detection: only an explicit close frees the file

    monkeypatch.setattr(predict, "_Bands", KeptBands)

    image = write_image(tmp_path / "field.fits", np.random.default_rng(0).normal(0, 3.8e-7, (96, 80)),
                        sky_header(80, 96, beam_arcsec=1.5))

    def open_handles():
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == str(image.resolve()))

    net = HeatmapNet(HeatmapConfig(width=4, levels=2)).eval()
    found = detect_field(net, heatmap, image, config=PredictConfig(tile=64, min_overlap=8, workers=0, min_score=0.0),
                         device=torch.device("cpu"))
    assert len(found) > 0 and len(kept) == 1 and open_handles() == 0


def test_heatmap_net_keeps_full_resolution():
    net = HeatmapNet(HeatmapConfig(width=4, levels=2)).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, 2, 32, 48))
    assert out["heatmap"].shape == (2, 1, 32, 48) and out["class"].shape == (2, 3, 32, 48)


# --------------------------------------------------------------------------
# a small COCO dataset of FITS cutouts in Jy/beam (SDC1 units)


def make_fits_coco(tmp_path, n_images=8, size=64, seed=0):
    """COCO file, FITS cutouts and NPY views of point sources at SDC1 amplitudes (10-100 sigma)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    sigma = 2.5 / 2.3548
    header = sky_header(size, size, beam_arcsec=1.5)
    for image_id in range(1, n_images + 1):
        data = rng.normal(0.0, NOISE, (size, size))
        for k in range(4):
            x, y = rng.uniform(6, size - 6, 2)
            flux = rng.uniform(10, 100) * NOISE
            data += flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1 + k % 2,
                                "bbox": [x + 0.5 - 3, y + 0.5 - 3, 6.0, 6.0], "area": 36.0, "iscrowd": 0,
                                "flux": flux, "snr": flux / NOISE, "centre": [x + 0.5, y + 0.5],
                                "intrinsic": [0.0, 0.0, 0.0], "pb": 1.0, "rms": NOISE})
        write_image(tmp_path / f"img{image_id}.fits", data, header)
        np.save(tmp_path / f"img{image_id}.npy", np.clip(data / (100 * NOISE) + 0.1, 0, 1).astype(np.float32))
        images.append({"id": image_id, "file_name": f"img{image_id}.png", "npy_file": f"img{image_id}.npy",
                       "fits_file": f"img{image_id}.fits", "width": size, "height": size})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps(coco))
    return path


TINY = {"model": {"kind": "heatmap", "heatmap": {"width": 4, "levels": 2}},
        "train": {"epochs": 2, "batch_size": 4, "crop": 32, "crops_per_image": 2, "optimizer": "adamw",
                  "lr": 0.002, "warmup_steps": 2, "workers": 0}}


def run_train(train_json, out_dir, settings, *, nproc=1, debug_dir=None, timeout=600, check=True):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "radiodet.detector.train"] if nproc > 1 else [sys.executable, "-m", "radiodet.detector.train"]
    command += ["--train-json", str(train_json), "--out-dir", str(out_dir), "--config-json", json.dumps(settings),
                "--device", "cpu"]
    if debug_dir:
        command += ["--debug-dir", str(debug_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def test_crops_carry_sources_in_signal_to_noise_units(tmp_path):
    dataset = SourceCrops(make_fits_coco(tmp_path), HeatmapConfig(num_classes=2), crop=64, crops_per_image=1,
                          augment=False)
    inputs, targets = dataset[(0, 0)]
    assert inputs.shape == (2, 64, 64)
    # channel 0 is snr / 5 clipped at 20 sigma: the noise is ~0.2, sources reach 4
    assert 0.15 < float(inputs[0].std()) < 0.5 and float(inputs[0].max()) > 2.0
    assert int(targets["reg_mask"].sum()) == 4
    log_flux = targets["reg"][2][targets["reg_mask"] > 0]
    assert float(log_flux.min()) > np.log(9) and float(log_flux.max()) < np.log(110)


@pytest.mark.parametrize("dataset_kind", ["heatmap", "faster_rcnn"])
def test_augmentations_differ_between_epochs_with_persistent_workers(tmp_path, dataset_kind):
    """Regression: workers held a copy of the dataset and never saw a later epoch."""
    coco = make_fits_coco(tmp_path)
    dataset = (SourceCrops(coco, HeatmapConfig(num_classes=2), crop=32, crops_per_image=1, seed=5)
               if dataset_kind == "heatmap" else CocoRadioDetection(coco, augment=True, seed=5))
    collate = collate_crops if dataset_kind == "heatmap" else (lambda batch: torch.stack([b[0] for b in batch]))
    sampler = EpochSampler(SequentialSampler(dataset))
    loader = DataLoader(dataset, batch_size=len(dataset), sampler=sampler, num_workers=2, persistent_workers=True,
                        collate_fn=collate)

    def epoch_images(epoch):
        sampler.set_epoch(epoch)
        batch = next(iter(loader))
        return batch[0] if dataset_kind == "heatmap" else batch

    first, second, first_again = epoch_images(0), epoch_images(1), epoch_images(0)
    assert torch.equal(first, first_again)  # the same epoch draws the same augmentations
    differs = [not torch.equal(a, b) for a, b in zip(first, second)]
    assert sum(differs) >= len(differs) // 2


def test_training_resumes_exactly_with_workers_and_keeps_the_loss_log(tmp_path):
    train_json = make_fits_coco(tmp_path)
    settings = {**TINY, "train": {**TINY["train"], "workers": 2}}
    run_train(train_json, tmp_path / "full", settings, debug_dir=tmp_path / "full_debug")
    # interrupted after the first epoch (4 steps), then resumed; Snakemake deletes
    # the outputs of a failed job, loss.csv among them
    stopped = {**settings, "train": {**settings["train"], "max_steps": 4}}
    run_train(train_json, tmp_path / "resumed", stopped)
    assert [p.name for p in sorted((tmp_path / "resumed" / "checkpoints").glob("*.pth"))] == ["epoch_0000.pth"]
    (tmp_path / "resumed" / "loss.csv").unlink()
    done = run_train(train_json, tmp_path / "resumed", settings, debug_dir=tmp_path / "resumed_debug")
    assert "resuming from" in done.stderr
    full = json.loads((tmp_path / "full_debug" / "rank0.json").read_text())
    resumed = json.loads((tmp_path / "resumed_debug" / "rank0.json").read_text())
    assert full["steps"] == resumed["steps"] == 8
    assert float(full["checksum"]) == pytest.approx(float(resumed["checksum"]), rel=1e-9)
    full_loss = (tmp_path / "full" / "loss.csv").read_text().splitlines()
    resumed_loss = (tmp_path / "resumed" / "loss.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in resumed_loss[1:]] == [str(s) for s in range(1, 9)]
    # the same losses, step for step (the time column aside)
    assert [line.rsplit(",", 1)[0] for line in resumed_loss] == [line.rsplit(",", 1)[0] for line in full_loss]
    checkpoint = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_0001.pth")
    assert {"model", "optimizer", "lr_scheduler", "epoch", "config", "scaler", "loss_rows"} <= set(checkpoint)
    summary = json.loads((tmp_path / "full" / "train.json").read_text())
    assert summary["steps"] == 8 and summary["items_per_second"] > 0
    model, settings_back = model_from_checkpoint(tmp_path / "full" / "model.pth")
    assert settings_back["network"]["kind"] == "heatmap" and settings_back["category_ids"] == [1, 2]


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoints_holding_pickled_objects_are_refused(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refusing to load.*pickled Python object"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="evil.pth"):
        model_from_checkpoint(evil)
    assert not marker.exists()
    # numpy arrays are pickled objects too (what older checkpoints held)
    old = tmp_path / "old.pth"
    torch.save({"model": {}, "rng": np.random.get_state()}, old)
    with pytest.raises(CheckpointError, match="numpy"):
        load_checkpoint(old)
    # plain tensors and containers load
    save_checkpoint(tmp_path / "ok.pth", model={"w": torch.ones(2)}, config={"a": [1, 2.0, "b", None]})
    assert load_checkpoint(tmp_path / "ok.pth")["config"] == {"a": [1, 2.0, "b", None]}
    # as a training run's init_checkpoint: the run stops, naming the file, and no code runs
    train_json = make_fits_coco(tmp_path)
    settings = {**TINY, "model": {**TINY["model"], "init_checkpoint": str(evil)}}
    done = run_train(train_json, tmp_path / "out", settings, check=False)
    assert done.returncode != 0 and "evil.pth: refusing to load" in done.stderr
    assert not marker.exists() and not (tmp_path / "out" / "model.pth").exists()


def test_two_process_ddp_on_cpu(tmp_path):
    train_json = make_fits_coco(tmp_path, n_images=8)
    settings = {"model": {"kind": "faster_rcnn", "faster_rcnn": {
        "backbone": "resnet18", "norm": "group", "min_size": 64, "max_size": 64,
        "normalise": {"mean": "auto", "std": "auto"},
        "anchors": "auto", "detections_per_image": 100, "score_threshold": 0.05, "nms_threshold": 0.5}},
        "train": {"epochs": 2, "batch_size": 2, "lr": 0.01, "warmup_steps": 2, "workers": 0}}
    run_train(train_json, tmp_path / "ddp", settings, nproc=2, debug_dir=tmp_path / "debug")
    ranks = [json.loads((tmp_path / "debug" / f"rank{r}.json").read_text()) for r in (0, 1)]
    # identical weights at the end
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    # each rank saw a different half of the data in each epoch
    for epoch in range(2):
        halves = [set(r["seen_image_ids"][epoch * 4:(epoch + 1) * 4]) for r in ranks]
        assert not halves[0] & halves[1] and halves[0] | halves[1] == set(range(1, 9))
    # only rank 0 wrote files
    assert ranks[1]["wrote"] == [] and len(ranks[0]["wrote"]) == 4
    checkpoint = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "epoch_0001.pth")
    assert checkpoint["rank"] == 0 and checkpoint["config"]["world_size"] == 2


def test_fits_cutouts_of_the_coco_file_are_required(tmp_path):
    coco = make_fits_coco(tmp_path, n_images=1)
    data = json.loads(coco.read_text())
    del data["images"][0]["fits_file"]
    coco.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="fits_file"):
        SourceCrops(coco, HeatmapConfig(num_classes=2))
    assert fits.getheader(tmp_path / "img1.fits")["BUNIT"] == "JY/BEAM"


def test_the_epoch_with_the_lowest_val_loss_becomes_the_model(tmp_path):
    (tmp_path / "train").mkdir()
    train_json = make_fits_coco(tmp_path / "train")
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    val_json = make_fits_coco(val_dir, n_images=3, seed=9)
    settings = {**TINY, "train": {**TINY["train"], "epochs": 4, "patience": 10}}
    command = [sys.executable, "-m", "radiodet.detector.train", "--train-json", str(train_json), "--val-json",
               str(val_json), "--out-dir", str(tmp_path / "out"), "--config-json", json.dumps(settings),
               "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "train.json").read_text())
    history = summary["validation"]["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    best = min(history, key=lambda h: h["loss"])["epoch"]
    assert summary["validation"]["best_epoch"] == summary["model_epoch"] == best
    model = load_checkpoint(tmp_path / "out" / "model.pth")
    chosen = load_checkpoint(tmp_path / "out" / "checkpoints" / "best.pth")
    assert model["epoch"] == best and all(torch.equal(model["model"][k], chosen["model"][k]) for k in chosen["model"])
    rows = (tmp_path / "out" / "loss.csv").read_text().splitlines()
    header = rows[0].split(",")
    val_values = [line.split(",")[header.index("val_loss")] for line in rows[1:]]
    assert sum(1 for v in val_values if v) == 4  # one per epoch, on its last step


def test_val_selection_keeps_the_lowest_and_stops_after_patience():
    selection = ValSelection(patience=2)
    steps = [selection.update(epoch, {"loss": loss}) for epoch, loss in enumerate([3.0, 2.0, 2.5, 1.9, 2.0, 2.1])]
    assert [improved for improved, _ in steps] == [True, True, False, True, False, False]
    assert [stop for _, stop in steps] == [False, False, False, False, False, True]
    assert (selection.best_epoch, selection.best_loss) == (3, 1.9)
    resumed = ValSelection(selection.as_dict(), patience=2)  # as restored from a checkpoint
    assert resumed.update(6, {"loss": 1.95}) == (False, True)


# A parent that starts a child in a session of its own (as torchrun does), prints the
# child's pid and sleeps; the child asks to die with its parent (or not) and sleeps.
_ORPHAN = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import sys, time\\nif sys.argv[1] == '1':\\n"
                          "    from radiodet.detector.distributed import die_with_parent; die_with_parent()\\n"
                          "print('ready', flush=True); time.sleep(60)", sys.argv[1]],
                         start_new_session=True, stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(60)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("asks", [True, False])
def test_a_worker_in_its_own_session_dies_with_its_killed_parent_when_it_asks(asks):
    import signal
    import time

    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN, "1" if asks else "0"], stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and _running(child):
        time.sleep(0.05)
    alive = _running(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert alive is not asks
