"""Benchmark the detector on the current device: training images/s, prediction megapixels/s.

    python -m radiodet.bench_detector                      # defaults: resnet50, 205 px tiles, 4x
    python -m radiodet.bench_detector --backbone resnet18 --min-size 205 --field 1024

Synthetic data of the SDC1 kind (noise plus a few hundred point sources per
tile) are made on the fly, so the figures measure the model and the data
path, not a particular dataset. Training is timed after ``--warmup`` steps;
prediction runs the full :func:`radiodet.predict.predict_field` path (tiles
read from a memory-mapped FITS by DataLoader workers, batched NMS, Gaussian
measurement) and reports the detection part and the whole separately.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .detector import ModelConfig, anchors_from_boxes, choose_device, model_scale
from .train import ModelSettings, make_model, save_checkpoint


def _synthetic_tile(rng, size: int, n_sources: int, beam_px: float = 2.5):
    sigma = beam_px / 2.3548
    image = rng.normal(0.2, 0.05, (size, size))
    yy, xx = np.mgrid[0:size, 0:size]
    boxes = []
    for x, y in rng.uniform(3, size - 3, (n_sources, 2)):
        image += rng.uniform(0.1, 0.8) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        boxes.append([x + 0.5 - 2.65, y + 0.5 - 2.65, x + 0.5 + 2.65, y + 0.5 + 2.65])
    return torch.tensor(np.clip(image, 0, 1), dtype=torch.float32)[None], torch.tensor(boxes, dtype=torch.float32)


def bench_training(model, device, *, size: int, batch: int, steps: int, warmup: int, amp: bool, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    data = [_synthetic_tile(rng, size, 150) for _ in range(batch)]
    images = [d[0].to(device) for d in data]
    targets = [{"boxes": d[1].to(device), "labels": torch.ones(len(d[1]), dtype=torch.int64, device=device)}
               for d in data]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device_type=device.type, enabled=amp):
            loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def bench_prediction(model_path: Path, workdir: Path, *, field: int, tile: int, batch: int, workers: int,
                     device: str) -> dict:
    from astropy.io import fits
    from astropy.wcs import WCS

    from .predict import PredictConfig, predict_field
    from .views import ViewConfig

    rng = np.random.default_rng(1)
    data = rng.normal(0, 1e-6, (field, field)).astype(np.float32)
    yy, xx = np.mgrid[0:9, 0:9]
    for x, y in rng.uniform(5, field - 5, (field * field // 2000, 2)).astype(int):
        data[y - 4:y + 5, x - 4:x + 5] += 2e-5 * np.exp(-((xx - 4) ** 2 + (yy - 4) ** 2) / 2.25)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [0.0, -30.0]
    wcs.wcs.crpix = [field / 2, field / 2]
    wcs.wcs.cdelt = [-0.6 / 3600, 0.6 / 3600]
    header = wcs.to_header()
    header.update({"BMAJ": 1.5 / 3600, "BMIN": 1.5 / 3600, "BPA": 0.0, "BUNIT": "JY/BEAM"})
    image = workdir / "field.fits"
    fits.PrimaryHDU(data, header).writeto(image, overwrite=True)
    np.save(workdir / "sample.npy", data[::7, ::7].ravel())
    started = time.perf_counter()
    summary = predict_field(model_path, image, workdir / "sample.npy", workdir / "pred.parquet", workdir / "pred.txt",
                            workdir / "pred.json", config=PredictConfig(tile=tile, batch_size=batch, workers=workers,
                                                                        score_threshold=0.5),
                            views=ViewConfig(), device_name=device)
    summary["total_seconds"] = round(time.perf_counter() - started, 2)
    return summary


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50", help="resnet18/34/50/101")
    parser.add_argument("--tile", type=int, default=205, help="cutout/tile side in pixels")
    parser.add_argument("--min-size", type=int, default=820, help="model input side (torchvision min_size)")
    parser.add_argument("--batch", type=int, default=4, help="training images per step / prediction tiles per batch")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--field", type=int, default=2048, help="side of the synthetic field to predict over (px)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for prediction")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-amp", action="store_true", help="disable mixed precision on GPU")
    args = parser.parse_args(argv)
    device = choose_device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    widths = np.full(100, 5.3)
    sizes, ratios = anchors_from_boxes(widths, widths, model_scale(args.tile, args.min_size))
    config = ModelConfig(backbone=args.backbone, num_classes=3, min_size=args.min_size, max_size=args.min_size,
                         image_mean=0.25, image_std=0.1, anchor_sizes=sizes, aspect_ratios=ratios)
    settings = ModelSettings(backbone=args.backbone, min_size=args.min_size, max_size=args.min_size)
    model = make_model(config, settings).to(device)
    train_rate = bench_training(model, device, size=args.tile, batch=args.batch, steps=args.steps,
                                warmup=args.warmup, amp=amp)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_checkpoint(tmp / "model.pth", model=model.state_dict(), config={
            "model": config.as_dict(), "model_settings": vars(settings), "categories": {1: 1, 2: 2, 3: 3}})
        prediction = bench_prediction(tmp / "model.pth", tmp, field=args.field, tile=args.tile, batch=args.batch,
                                      workers=args.workers, device=str(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    result = {"device": name, "backbone": args.backbone, "tile": args.tile, "min_size": args.min_size, "amp": amp,
              "train_images_per_s": round(train_rate, 3),
              "predict_megapixels_per_s_detection": prediction["megapixels_per_second"],
              "predict_megapixels": prediction["megapixels"], "predict_total_seconds": prediction["total_seconds"],
              "predict_detections": prediction["detections"]}
    print(f"device                        {result['device']}")
    print(f"model                         fasterrcnn {args.backbone}-FPN, {args.tile} px tiles at {args.min_size} px, "
          f"amp {amp}")
    print(f"training                      {result['train_images_per_s']:.2f} images/s (batch {args.batch})")
    print(f"prediction (detection)        {result['predict_megapixels_per_s_detection']:.3f} megapixels/s "
          f"over {result['predict_megapixels']:.2f} MP")
    print(f"prediction (with measurement) {result['predict_megapixels'] / result['predict_total_seconds']:.3f} "
          f"megapixels/s, {result['predict_detections']} detections")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
