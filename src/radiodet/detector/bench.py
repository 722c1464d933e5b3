"""Whole-field inference benchmark: a trained detector over the synthetic SDC1-size field.

    make bench-detector                                    # full size: 32768^2 px, 5.25 M sources
    python -m radiodet.detector.bench --scale 1/16         # a quick look
    python -m radiodet.detector.bench --model results/sdc1-demo/train/model.pth --scale 1

The field is the one ``make bench`` generates (:func:`radiodet.bench_dataset.generate`,
cached under ``--workdir``: a float32 FITS image with the SDC1 header layout,
0.38 uJy/beam noise and point sources convolved with the 1.5" beam). The
prediction runs in a child process exactly as the ``predict`` rule runs it
(tiles read band by band, detection, batched measurement, catalogue
writing); this process samples the resident memory of the child and its
DataLoader workers (their sum, from /proc) every 0.2 s. It prints the wall
time, peak memory, megapixels per second (detection and overall) and sources
measured per second, and writes them to ``<workdir>/bench_detector.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

__all__ = ["main", "tree_memory_bytes"]


def _pss_bytes(pid: int) -> int:
    """Proportional set size: resident pages, shared ones divided among their sharers."""
    for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_memory_bytes(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process and all its descendants (Linux /proc), in bytes.

    The RSS sum counts pages shared between the prediction and its forked
    DataLoader workers (the Python and torch libraries) once per process;
    the PSS sum counts each page once, as a SLURM memory cgroup does.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    rss = pss = 0
    todo = [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        current = todo.pop()
        try:
            rss += int((Path("/proc") / str(current) / "statm").read_text().split()[1]) * page
            pss += _pss_bytes(current)
        except OSError:
            pass
        todo.extend(children.get(current, []))
    return rss, pss


def main(argv=None) -> dict:
    from ..bench_dataset import generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="results/sdc1-demo/train/model.pth",
                        help="trained model.pth (make demo writes the default one)")
    parser.add_argument("--scale", default="1", help="fraction of the full 32768^2 area (1, 1/4, 1/16, ...)")
    parser.add_argument("--workdir", default="benchmarks", help="where the synthetic fields are cached")
    parser.add_argument("--config-json", default='{"min_score": 0.2, "workers": 1, "batch_size": 2}',
                        help="the predict settings (JSON); min_score 0.2 stays below the thresholds chosen on val")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads of the prediction")
    args = parser.parse_args(argv)
    model = Path(args.model).resolve()
    if not model.is_file():
        parser.error(f"{model}: no trained model; run `make demo` first or pass --model")
    scale = Fraction(args.scale)
    directory = (Path(args.workdir) / f"scale-{scale.numerator}-{scale.denominator}").resolve()
    print(f"== synthetic field at scale {scale} (generated once, cached in {directory}) ...", flush=True)
    info = generate(directory, scale)
    image = directory / "field.fits"
    out = directory / "predict" / "field"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "radiodet.detector.predict", "--model", str(model), "--image", str(image),
               "--out", str(out), "--config-json", args.config_json, "--device", args.device]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"== predicting over {info['side']}^2 px ({info['sources']:,} true sources) with {model} ...", flush=True)
    started = time.monotonic()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = peak_pss = 0
    log_lines = []
    os.set_blocking(child.stdout.fileno(), False)
    while child.poll() is None:
        rss, pss = tree_memory_bytes(child.pid)
        peak, peak_pss = max(peak, rss), max(peak_pss, pss)
        line = child.stdout.readline()
        while line:
            log_lines.append(line)
            if "progress" in line or "detections" in line or "measur" in line:
                print("   ", line.rstrip(), flush=True)
            line = child.stdout.readline()
        time.sleep(0.2)
    log_lines += child.stdout.readlines()
    wall = time.monotonic() - started
    if child.returncode:
        print("".join(log_lines[-40:]), file=sys.stderr)
        raise SystemExit(f"prediction failed (exit {child.returncode})")
    summary = json.loads(out.with_suffix(".json").read_text())
    megapixels = summary["megapixels"]
    result = {"scale": str(scale), "side": info["side"], "true_sources": info["sources"], "model": str(model),
              "device": summary["device"], "threads": args.threads, "wall_seconds": round(wall, 1),
              "peak_rss_GiB": round(peak / 2**30, 3), "peak_pss_GiB": round(peak_pss / 2**30, 3),
              "megapixels": round(megapixels, 1),
              "megapixels_per_second": round(megapixels / wall, 3),
              "detect_seconds": summary["detect_seconds"],
              "detect_megapixels_per_second": summary["detect_megapixels_per_second"],
              "measure_seconds": summary["measure_seconds"], "detections": summary["detections"],
              "sources_measured_per_second": summary["sources_measured_per_second"],
              "predict_settings": json.loads(args.config_json)}
    print(f"field                    {info['side']}^2 px = {megapixels:,.0f} MP, {info['sources']:,} true sources")
    print(f"wall time                {wall:,.1f} s ({wall / 60:.1f} min) on {summary['device']}, "
          f"{args.threads} threads")
    print(f"peak memory              PSS {peak_pss / 2**30:.2f} GiB (each page once, as a SLURM cgroup counts); "
          f"RSS {peak / 2**30:.2f} GiB (shared pages once per process); the prediction and its workers")
    print(f"throughput               {megapixels / wall:.3f} MP/s overall; detection {summary['detect_seconds']:,.1f} s"
          f" ({summary['detect_megapixels_per_second']:.3f} MP/s)")
    print(f"measurement              {summary['detections']:,} detections in {summary['measure_seconds']:,.1f} s "
          f"({summary['sources_measured_per_second']:,.0f} sources/s)")
    target = "met" if wall <= 3600 and peak_pss < 4 * 2**30 else "MISSED"
    if scale == 1:
        print(f"target (<= 60 min, < 4 GiB on 2 CPU cores): {target}")
    path = Path(args.workdir) / "bench_detector.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"(written to {path})")
    return result


if __name__ == "__main__":
    main()
