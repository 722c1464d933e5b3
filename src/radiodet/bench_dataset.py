"""Full-size benchmark of the dataset stages on a synthetic SDC1-like field.

    python -m radiodet.bench_dataset                       # scales 1/16 and 1/4
    python -m radiodet.bench_dataset --scale 1 --scale 1/4 --scale 1/16
    make bench                                             # the same, all three scales

For each scale (fraction of the 32768 x 32768 area) it generates once, and
caches under ``--workdir`` (default ``benchmarks/``):

* a float32 FITS image with the SDC1 header layout (4-D, SIN, 0.6"/px, 1.5"
  beam), Gaussian noise of 0.38 uJy/beam (the SDC1 560 MHz 1000 h rms) and
  point sources convolved with the beam, written band by band;
* a catalogue in the SDC1 truth format (12 columns, RA as negative degrees
  west of 0) with 5.25 million rows at full size (scaled with the area),
  fluxes from a power law so that about a quarter of the sources are above 3
  sigma, as in the real truth catalogue;

then runs the workflow's dataset stages on it with Snakemake (ingest, cutouts,
views, index, filter, boxes, COCO; no training) and prints, per stage, the
wall time, peak resident memory (Snakemake's benchmark files) and
throughput, next to this machine's sequential write, read and copy speed for
the image's bytes measured in the same run. Each timed copy and each run
starts with the page cache dropped where the benchmark may (root), so all
of them read the image from the disk; elsewhere, or with ``--cache warm``,
all of them start with the image in memory (``cache`` in ``bench.json``). A
last table shows how the time of each stage grows with the area.

A field of more than ``cutouts.max_per_job`` cutouts (``--max-per-job``; the
config default cuts the full field in 8 parts) is cut and viewed by one job
per part: the stage's wall time is then the span from the first part's start
to the gathering's end, and its peak memory the largest part's.
``--compare-one-job`` cuts and views the field a second time in one job and
checks that every cutout, manifest, sample and view is the same. ``--alone``
cuts and views it once more, in the same parts, with nothing else running:
in the build those parts share the cores with the critical path (ingest, the
sources' staging, the index, filter, boxes), so their figures there say how
the build was packed as much as how fast they are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from astropy.io import fits
from scipy.ndimage import gaussian_filter

FULL_SIDE = 32768
FULL_SOURCES = 5_250_000
PIXEL_DEG = 1.67847e-4
NOISE = 3.8e-7          # Jy/beam
BEAM_ARCSEC = 1.5
BAND = 1024             # rows generated at a time
STAGES = ["ingest", "index_sources", "cutouts", "views", "index", "filter", "boxes", "coco"]


def _header(side: int) -> fits.Header:
    header = fits.Header()
    header.update({
        "SIMPLE": True, "BITPIX": -32, "NAXIS": 4, "NAXIS1": side, "NAXIS2": side, "NAXIS3": 1, "NAXIS4": 1,
        "CTYPE1": "RA---SIN", "CRVAL1": 0.0, "CRPIX1": side / 2 + 1, "CDELT1": -PIXEL_DEG, "CUNIT1": "deg",
        "CTYPE2": "DEC--SIN", "CRVAL2": -30.0, "CRPIX2": side / 2 + 1, "CDELT2": PIXEL_DEG, "CUNIT2": "deg",
        "CTYPE3": "FREQ", "CRVAL3": 5.6e8, "CRPIX3": 1.0, "CDELT3": 1.68e8,
        "CTYPE4": "STOKES", "CRVAL4": 1.0, "CRPIX4": 1.0, "CDELT4": 1.0,
        "BMAJ": BEAM_ARCSEC / 3600, "BMIN": BEAM_ARCSEC / 3600, "BPA": 0.0, "BUNIT": "JY/BEAM",
    })
    return header


def generate(directory: Path, scale: Fraction, *, seed: int = 7) -> dict:
    """Image and catalogue for ``scale`` of the full area (cached)."""
    from astropy.wcs import WCS

    # absolute paths: the workflow runs with --directory inside the workdir, and a
    # cache written with a relative workdir must not hand those paths back
    directory = Path(directory).resolve()
    side = int(round(FULL_SIDE * float(scale) ** 0.5))
    n_sources = int(round(FULL_SOURCES * float(scale)))
    image, catalogue = directory / "field.fits", directory / "truth.cat"
    info = {"side": side, "sources": n_sources, "image": str(image), "catalogue": str(catalogue)}
    if image.exists() and catalogue.exists() and (directory / "generated.json").exists():
        return {**json.loads((directory / "generated.json").read_text()), "image": str(image),
                "catalogue": str(catalogue)}
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, side - 0.5, n_sources)
    y = rng.uniform(-0.5, side - 0.5, n_sources)
    # power law dN/dS ~ S^-2.3 from 0.3 to 1000 uJy: ~25 % above 3 sigma
    u = rng.uniform(size=n_sources)
    alpha, s_min, s_max = 2.3, 3e-7, 1e-3
    flux = (s_min ** (1 - alpha) + u * (s_max ** (1 - alpha) - s_min ** (1 - alpha))) ** (1 / (1 - alpha))
    order = np.argsort(y, kind="stable")
    x, y, flux = x[order], y[order], flux[order]
    sigma_px = BEAM_ARCSEC / 3600 / PIXEL_DEG / 2.3548
    header = _header(side)
    # write the header, then the data band by band (the image never sits in memory)
    tmp = image.with_suffix(".tmp")
    header_bytes = header.tostring(endcard=True, padding=True).encode()
    halo = int(np.ceil(6 * sigma_px))
    with open(tmp, "wb") as handle:
        handle.write(header_bytes)
        for y0 in range(0, side, BAND):
            y1 = min(y0 + BAND, side)
            lo, hi = max(y0 - halo, 0), min(y1 + halo, side)
            block = np.zeros((hi - lo, side), dtype=np.float32)
            first, last = np.searchsorted(y, lo - 0.5), np.searchsorted(y, hi - 0.5)
            rows = np.clip(np.round(y[first:last]).astype(int) - lo, 0, hi - lo - 1)
            cols = np.clip(np.round(x[first:last]).astype(int), 0, side - 1)
            # point sources: the peak of a beam-convolved point of flux S is S (Jy/beam)
            np.add.at(block, (rows, cols), flux[first:last] * (2 * np.pi * sigma_px**2))
            block = gaussian_filter(block, sigma_px, mode="constant")
            band = block[y0 - lo:y0 - lo + (y1 - y0)] + rng.standard_normal((y1 - y0, side), dtype=np.float32) * NOISE
            handle.write(band.astype(">f4").tobytes())
        remainder = (len(header_bytes) + side * side * 4) % 2880
        if remainder:
            handle.write(b"\0" * (2880 - remainder))
    os.replace(tmp, image)
    wcs = WCS(header).celestial
    ra, dec = wcs.pixel_to_world_values(np.round(x), np.round(y))
    ra = np.where(ra > 180, ra - 360, ra)
    table = pd.DataFrame({"id": np.arange(1, n_sources + 1), "ra_core": ra, "dec_core": dec, "ra_cent": ra,
                          "dec_cent": dec, "flux": flux, "core_frac": 0.0, "b_maj": 0.3, "b_min": 0.2,
                          "pa": 45.0, "size": 2, "class": 3})
    tmp = catalogue.with_suffix(".tmp")
    table.to_csv(tmp, sep=" ", header=False, index=False, float_format="%.8g")
    os.replace(tmp, catalogue)
    info["generation_seconds"] = round(time.monotonic() - started, 1)
    (directory / "generated.json").write_text(json.dumps(info))
    return info


#: copies of the image timed per scale; the median is the one the multiples divide by
COPIES = 3
#: Linux's switch for dropping the clean page cache (root only)
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> bool:
    """Write dirty pages back and drop the clean page cache; False where that is not allowed (not root).

    Every timed copy and run then reads the image from the disk, as a user's
    first look at an image on a cluster's file system does, whatever an
    earlier scale, copy or run left in memory.
    """
    os.sync()
    try:
        DROP_CACHES.write_text("1\n")
    except OSError:
        return False
    return True


def _read_through(path: Path, chunk: int = 64 << 20) -> None:
    with open(path, "rb") as handle:
        while handle.read(chunk):
            pass


def _timed_copy(path: Path, scratch: Path) -> float:
    started = time.monotonic()
    shutil.copyfile(path, scratch)
    with open(scratch, "rb+") as handle:
        os.fsync(handle.fileno())
    seconds = round(time.monotonic() - started, 3)
    scratch.unlink()
    return seconds


def disk_speed(path: Path, nbytes: int, chunk: int = 64 << 20, *, cold: bool = True) -> dict:
    """Copy of ``path`` (the median of :data:`COPIES`), then sequential write and read of ``nbytes``, in MB/s.

    ``cold``: each copy, and the read, starts with the page cache dropped
    (:func:`drop_page_cache`): the image comes from the disk every time.
    Where the cache cannot be dropped (not root), or with ``cold=False``,
    the image is read through once untimed and every copy starts with it
    in memory; ``cache`` says which was done, and the workflow's runs start
    in the same state (:func:`prepare_cache`). A copy of the same image took
    3.4 s from memory and 8.7 s from the disk on the same machine, and a
    median of copies where only the first was cold was a warm copy or a
    cold one depending on what earlier runs had left in memory: 3.0 to
    11.7 s, so the multiples of it differed by 4 x between runs of the same
    code. ``warm_copy_seconds`` is a copy with the image in memory, either way.

    Each copy goes to a new file, as copying the image somewhere would, and
    starts on a quiet disk (``os.sync``: the writes of an earlier scale's
    run still going out made a copy up to 3 x slower).
    """
    scratch = path.parent / ".disk-speed.tmp"
    cold = cold and drop_page_cache()
    if not cold:
        _read_through(path)
    copies = []
    for _ in range(COPIES):
        if not (cold and drop_page_cache()):
            os.sync()
        copies.append(_timed_copy(path, scratch))
    copy_s = float(np.median(copies))
    os.sync()
    warm_copy_s = _timed_copy(path, scratch)
    block = os.urandom(chunk)
    os.sync()
    started = time.monotonic()
    with open(scratch, "wb") as handle:
        for _ in range(max(1, nbytes // chunk)):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    write_s = time.monotonic() - started
    if cold:
        drop_page_cache()
    started = time.monotonic()
    _read_through(scratch, chunk)
    read_s = time.monotonic() - started
    scratch.unlink()
    mb = nbytes / 1e6
    return {"bytes": nbytes, "write_MBps": round(mb / write_s, 1), "read_MBps": round(mb / read_s, 1),
            "cache": "cold" if cold else "warm", "copy_seconds": round(copy_s, 3), "copy_seconds_each": copies,
            "copy_MBps": round(path.stat().st_size / 1e6 / max(copy_s, 1e-6), 1),
            "warm_copy_seconds": warm_copy_s}


def prepare_cache(cache: str, image: Path) -> None:
    """Put the page cache in the state the copies were timed in: dropped (``cold``), or holding the image."""
    if cache == "cold":
        drop_page_cache()
    else:
        _read_through(image)


#: a copy faster than this (a tiny test image) is taken as this long, so the multiples stay finite
MIN_COPY_SECONDS = 1e-3


def _copy_seconds(disk: dict, key: str = "copy_seconds") -> float:
    """The copy time ``disk[key]`` (the median copy, or ``warm_copy_seconds``), at least :data:`MIN_COPY_SECONDS`."""
    return max(float(disk[key]), MIN_COPY_SECONDS)


def _config(directory: Path, info: dict, survey: str, max_per_job: int | None) -> Path:
    fields = directory / "fields.tsv"
    fields.write_text(f"field\timage\trms_map\tprimary_beam\nbench\t{info['image']}\t\t\n")
    config = {
        "survey": survey, "catalogue": {"path": info["catalogue"], "format": "sdc1_truth"}, "fields": str(fields),
        "classes": {1: "SS-AGN", 2: "FS-AGN", 3: "SFG"}, "cutouts": {"size": 205},
        "views": {"formats": ["png", "npy"]}, "database": {"private_dir": str(directory / "postgis")},
        "filter": {"k": 3.0}, "train": {"activate": False}, "coco": {"segmentation": False},
        "preview": {"n": 2},
    }
    if max_per_job is not None:
        config["cutouts"]["max_per_job"] = max_per_job
    config_path = directory / f"{survey}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def _snakemake(directory: Path, config_path: Path, repo: Path, cores: int) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory", str(directory),
            "--configfile", str(config_path), "--cores", str(cores)]


def stage_timing(benchmarks: Path, stage: str) -> dict:
    """A stage's wall time and peak memory from Snakemake's benchmark files.

    A per-survey stage has ``<stage>.tsv``; a field cut in one job
    ``<stage>/<field>.tsv``; a field cut in parts ``<stage>/<field>/<part>.tsv``
    and its gathering ``<stage>_gather/<field>.tsv``. A benchmark file is
    written as its job ends, so a job ran from mtime - s to mtime, and the
    stage's wall time is the span from the first job's start to the last one's
    end (parts run side by side). ``jobs`` counts them all, ``parts`` the parts
    alone (0 for a field cut in one job); ``job_seconds`` sums the jobs' own times.
    """
    files = [benchmarks / f"{stage}.tsv"]
    parts = []
    if not files[0].exists():
        parts = sorted((benchmarks / stage).glob("*/*.tsv"))
        gathers = sorted((benchmarks / f"{stage}_gather").glob("*.tsv"))
        files = sorted((benchmarks / stage).glob("*.tsv")) + parts + gathers
    if not files:
        raise FileNotFoundError(f"no benchmark file of stage {stage} under {benchmarks}")
    seconds, rss, ends = [], [], []
    for path in files:
        table = pd.read_csv(path, sep="\t")
        seconds.append(float(table["s"].iloc[-1]))
        rss.append(float(table["max_rss"].iloc[-1]))
        ends.append(path.stat().st_mtime)
    span = max(ends) - min(end - s for end, s in zip(ends, seconds))
    return {"seconds": round(span if len(files) > 1 else seconds[0], 3), "max_rss_MB": max(rss),
            "jobs": len(files), "parts": len(parts), "job_seconds": round(sum(seconds), 3)}


def machine_cpu_seconds() -> dict[str, float]:
    """Core-seconds the whole machine has spent busy and waiting for I/O since boot (``/proc/stat``).

    Busy is everything but idle and iowait: the benchmark's jobs, the
    PostgreSQL server they start, the kernel's writeback; the difference over
    a run, against cores x wall, tells whether the build was short of CPU.
    Zeros where there is no ``/proc/stat``.
    """
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return {"busy": 0.0, "iowait": 0.0}
    hz = os.sysconf("SC_CLK_TCK")
    idle, iowait = ticks[3], ticks[4]
    return {"busy": (sum(ticks[:8]) - idle - iowait) / hz, "iowait": iowait / hz}


def run_workflow(directory: Path, info: dict, repo: Path, cores: int, max_per_job: int | None = None,
                 cache: str = "warm") -> dict:
    """The dataset stages of the generated field, timed, with the page cache as ``cache`` (:func:`prepare_cache`)."""
    survey = f"bench-{info['side']}"
    command = _snakemake(directory, _config(directory, info, survey, max_per_job), repo, cores)
    started = time.monotonic()
    dry = subprocess.run(command + ["-n", "--quiet", "rules"], capture_output=True, text=True)
    dry_seconds = time.monotonic() - started
    if dry.returncode:
        raise RuntimeError(dry.stdout[-2000:] + dry.stderr[-2000:])
    prepare_cache(cache, Path(info["image"]))
    started, cpu_before = time.monotonic(), machine_cpu_seconds()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    total, cpu_after = time.monotonic() - started, machine_cpu_seconds()
    if done.returncode:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-5000:])
    benchmarks = directory / "results" / survey / "benchmarks"
    stages = {stage: stage_timing(benchmarks, stage) for stage in STAGES}
    summary = json.loads((directory / "results" / survey / "coco_summary.json").read_text())
    index = json.loads((directory / "results" / survey / "index" / "index.json").read_text())
    busy, iowait = (cpu_after[k] - cpu_before[k] for k in ("busy", "iowait"))
    return {"stages": stages, "total_seconds": round(total, 1), "dry_run_seconds": round(dry_seconds, 2),
            "busy_core_seconds": round(busy, 1), "iowait_core_seconds": round(iowait, 1),
            "cutouts": index["cutouts"], "pairs": index["pairs"],
            "annotations": sum(summary["annotations"].values()), "survey": survey}


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())
            if p.is_file() and not p.name.startswith(".")}


#: the stages a field cut in parts runs in parts (and gathers)
SPLIT_STAGES = ("cutouts", "views")


def _cut_and_view(directory: Path, info: dict, repo: Path, cores: int, survey: str,
                  max_per_job: int | None, cache: str) -> float:
    """Cut and view the field alone under the survey name ``survey``; the seconds Snakemake took."""
    command = _snakemake(directory, _config(directory, info, survey, max_per_job), repo, cores)
    targets = [f"results/{survey}/views/bench", f"results/{survey}/cutouts/bench/manifest.parquet"]
    prepare_cache(cache, Path(info["image"]))
    started = time.monotonic()
    done = subprocess.run(command + targets, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-5000:])
    return time.monotonic() - started


def compare_one_job(directory: Path, info: dict, repo: Path, cores: int, survey: str,
                    deletions: _Deletions, cache: str = "warm") -> dict:
    """Cut and view the field again in one job (its own survey name); compare with the run in parts."""
    one = f"{survey}-one-job"
    seconds = _cut_and_view(directory, info, repo, cores, one, 10**9, cache)
    a, b = directory / "results" / survey, directory / "results" / one
    same = {}
    for part in ("cutouts/bench/fits", "views/bench"):
        same[part] = _digests(a / part) == _digests(b / part)
    for name in ("manifest.parquet", "pixel_sample.npy"):
        same[name] = (a / "cutouts/bench" / name).read_bytes() == (b / "cutouts/bench" / name).read_bytes()
    files = sum(1 for _ in (b / "cutouts/bench/fits").iterdir()) + sum(1 for _ in (b / "views/bench").iterdir())
    stages = {stage: stage_timing(b / "benchmarks", stage) for stage in SPLIT_STAGES}
    deletions.delete_at_end(b)  # not before a later scale's run (see _Deletions)
    return {"one_job_seconds": round(seconds, 1), "files_compared": files, "same": same,
            "all_same": all(same.values()), "stages": stages}


def split_stages_alone(directory: Path, info: dict, repo: Path, cores: int, survey: str,
                       max_per_job: int | None, deletions: _Deletions, cache: str = "warm") -> dict:
    """Cut and view the field again, in the same parts, with nothing else running (its own survey name).

    In the build the cutout and view parts share the cores with the critical
    path (ingest, the sources' staging, the index, filter, boxes), by design:
    their wall times there say how the build was packed as much as how fast
    they are. This is what a user re-running the two stages alone sees.
    """
    alone = f"{survey}-alone"
    seconds = _cut_and_view(directory, info, repo, cores, alone, max_per_job, cache)
    benchmarks = directory / "results" / alone / "benchmarks"
    deletions.delete_at_end(directory / "results" / alone)
    return {"seconds": round(seconds, 1), "stages": {stage: stage_timing(benchmarks, stage) for stage in SPLIT_STAGES}}


#: seconds a no-journal ext4 keeps a freed inode from new files: 60, plus 300 while its inode table block is
#: dirty, as it is again once a new file takes an inode of that block (fs/ext4/ialloc.c, recently_deleted)
INODE_RECENCY_SECONDS = 360
#: deleting fewer files than this is not waited for
MANY_FILES = 10_000


class _Deletions:
    """Deletes earlier runs' outputs, and lets a run start only when the freed inodes are reusable.

    On ext4 without a journal (the CI machine kind's disk) a new file does
    not take an inode freed in the last minute, or in the last six while the
    inode's table block is dirty (which a new file in that block makes it),
    and each such candidate is checked in turn: a views job started right
    after the previous run's ~100,000 files were deleted spent 28 % of its
    samples in ``recently_deleted``, and its kernel time doubled; a whole
    full-size build started 65 s after the deletion used 197-201 core
    seconds, 176 when started 400 s after it. A user's first run never pays
    that. The benchmark deletes earlier results before anything else, keeps
    what it writes itself until its end (:meth:`delete_at_end`), and waits
    out the rest of the six minutes (``os.sync`` first) before its first run.
    """

    def __init__(self):
        self.last = None
        self.at_end: list[Path] = []

    def delete(self, path: Path) -> None:
        if not path.exists():
            return
        files = sum(len(names) for _, _, names in os.walk(path))
        shutil.rmtree(path, ignore_errors=True)
        if files >= MANY_FILES:
            self.last = time.monotonic()

    def delete_at_end(self, path: Path) -> None:
        """Delete ``path`` when the benchmark ends (:meth:`finish`), after its last run."""
        self.at_end.append(path)

    def settle(self) -> None:
        if self.last is None:
            return
        os.sync()
        wait = self.last + INODE_RECENCY_SECONDS + 5 - time.monotonic()
        if wait > 0:
            print(f"   (waiting {wait:.0f} s: ext4 without a journal does not reuse the inodes of the deleted "
                  "results sooner, and checks each of them on every new file)", flush=True)
            time.sleep(wait)
        self.last = None

    def finish(self) -> None:
        for path in self.at_end:
            self.delete(path)
        self.at_end = []


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="append", default=None,
                        help="fraction of the full 32768^2 area, e.g. 1, 1/4, 1/16 (repeat for several)")
    parser.add_argument("--workdir", default="benchmarks", help="where fields are cached and runs go")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="Snakemake --cores")
    parser.add_argument("--max-per-job", type=int, default=None,
                        help="cutouts.max_per_job (default: the config's, 8 parts at full size)")
    parser.add_argument("--compare-one-job", action="store_true",
                        help="also cut and view each field in one job and check the outputs are the same")
    parser.add_argument("--alone", action="store_true",
                        help="also cut and view each field again, in the same parts, with nothing else running")
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold",
                        help="page cache at each timed copy and run: dropped (cold, where allowed: root), or "
                             "holding the image (warm); default cold, warm where it cannot be dropped")
    parser.add_argument("--summarise", action="store_true",
                        help="only print the tables and targets of an earlier run's <workdir>/bench.json")
    args = parser.parse_args(argv)
    if args.summarise:
        report = json.loads((Path(args.workdir) / "bench.json").read_text())
        for scale, entry in report["scales"].items():
            _print_scale(scale, entry["generated"], entry["disk"], entry["run"], entry["image_MB"] * 1e6)
            _print_one_job(entry)
            _print_alone(entry)
        _print_growth(report)
        _print_targets(report)
        return report
    scales = sorted({Fraction(s) for s in (args.scale or ["1/16", "1/4"])})
    repo = Path(__file__).resolve().parents[2]
    report = {"machine": {"cpus": os.cpu_count(), "memory_GB": round(os.sysconf("SC_PAGE_SIZE")
                                                                     * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)},
              "scales": {}}
    workdir = Path(args.workdir).resolve()
    deletions = _Deletions()
    directories = {scale: workdir / f"scale-{scale.numerator}-{scale.denominator}" for scale in scales}
    for directory in directories.values():
        # a fresh run each time: earlier results go first, all at once (the inputs stay cached)
        deletions.delete(directory / "results")
        deletions.delete(directory / ".snakemake")
    for scale, directory in directories.items():
        print(f"== scale {scale}: generating (cached) ...", flush=True)
        info = generate(directory, scale)
        image = Path(info["image"])
        disk = disk_speed(image, image.stat().st_size, cold=args.cache == "cold")
        deletions.settle()
        print(f"== scale {scale}: {info['side']}^2 px, {info['sources']} sources: running the dataset stages",
              flush=True)
        run = run_workflow(directory, info, repo, args.cores, args.max_per_job, disk["cache"])
        report["scales"][str(scale)] = {"generated": info, "disk": disk, "run": run,
                                        "image_MB": round(image.stat().st_size / 1e6, 1)}
        if args.compare_one_job:
            print(f"== scale {scale}: cutting and viewing the field again in one job", flush=True)
            report["scales"][str(scale)]["one_job"] = compare_one_job(directory, info, repo, args.cores,
                                                                     run["survey"], deletions, disk["cache"])
        if args.alone:
            print(f"== scale {scale}: cutting and viewing the field again, alone", flush=True)
            report["scales"][str(scale)]["alone"] = split_stages_alone(directory, info, repo, args.cores,
                                                                      run["survey"], args.max_per_job, deletions,
                                                                      disk["cache"])
        report["scales"][str(scale)]["multiples_of_copy"] = multiples_of_copy(report["scales"][str(scale)])
        _print_scale(scale, info, disk, run, image.stat().st_size)
        _print_one_job(report["scales"][str(scale)])
        _print_alone(report["scales"][str(scale)])
    deletions.finish()
    _print_growth(report)
    _print_targets(report)
    out = Path(args.workdir) / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"(written to {out})")
    return report


_CACHE_WORDS = {"cold": "from a dropped page cache (the image read from the disk)",
                "warm": "with the image in memory (--cache warm, or the page cache could not be dropped)"}


def _print_scale(scale, info, disk, run, image_bytes) -> None:
    mb = image_bytes / 1e6
    rows = {
        "ingest": f"{info['sources'] / run['stages']['ingest']['seconds']:,.0f} rows/s",
        "cutouts": f"{mb / run['stages']['cutouts']['seconds']:.0f} MB/s of image",
        "views": f"{run['cutouts'] / run['stages']['views']['seconds']:.0f} cutouts/s",
        "index_sources": f"{info['sources'] / run['stages']['index_sources']['seconds']:,.0f} sources/s staged",
        "index": f"{info['sources'] / run['stages']['index']['seconds']:,.0f} sources/s",
        "filter": f"{run['pairs'] / run['stages']['filter']['seconds']:,.0f} pairs/s",
        "boxes": f"{run['annotations'] / max(run['stages']['boxes']['seconds'], 1e-9):,.0f} boxes/s",
        "coco": f"{run['annotations'] / max(run['stages']['coco']['seconds'], 1e-9):,.0f} annotations/s",
    }
    print(f"\nscale {scale}: {info['side']} x {info['side']} px ({mb:,.0f} MB), {info['sources']:,} sources, "
          f"{run['cutouts']:,} cutouts, {run['annotations']:,} annotations")
    each = disk.get("copy_seconds_each")
    print(f"disk: write {disk['write_MBps']} MB/s, read {disk['read_MBps']} MB/s, copy of the image "
          f"{disk['copy_seconds']} s ({disk['copy_MBps']} MB/s)"
          + (f", the median of {', '.join(map(str, each))} s" if each and len(each) > 1 else "")
          + (f", each {_CACHE_WORDS[disk['cache']]}; with the image in memory {disk['warm_copy_seconds']} s"
             if "cache" in disk else ""))
    copy = _copy_seconds(disk)
    print(f"{'stage':<13} {'wall s':>8} {'x copy':>7} {'peak RSS MB':>12} {'jobs':>5}  throughput")
    for stage in STAGES:
        s = run["stages"][stage]
        print(f"{stage:<13} {s['seconds']:>8.1f} {s['seconds'] / copy:>7.1f} {s['max_rss_MB']:>12.0f} "
              f"{s.get('jobs', 1):>5}  {rows[stage]}")
    core = sum(run["stages"][s]["seconds"] for s in ("ingest", "index", "filter"))
    print(f"ingest + index + filter: {core:.1f} s; whole run (Snakemake, all stages): {run['total_seconds']} s "
          f"= {run['total_seconds'] / copy:.1f} x the copy; dry run {run['dry_run_seconds']} s")
    if run.get("busy_core_seconds"):
        cores = os.cpu_count() or 1
        print(f"the machine's cores were busy {run['busy_core_seconds']} core-s during the run "
              f"({run['busy_core_seconds'] / (cores * run['total_seconds']):.0%} of {cores} x the wall; "
              f"{run['iowait_core_seconds']} core-s waiting for I/O): with every core busy the wall can be no "
              f"shorter than {run['busy_core_seconds'] / cores:.1f} s")


def _print_one_job(entry) -> None:
    one = entry.get("one_job")
    if one is None:
        return
    verdict = "the same" if one["all_same"] else "DIFFERENT: " + ", ".join(k for k, v in one["same"].items() if not v)
    parts = entry["run"]["stages"]["cutouts"].get("parts", 0)
    run = f"the {parts} parts' gathered output" if parts else "the run's (also one job: cutouts.max_per_job)"
    stages = ", ".join(f"{stage} {t['seconds']:.1f} s" for stage, t in one.get("stages", {}).items())
    print(f"cut and viewed again in one job ({one['one_job_seconds']} s{': ' + stages if stages else ''}): "
          f"{one['files_compared']:,} files, the manifest and the pixel sample compared with {run}: {verdict}")


def _print_alone(entry) -> None:
    alone = entry.get("alone")
    if alone is None:
        return
    copy = _copy_seconds(entry["disk"])
    stages = "; ".join(f"{stage} {t['seconds']:.1f} s = {t['seconds'] / copy:.1f} x the copy ({t['jobs']} jobs)"
                       for stage, t in alone["stages"].items())
    print(f"cut and viewed again in the same parts with nothing else running ({alone['seconds']} s): {stages}")


def _print_growth(report) -> None:
    scales = list(report["scales"])
    if len(scales) < 2:
        return
    print("\nhow time grows with area (seconds; last column: ratio largest/smallest over area ratio, 1 = linear)")
    print(f"{'stage':<13} " + " ".join(f"{s:>9}" for s in scales) + "  linearity")
    area = float(Fraction(scales[-1]) / Fraction(scales[0]))
    for stage in STAGES:
        times = [report["scales"][s]["run"]["stages"][stage]["seconds"] for s in scales]
        growth = times[-1] / max(times[0], 1e-9) / area
        print(f"{stage:<13} " + " ".join(f"{t:>9.1f}" for t in times) + f"  {growth:>8.2f}")



#: the targets for the full-size field on a 2-core, 24 GiB machine: multiples of the
#: image copy time measured in the same run (machines of one kind differ 1.6 x in seconds)
TARGETS = {"whole_vs_copy": 12.0, "index_vs_copy": 4.0, "views_vs_copy": 4.0, "cutouts_vs_copy": 2.5,
           "cutouts_rss_MB": 1024.0}
#: the full-size field is cut by at least this many jobs (cutouts.max_per_job)
MIN_PARTS = 8


def multiples_of_copy(entry: dict) -> dict:
    """Each stage's wall time and the whole run's, over the image copy time of the same run."""
    copy = _copy_seconds(entry["disk"])
    out = {stage: round(s["seconds"] / copy, 2) for stage, s in entry["run"]["stages"].items()}
    out["whole_run"] = round(entry["run"]["total_seconds"] / copy, 2)
    for stage, timing in entry.get("alone", {}).get("stages", {}).items():
        out[f"{stage}_alone"] = round(timing["seconds"] / copy, 2)
    return out


def _print_targets(report) -> None:
    if "1" not in report["scales"]:
        print("\n(the full-size targets apply to --scale 1)")
        return
    entry = report["scales"]["1"]
    multiples = multiples_of_copy(entry)
    measured = {"whole_vs_copy": multiples["whole_run"], "index_vs_copy": multiples["index"],
                "views_vs_copy": multiples["views"], "cutouts_vs_copy": multiples["cutouts"],
                "cutouts_rss_MB": entry["run"]["stages"]["cutouts"]["max_rss_MB"]}
    labels = {"whole_vs_copy": "whole build / copying the image", "index_vs_copy": "index job / copying the image",
              "views_vs_copy": "views / copying the image", "cutouts_vs_copy": "cutouts / copying the image",
              "cutouts_rss_MB": "cutouts peak RSS (MB)"}
    # the index's two jobs: its sources staged beside the cutouts, then the join after them
    measured["index_both_vs_copy"] = round(multiples["index"] + multiples["index_sources"], 2)
    labels["index_both_vs_copy"] = "index, both jobs / copying the image"
    targets = {**TARGETS, "index_both_vs_copy": TARGETS["index_vs_copy"]}
    for stage in entry.get("alone", {}).get("stages", {}):
        # the same limits, for the two stages re-run by themselves (the build's figures are the ones judged)
        key = f"{stage}_alone_vs_copy"
        measured[key] = multiples[f"{stage}_alone"]
        labels[key] = f"{stage} alone / copying the image"
        targets[key] = TARGETS[f"{stage}_vs_copy"]
    print("\nfull-size targets")
    for key, target in targets.items():
        value = measured[key]
        verdict = "met" if value <= target else f"missed by {value - target:.2f} ({value / target:.2f} x the target)"
        print(f"{labels[key]:<36} {value:>9.2f}  target {target:>7.1f}  {verdict}")
    parts = entry["run"]["stages"]["cutouts"].get("parts") or 1
    print(f"{'jobs cutting the field':<36} {parts:>9}  target {MIN_PARTS:>7} or more  "
          f"{'met' if parts >= MIN_PARTS else 'missed'}")
    if "one_job" in entry:
        print(f"{'parts equal to one job':<36} {str(entry['one_job']['all_same']):>9}")
    disk = entry["disk"]
    if disk.get("cache") == "cold":
        warm = _copy_seconds(disk, "warm_copy_seconds")
        print(f"(the copy and the runs started with the page cache dropped; a copy with the image in memory took "
              f"{warm} s, and the whole build {entry['run']['total_seconds'] / warm:.1f} x that)")


if __name__ == "__main__":
    main()
