"""Many-field benchmark: hundreds of overlapping LoTSS-like mosaics through the dataset stages.

    python -m radiodet.bench_fields                       # 200 fields
    python -m radiodet.bench_fields --fields 50 --workdir benchmarks
    make bench-fields

LoTSS DR2 has 841 overlapping mosaics; what grows with their number is the
DAG (one cutouts job per field), Snakemake's dry run, and the index stage's
cutout ownership (each patch of sky goes to the field whose centre is
nearest) and join. This writes a workflow config whose ``simulate`` rule
makes ``--fields`` mosaics (1.5" pixels, 6" beam, an rms map each, as LoTSS
has) on a grid of centres spaced closer than the mosaics' width, so that
neighbours overlap, straddling RA 0 at Dec +50. Then it

* times ``snakemake -n`` for the whole workflow and counts its jobs,
* runs the dataset stages up to the index (simulation, ingest, one cutouts
  job per field, index) and reads the index job's own figures: wall time,
  ownership seconds, join seconds, sources per second, and the wall time of
  the job that staged its sources beside the cutouts (``index_sources``),

and prints them (``<workdir>/fields-<n>/bench_fields.json`` keeps them).
The images are small (``--size`` pixels a side): the benchmark is about the
number of fields, not their pixels (``make bench`` measures those).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

PIXEL_ARCSEC = 1.5
BEAM_ARCSEC = 6.0


def field_grid(n: int, *, size_px: int, overlap: float = 0.25, dec0: float = 50.0) -> list[dict]:
    """``n`` field centres on a grid of rows of constant Dec, neighbours overlapping by ``overlap``.

    The grid is centred on RA 0 (it straddles RA 0/360); RA steps widen as
    1 / cos(Dec) so the overlap on the sky is the same in every row.
    """
    width_deg = size_px * PIXEL_ARCSEC / 3600.0
    step = width_deg * (1.0 - overlap)
    columns = math.ceil(math.sqrt(2 * n))
    rows = math.ceil(n / columns)
    fields = []
    for k in range(n):
        row, column = divmod(k, columns)
        dec = dec0 + (row - (rows - 1) / 2) * step
        ra = ((column - (columns - 1) / 2) * step / math.cos(math.radians(dec))) % 360.0
        fields.append({"name": f"P{k:04d}", "ra": round(ra, 6), "dec": round(dec, 6), "seed": k + 1})
    return fields


def write_config(directory: Path, n: int, *, size_px: int, sources_per_field: int) -> Path:
    """The workflow config and field table of the benchmark (absolute paths)."""
    directory = directory.resolve()
    survey = f"fields-{n}"
    simulated = directory / "results" / survey / "simulated"
    fields = field_grid(n, size_px=size_px)
    table = pd.DataFrame({"field": [f["name"] for f in fields],
                          "image": [str(simulated / f"{f['name']}.fits") for f in fields],
                          "rms_map": [str(simulated / f"{f['name']}_rms.fits") for f in fields],
                          "primary_beam": "", "centre_ra": [f["ra"] for f in fields],
                          "centre_dec": [f["dec"] for f in fields]})
    table.to_csv(directory / "fields.tsv", sep="\t", index=False)
    config = {
        "adapter": "mgcls", "survey": survey,
        "catalogue": {"path": str(simulated / "catalogue.fits"), "format": "mgcls"},
        "fields": str(directory / "fields.tsv"),
        "simulate": {"activate": True, "fields": fields, "size": size_px, "pixel_arcsec": PIXEL_ARCSEC,
                     "beam_arcsec": BEAM_ARCSEC, "noise_ujy": 70.0, "pb_fwhm_deg": 3.8, "pb_cut": 0.1,
                     "n_point": sources_per_field, "n_extended": max(1, sources_per_field // 20)},
        "classes": {1: "point", 2: "extended"},
        "cutouts": {"size": 256, "layout": "n_plus_one", "max_nan_fraction": 0.0},
        "filter": {"k": 4.0, "flux": "peak", "noise": "auto"},
        "database": {"private_dir": str(directory / "postgis")},
        "datasets": {"detection": True, "ssl": False},
        "train": {"activate": False},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _jobs_in_dry_run(text: str) -> int:
    """The ``total`` of Snakemake's job-stats table."""
    totals = re.findall(r"^total\s+(\d+)\s*$", text, flags=re.MULTILINE)
    if not totals:
        raise RuntimeError(f"no job count in the dry run's output: {text[-2000:]}")
    return int(totals[-1])


