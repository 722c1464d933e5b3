"""The whole workflow on the bundled SDC1 data, as `make demo` runs it.

Runs Snakemake in a scratch copy of config/ and resources/, then checks the
COCO files with pycocotools, maps boxes back to the sky through the cutout
FITS files, and checks the boxes against PyBDSF's independent source list.
"""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from pycocotools.coco import COCO

from conftest import REPO, world_readable_tmpdir

pytestmark = [pytest.mark.workflow, pytest.mark.postgis]

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
RESULTS = "results/sdc1-demo"


def run_snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(SNAKEMAKE + ["--directory", str(workdir), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


@pytest.fixture(scope="module")
def demo_run(postgis_url):  # postgis_url: skip/fail consistently when PostGIS is missing
    workdir = world_readable_tmpdir("radiodet-workflow-")
    shutil.copytree(REPO / "config", workdir / "config")
    shutil.copytree(REPO / "resources", workdir / "resources")
    run_snakemake(workdir, "--cores", "2")
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
    done = run_snakemake(demo_run, "-n", "--cores", "1")
    assert "Nothing to be done" in done.stdout + done.stderr


def test_reindexing_gives_the_same_assignments(demo_run):
    before = (demo_run / RESULTS / "index" / "assignments.parquet").read_bytes()
    run_snakemake(demo_run, "--cores", "1", "--forcerun", "index", "--until", "index")
    first = pd.read_parquet(io.BytesIO(before))
    again = pd.read_parquet(demo_run / RESULTS / "index" / "assignments.parquet")
    pd.testing.assert_frame_equal(first, again)


def test_dry_runs_and_lint_for_both_configs(tmp_path):
    for configfile in ("config/config.yaml", "config/sdc1.yaml"):
        done = subprocess.run(SNAKEMAKE + ["--directory", str(REPO), "-n", "--configfile", configfile, "--quiet",
                                           "rules"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        lint = subprocess.run(SNAKEMAKE + ["--directory", str(REPO), "--lint", "--configfile", configfile],
                              capture_output=True, text=True, timeout=300)
        assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr
