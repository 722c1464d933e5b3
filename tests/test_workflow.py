"""The whole workflow on the bundled SDC1 data, as `make demo` runs it.

Runs Snakemake in a scratch copy of config/ and resources/, then checks the
COCO files with pycocotools, maps boxes back to the sky through the cutout
FITS files, and checks the boxes against PyBDSF's independent source list.
"""

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits
from astropy.wcs import WCS
from conftest import REPO, world_readable_tmpdir
from pycocotools.coco import COCO

from radiodet.schema import read_parquet_metadata

pytestmark = [pytest.mark.workflow, pytest.mark.postgis]

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
RESULTS = "results/sdc1-demo"


# shell rules call the tools next to this Python (torchrun), as in an activated venv
ENV = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def run_snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(SNAKEMAKE + ["--directory", str(workdir), *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


# The demo config with a tiny training budget (a smoke test of train -> predict -> score).
TINY_TRAINING = {"epochs": 1, "max_steps": 3, "batch_size": 2, "crops_per_image": 1, "optimizer": "adamw",
                 "lr": 0.002, "warmup_steps": 2, "workers": 0}


@pytest.fixture(scope="module")
def demo_run(postgis_url):  # postgis_url: skip/fail consistently when PostGIS is missing
    workdir = world_readable_tmpdir("radiodet-workflow-")
    shutil.copytree(REPO / "config", workdir / "config")
    shutil.copytree(REPO / "resources", workdir / "resources")
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["train"] = TINY_TRAINING
    config["predict"]["workers"] = 0
    (workdir / "config" / "ci.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--cores", "2", "--configfile", str(workdir / "config" / "ci.yaml"))
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


def test_every_coco_file_loads_in_pycocotools(demo_run):
    coco_dir = demo_run / RESULTS / "coco"
    counts = {}
    for split in ("train", "val", "test"):
        coco = COCO(str(coco_dir / f"instances_{split}.json"))
        counts[split] = len(coco.getAnnIds())
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["SS-AGN", "FS-AGN", "SFG"]
        for image in coco.loadImgs(coco.getImgIds()):
            assert (coco_dir / image["file_name"]).exists()
            assert (coco_dir / image["fits_file"]).exists()
            if split == "test":
                assert image["parent_x0"] >= 640
            else:
                assert image["parent_x0"] + image["width"] <= 620
    assert all(n > 500 for n in counts.values())


def test_boxes_map_back_to_the_sky_through_the_cutout_fits(demo_run):
    coco_dir = demo_run / RESULTS / "coco"
    data = json.loads((coco_dir / "instances_train.json").read_text())
    images = {image["id"]: image for image in data["images"]}
    offsets = []
    for ann in data["annotations"][:400]:
        image = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        if x <= 0 or y <= 0 or x + w >= image["width"] or y + h >= image["height"]:
            continue  # clipped boxes are not centred on their source
        wcs = WCS(fits.getheader(coco_dir / image["fits_file"]))
        px, py = wcs.world_to_pixel_values(ann["ra"], ann["dec"])
        offsets.append((px + 0.5 - (x + w / 2), py + 0.5 - (y + h / 2)))
    assert len(offsets) > 300
    assert np.abs(offsets).max() < 1e-3


def test_pybdsf_bright_sources_lie_in_boxes(demo_run):
    report = json.loads((demo_run / RESULTS / "crosscheck" / "crosscheck.json").read_text())
    assert report["reference_sources"] > 1000
    assert report["fraction_inside"] >= 0.98
    assert report["median_distance_to_box_centre_px"] <= 0.3


def test_previews_and_statistics_exist(demo_run):
    previews = list((demo_run / RESULTS / "preview").glob("*.png"))
    assert len(previews) == 6
    assert (demo_run / RESULTS / "plots" / "dataset_statistics.png").stat().st_size > 10_000
    for stage in ("ingest", "cutouts/B1_1000h_0.3tr", "index", "filter", "boxes", "coco"):
        assert (demo_run / RESULTS / "logs" / f"{stage}.log").read_text().strip()


def test_a_second_run_has_nothing_to_do(demo_run):
    done = run_snakemake(demo_run, "-n", "--cores", "1", "--configfile", str(demo_run / "config" / "ci.yaml"))
    assert "Nothing to be done" in done.stdout + done.stderr


def test_reindexing_gives_the_same_assignments(demo_run):
    before = (demo_run / RESULTS / "index" / "assignments.parquet").read_bytes()
    run_snakemake(demo_run, "--cores", "1", "--forcerun", "index", "--until", "index", "--configfile",
                  str(demo_run / "config" / "ci.yaml"))
    first = pd.read_parquet(io.BytesIO(before))
    again = pd.read_parquet(demo_run / RESULTS / "index" / "assignments.parquet")
    pd.testing.assert_frame_equal(first, again)


def test_dry_runs_and_lint_for_both_configs(tmp_path):
    for configfile in ("config/config.yaml", "config/sdc1-cpu.yaml", "config/sdc1-faster-rcnn.yaml",
                       "config/sdc1.yaml", "config/sdc1-gpu.yaml", "config/lotss.yaml", "config/mgcls.yaml",
                       "config/mirabest.yaml", "config/hipass.yaml"):
        done = subprocess.run(SNAKEMAKE + ["--directory", str(REPO), "-n", "--configfile", configfile, "--quiet",
                                           "rules"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        lint = subprocess.run(SNAKEMAKE + ["--directory", str(REPO), "--lint", "--configfile", configfile],
                              capture_output=True, text=True, timeout=300)
        assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def test_scores_equal_the_official_scorer_run_by_hand(demo_run):
    from ska_sdc import Sdc1Scorer

    score_dir = demo_run / RESULTS / "score"
    table = pd.read_csv(score_dir / "scores.csv").set_index("method")
    assert set(table.index) == {"detector", "pybdsf"}
    truth_file = score_dir / "truth_test_region.txt"
    truth_rows = sum(1 for line in truth_file.read_text().splitlines() if line.strip())
    assert (table["truth_rows"] == truth_rows).all() and 6500 < truth_rows < 6600
    for method, row in table.iterrows():
        submission = score_dir / f"submission_{method}.txt"
        if row["n_det"] == 0:
            assert row["score"] == 0
            continue
        by_hand = Sdc1Scorer.from_txt(str(submission), str(truth_file), 560, sub_skiprows=1,
                                      truth_skiprows=0).run(mode=0, train=True)
        assert row["score"] == pytest.approx(by_hand.value, abs=5e-4)
        assert (row["n_det"], row["n_match"], row["n_false"]) == (by_hand.n_det, by_hand.n_match, by_hand.n_false)
    # the classical baseline finds the bright sources: far better than nothing
    assert table.loc["pybdsf", "score"] > 400 and table.loc["pybdsf", "precision"] > 0.9
    assert (score_dir / "completeness_precision.png").stat().st_size > 10_000
    coco = json.loads((score_dir / "coco_test.json").read_text())
    assert set(coco) >= {"mAP", "mAP50"}


def test_prediction_catalogue_and_submission_format(demo_run):
    catalogue = pd.read_parquet(demo_run / RESULTS / "predict" / "B1_1000h_0.3tr.parquet")
    assert {"ra", "dec", "flux", "major_fwhm", "pa", "score", "class_id"} <= set(catalogue.columns)
    lines = (demo_run / RESULTS / "predict" / "B1_1000h_0.3tr.sdc1.txt").read_text().splitlines()
    assert lines[0].split() == ["id", "ra_core", "dec_core", "ra_cent", "dec_cent", "flux", "core_frac", "b_maj",
                                "b_min", "pa", "size", "class"]
    assert all(len(line.split()) == 12 and "nan" not in line.lower() for line in lines[1:])
    assert json.loads((demo_run / RESULTS / "train" / "train.json").read_text())["steps"] == 3


def test_the_workflow_profile_is_applied_by_itself():
    """workflow/profiles/default (found through the top-level `profiles` link) sets GPU resources."""
    done = subprocess.run(SNAKEMAKE + ["--directory", str(REPO), "-n", "--configfile", "config/sdc1-gpu.yaml",
                                       "--forcerun", "train", "--until", "train"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    block = done.stdout[done.stdout.index("rule train:"):]
    resources = block[block.index("resources:"):].splitlines()[0]
    assert "gpu=1" in resources and "cpus_per_gpu=8" in resources and "runtime=720" in resources


def test_the_report_holds_the_figures_a_person_needs(demo_run):
    report = demo_run / RESULTS / "report.html"
    run_snakemake(demo_run, "--report", str(report), "--configfile", str(demo_run / "config" / "ci.yaml"))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 100_000
    for item in ("dataset_statistics.png", "training_loss.png", "scores.csv", "completeness_precision.png",
                 "crosscheck.json", "Cutouts with boxes"):
        assert item in html, item
    previews = [p.name for p in (demo_run / RESULTS / "preview").glob("*.png")]
    assert previews and all(name in html for name in previews)


def test_make_bench_runs_from_a_fresh_checkout_with_a_relative_workdir():
    """`make bench` (a relative --workdir, Snakemake running inside it) at a tiny scale, run twice (cached field)."""
    workdir = world_readable_tmpdir("radiodet-bench-")
    try:
        for _ in range(2):
            # the field (3 x 3 cutouts) cut in 3 parts, then again in one job to compare
            done = subprocess.run([sys.executable, "-m", "radiodet.bench_dataset", "--scale", "1/4096",
                                   "--workdir", "benchmarks", "--cores", "2", "--max-per-job", "3",
                                   "--compare-one-job", "--alone"], cwd=workdir, capture_output=True,
                                  text=True, timeout=900, env={**ENV, "PYTHONPATH": str(REPO / "src")})
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        report = json.loads((workdir / "benchmarks" / "bench.json").read_text())
        run = report["scales"]["1/4096"]["run"]
        assert run["cutouts"] >= 4 and run["annotations"] > 100
        assert set(run["stages"]) >= {"index_sources", "cutouts", "index", "coco"}
        # a tiny image copies in under a millisecond: the multiples of the copy stay finite
        multiples = report["scales"]["1/4096"]["multiples_of_copy"]
        assert multiples["whole_run"] > 0 and all(np.isfinite(v) for v in multiples.values()), multiples
        disk = report["scales"]["1/4096"]["disk"]
        assert len(disk["copy_seconds_each"]) == 3 and disk["copy_seconds"] == np.median(disk["copy_seconds_each"])
        # where the page cache may be dropped (root, /proc/sys writable: here and in CI) every copy and run
        # reads the image from the disk; elsewhere all of them start with it in memory
        from radiodet.bench_dataset import drop_page_cache

        assert disk["cache"] == ("cold" if drop_page_cache() else "warm") and disk["warm_copy_seconds"] > 0, disk
        # three parts and their gathering; a stage's wall time spans its jobs, never more than their sum
        for stage in ("cutouts", "views"):
            timing = run["stages"][stage]
            assert (timing["parts"], timing["jobs"]) == (3, 4), timing
            assert 0 < timing["seconds"] <= timing["job_seconds"] + 0.5, timing
        # the same parts again, alone: their own survey's benchmark files, printed beside the build's
        alone = report["scales"]["1/4096"]["alone"]
        for stage in ("cutouts", "views"):
            assert (alone["stages"][stage]["parts"], alone["stages"][stage]["jobs"]) == (3, 4), alone
            assert 0 < alone["stages"][stage]["seconds"] <= alone["seconds"], alone
            assert multiples[f"{stage}_alone"] > 0
        assert "with nothing else running" in done.stdout
        assert not (workdir / "benchmarks" / "scale-1-4096" / "results" / f"{run['survey']}-alone").exists()
        one_job = report["scales"]["1/4096"]["one_job"]
        assert one_job["all_same"] and one_job["files_compared"] > 9, one_job
        assert all((t["jobs"], t["parts"]) == (1, 0) for t in one_job["stages"].values()), one_job
        assert "parts equal to one job" not in done.stdout  # printed for the full-size field only
        assert "the same" in done.stdout
        config = yaml.safe_load((workdir / "benchmarks" / "scale-1-4096" / f"{run['survey']}.yaml").read_text())
        assert Path(config["catalogue"]["path"]).is_absolute() and Path(config["fields"]).is_absolute()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_bench_times_warm_copies_where_the_page_cache_cannot_be_dropped(tmp_path, monkeypatch):
    """Not root: every copy starts with the image in memory, and says so; root: the cache is dropped first."""
    from radiodet import bench_dataset

    image = tmp_path / "field.fits"
    image.write_bytes(os.urandom(3 << 20))
    monkeypatch.setattr(bench_dataset, "DROP_CACHES", tmp_path / "no-such-dir" / "drop_caches")
    assert bench_dataset.drop_page_cache() is False
    disk = bench_dataset.disk_speed(image, 1 << 20, chunk=1 << 20)
    assert disk["cache"] == "warm" and len(disk["copy_seconds_each"]) == 3, disk
    assert not (tmp_path / ".disk-speed.tmp").exists() and image.stat().st_size == 3 << 20
    drops = tmp_path / "drop_caches"
    monkeypatch.setattr(bench_dataset, "DROP_CACHES", drops)
    disk = bench_dataset.disk_speed(image, 1 << 20, chunk=1 << 20)
    assert disk["cache"] == "cold" and drops.read_text() == "1\n", disk
    assert bench_dataset.disk_speed(image, 1 << 20, chunk=1 << 20, cold=False)["cache"] == "warm"


def test_the_bench_waits_for_the_inodes_of_many_deleted_files_only(tmp_path, monkeypatch):
    """A run starts at least six minutes after ~100,000 deleted files (ext4 without a journal skips their inodes)."""
    from radiodet import bench_dataset

    slept = []
    monkeypatch.setattr(bench_dataset.time, "sleep", slept.append)
    monkeypatch.setattr(bench_dataset, "MANY_FILES", 50)
    deletions = bench_dataset._Deletions()
    for n, name in ((10, "few"), (60, "many")):
        (tmp_path / name).mkdir()
        for k in range(n):
            (tmp_path / name / f"{k}.txt").write_text("x")
    deletions.delete(tmp_path / "few")
    deletions.settle()
    assert slept == [] and not (tmp_path / "few").exists()
    deletions.delete(tmp_path / "many")
    deletions.delete(tmp_path / "absent")
    deletions.settle()
    assert not (tmp_path / "many").exists()
    assert len(slept) == 1 and bench_dataset.INODE_RECENCY_SECONDS < slept[0] <= bench_dataset.INODE_RECENCY_SECONDS + 5
    deletions.settle()  # once waited, not again
    assert len(slept) == 1
    # what the benchmark writes itself goes at its end, after its last run
    (tmp_path / "many").mkdir()
    for k in range(60):
        (tmp_path / "many" / f"{k}.txt").write_text("x")
    deletions.delete_at_end(tmp_path / "many")
    deletions.settle()
    assert (tmp_path / "many").exists() and len(slept) == 1
    deletions.finish()
    assert not (tmp_path / "many").exists()


def test_the_bench_counts_the_machines_busy_core_seconds():
    """A busy loop's own CPU time shows in the machine's busy core-seconds, not in its I/O wait."""
    import resource

    from radiodet.bench_dataset import machine_cpu_seconds

    before, own_before = machine_cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        sum(i * i for i in range(10_000))
    after, own_after = machine_cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
    own = own_after.ru_utime + own_after.ru_stime - own_before.ru_utime - own_before.ru_stime
    assert own > 0.3 and after["busy"] - before["busy"] >= 0.8 * own
    assert after["iowait"] >= before["iowait"]


def _tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_the_field_cut_by_five_jobs_gives_the_one_job_dataset(demo_run):
    """cutouts.max_per_job = 4: 5 cutouts_part and 5 views_part jobs, gathered; every dataset output equals
    the one-job run's (cutout and view bytes, manifest and its metadata, sample, assignments, boxes, COCO)."""
    workdir = world_readable_tmpdir("radiodet-parts-")
    try:
        shutil.copytree(REPO / "config", workdir / "config")
        shutil.copytree(REPO / "resources", workdir / "resources")
        config = yaml.safe_load((demo_run / "config" / "ci.yaml").read_text())
        config["cutouts"]["max_per_job"] = 4
        (workdir / "config" / "parts.yaml").write_text(yaml.safe_dump(config))
        done = run_snakemake(workdir, "--cores", "2", "--configfile", str(workdir / "config" / "parts.yaml"),
                             "--until", "coco", "crosscheck")
        log = done.stdout + done.stderr
        for rule, jobs in (("cutouts_part", 5), ("views_part", 5), ("cutouts_gather", 1), ("views_gather", 1)):
            assert re.search(rf"^{rule}\s+{jobs}$", log, re.M), f"expected {jobs} {rule} jobs:\n{log[-3000:]}"
        assert "rule cutouts:" not in log and "rule views:" not in log
        one, parts = demo_run / RESULTS, workdir / RESULTS
        field = "B1_1000h_0.3tr"
        for directory in (f"cutouts/{field}/fits", f"views/{field}"):
            assert _tree(parts / directory) == _tree(one / directory), directory
        manifest = f"cutouts/{field}/manifest.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(parts / manifest), pd.read_parquet(one / manifest))
        assert read_parquet_metadata(parts / manifest) == read_parquet_metadata(one / manifest)
        sample = f"cutouts/{field}/pixel_sample.npy"
        np.testing.assert_array_equal(np.load(parts / sample), np.load(one / sample))
        for table in ("index/assignments.parquet", "index/cutouts.parquet", "boxes/boxes.parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(parts / table), pd.read_parquet(one / table))
        for name in ("instances_train.json", "instances_val.json", "instances_test.json"):
            a, b = (json.loads((run / "coco" / name).read_text()) for run in (parts, one))
            a.pop("info"), b.pop("info")  # the date it was written
            assert a == b and a["annotations"], name
        assert _tree(parts / "coco" / "images") == _tree(one / "coco" / "images")
        assert (json.loads((parts / "crosscheck" / "crosscheck.json").read_text())
                == json.loads((one / "crosscheck" / "crosscheck.json").read_text()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