def _seconds(log_text: str, pattern: str) -> float | None:
    found = re.search(pattern, log_text)
    return float(found.group(1)) if found else None


def run(directory: Path, n: int, *, size_px: int, sources_per_field: int, cores: int) -> dict:
    directory = directory.resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    config = write_config(directory, n, size_px=size_px, sources_per_field=sources_per_field)
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory",
               str(directory), "--configfile", str(config), "--cores", str(cores)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.monotonic()
    dry = subprocess.run(command + ["-n"], capture_output=True, text=True, env=env)
    dry_seconds = time.monotonic() - started
    if dry.returncode:
        raise RuntimeError(dry.stdout[-2000:] + dry.stderr[-2000:])
    jobs = _jobs_in_dry_run(dry.stdout + dry.stderr)
    print(f"dry run of the whole workflow: {dry_seconds:.2f} s, {jobs} jobs", flush=True)
    started = time.monotonic()
    done = subprocess.run(command + ["--until", "index"], capture_output=True, text=True, env=env)
    until_index = time.monotonic() - started
    if done.returncode:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-5000:])
    results = directory / "results" / f"fields-{n}"
    index = json.loads((results / "index" / "index.json").read_text())
    index_seconds = float(pd.read_csv(results / "benchmarks" / "index.tsv", sep="\t")["s"].iloc[-1])
    staging_seconds = float(pd.read_csv(results / "benchmarks" / "index_sources.tsv", sep="\t")["s"].iloc[-1])
    log = (results / "logs" / "index.log").read_text()
    report = {
        "fields": n, "size_px": size_px, "sources": index["sources"], "cutouts": index["cutouts"],
        "cutouts_owned": index["cutouts_owned"], "pairs": index["pairs"],
        "dry_run_seconds": round(dry_seconds, 2), "dag_jobs": jobs,
        "up_to_index_seconds": round(until_index, 1), "index_seconds": round(index_seconds, 1),
        "index_sources_seconds": round(staging_seconds, 1),
        "ownership_seconds": _seconds(log, r"ownership: .*dropped \(([\d.]+) s\)"),
        "join_seconds": _seconds(log, r"spatial join: .* in ([\d.]+) s"),
        "sources_per_second": round(index["sources"] / index_seconds, 1),
    }
    (directory / "bench_fields.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=200, help="number of overlapping mosaics")
    parser.add_argument("--size", type=int, default=600, help="mosaic side in pixels (1.5 arcsec)")
    parser.add_argument("--sources", type=int, default=300, help="point sources per mosaic")
    parser.add_argument("--workdir", default="benchmarks", help="the run goes to <workdir>/fields-<n>")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="Snakemake --cores")
    args = parser.parse_args(argv)
    directory = Path(args.workdir) / f"fields-{args.fields}"
    report = run(directory, args.fields, size_px=args.size, sources_per_field=args.sources, cores=args.cores)
    print(f"\n{report['fields']} overlapping mosaics of {report['size_px']}^2 px: {report['sources']:,} sources, "
          f"{report['cutouts']:,} cutouts ({report['cutouts_owned']:,} owned), {report['pairs']:,} pairs")
    print(f"snakemake -n (whole workflow): {report['dry_run_seconds']} s for {report['dag_jobs']} jobs "
          "(target: at most 10 s)")
    print(f"index job: {report['index_seconds']} s (target: at most 60 s), ownership {report['ownership_seconds']} s, "
          f"join {report['join_seconds']} s, {report['sources_per_second']:,.0f} sources/s; its sources staged "
          f"beside the cutouts in {report['index_sources_seconds']} s (both jobs: "
          f"{report['index_seconds'] + report['index_sources_seconds']:.1f} s)")
    print(f"simulation + ingest + cutouts + index: {report['up_to_index_seconds']} s")
    print(f"(written to {directory / 'bench_fields.json'})")
    return report


if __name__ == "__main__":
    main()
