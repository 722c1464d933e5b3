"""Survey adapters and the LoTSS, MGCLS and MiraBest runs on bundled/simulated data."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from astropy.io import fits
from conftest import REPO, world_readable_tmpdir
from test_workflow import ENV, SNAKEMAKE

from radiodet.catalogues import read_catalogue, with_survey_defaults
from radiodet.classification import StampConfig, preprocess_stamp
from radiodet.errors import CatalogueError
from radiodet.torch_datasets import RadioClassification, SelfSupervisedCrops

LOTSS_CATALOGUE = REPO / "resources" / "lotss" / "catalog_shimwell_reduced.srl.fits"


def test_adapter_defaults_fill_only_what_the_config_leaves_out():
    merged = with_survey_defaults({"adapter": "mgcls", "survey": "x", "cutouts": {"size": 128}})
    assert merged["cutouts"] == {"size": 128, "max_nan_fraction": 0.0, "layout": "n_plus_one"}
    assert merged["catalogue"]["format"] == "mgcls" and merged["image"]["plane"] == [0, 0]
    assert merged["views"]["percentiles"] == [2.0, 98.0]
    assert with_survey_defaults({"survey": "y"})["catalogue"]["format"] == "sdc1_truth"
    with pytest.raises(ValueError, match="adapter"):
        with_survey_defaults({"adapter": "nvss"})


def test_lotss_reader_converts_units_and_classes():
    df = read_catalogue(LOTSS_CATALOGUE, "lotss")
    assert len(df) == 12093
    row = df.iloc[0]
    assert row["flux"] == pytest.approx(row["orig_Total_flux"] / 1000.0)          # mJy -> Jy
    assert row["local_rms"] == pytest.approx(row["orig_Isl_rms"] / 1000.0)        # mJy/beam -> Jy/beam
    assert row["major_fwhm"] == pytest.approx(row["orig_DC_Maj"])                 # deconvolved sizes
    assert set(df["class_id"]) == {1, 2} and (df.loc[df["orig_S_Code"] == "M", "class_id"] == 2).all()
    assert df["orig_Source_Name"].str.startswith("ILTJ").all()


def test_lotss_bad_s_code_names_the_row(tmp_path):
    from astropy.table import Table

    table = Table.read(LOTSS_CATALOGUE)[:5]
    table["S_Code"][3] = "X"
    table.write(tmp_path / "bad.fits")
    with pytest.raises(CatalogueError, match="unknown S_Code 'X'") as err:
        read_catalogue(tmp_path / "bad.fits", "lotss")
    assert err.value.row == 4


def test_preprocess_stamp_recipe_steps():
    stamp = np.full((20, 20), 0.1)
    stamp[0, 0] = np.nan
    # (3, 3) lands at (1, 1) of the crop, outside the radial mask; (9, 10) is below 3 sigma
    stamp[10, 10], stamp[9, 10], stamp[3, 3] = 5.0, 1.2, 4.0
    out = preprocess_stamp(stamp, rms=0.5, config=StampConfig(stamp=20, clip_sigma=3.0, crop=16, mask_radius=6.0))
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    assert out[8, 8] == 255 and out.min() == 0
    assert out[7, 8] == 0 and out[1, 1] == 0
    assert np.count_nonzero(out) == 1


@pytest.fixture(scope="module")
def survey_runs(postgis_url):
    workdir = world_readable_tmpdir("radiodet-surveys-")
    shutil.copytree(REPO / "config", workdir / "config")
    shutil.copytree(REPO / "resources", workdir / "resources")
    # a smaller simulated MGCLS field keeps the test quick
    mgcls = yaml.safe_load((workdir / "config" / "mgcls.yaml").read_text())
    mgcls["simulate"].update({"size": 1100, "pixel_arcsec": 4.0, "n_point": 250, "n_extended": 30})
    (workdir / "config" / "mgcls-test.yaml").write_text(yaml.safe_dump(mgcls))
    for config in ("lotss.yaml", "mirabest.yaml", "mgcls-test.yaml", "hipass.yaml"):
        done = subprocess.run(SNAKEMAKE + ["--directory", str(workdir), "--cores", "2", "--configfile",
                                           str(workdir / "config" / config)],
                              capture_output=True, text=True, timeout=900, env=ENV)
        assert done.returncode == 0, done.stderr[-5000:]
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


def test_lotss_bright_sources_are_boxed_and_no_sky_comes_from_two_mosaics(survey_runs):
    results = survey_runs / "results" / "lotss-dr1"
    check = json.loads((results / "crosscheck" / "crosscheck.json").read_text())
    assert check["reference_sources"] >= 20 and check["fraction_inside"] >= 0.98
    ownership = pd.read_parquet(results / "index" / "cutouts.parquet")
    owned = ownership[ownership["owned"]]
    # no two owned cutouts of different mosaics share sky: their exact footprints do not intersect
    from shapely.geometry import Polygon

    polygons = {}
    for field in owned["field"].unique():
        manifest = pd.read_parquet(results / "cutouts" / field / "manifest.parquet").set_index("cutout_id")
        for cutout_id in owned.loc[owned["field"] == field, "cutout_id"]:
            ring = [tuple(map(float, p.split())) for p in manifest.loc[cutout_id, "footprint"].split(", ")]
            polygons[(field, cutout_id)] = Polygon([((ra + 180) % 360, dec) for ra, dec in ring])
    keys = list(polygons)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if a[0] != b[0]:
                assert polygons[a].intersection(polygons[b]).area == pytest.approx(0.0, abs=1e-12)
    coco = json.loads((results / "coco" / "instances_train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["single", "multiple", "complex"]


def test_hipass_aegean_table_needs_only_a_config_and_its_boxes_sit_on_its_sources(survey_runs):
    """SIN about the south pole, reference pixel outside the image, 40 % NaN: boxes on the sources."""
    from astropy.io import fits
    from astropy.wcs import WCS
    from pycocotools.coco import COCO

    results = survey_runs / "results" / "hipass-1904"
    boxes = pd.read_parquet(results / "boxes" / "boxes.parquet")
    assert len(boxes) >= 20 and boxes["snr"].min() >= 5.0
    peak_offsets = []
    for row in boxes.itertuples():
        with fits.open(results / "cutouts" / row.field / "fits" / f"{row.cutout_id}.fits") as hdul:
            data, wcs = hdul[0].data, WCS(hdul[0].header).celestial
        # the box centre is the catalogue position through the cutout's own WCS
        x, y = wcs.world_to_pixel_values(row.ra, row.dec)
        assert (row.x, row.y) == pytest.approx((float(x), float(y)), abs=1e-3)
        assert row.bbox_x + row.bbox_w / 2 == pytest.approx(row.x + 0.5, abs=1e-6) or row.visible_fraction < 1
        # ... and the image peaks there: the brightest pixel of a 7 x 7 window around it
        ix, iy = int(round(row.x)), int(round(row.y))
        window = data[max(iy - 3, 0):iy + 4, max(ix - 3, 0):ix + 4]
        if np.isfinite(window).all() and row.snr >= 10:
            py, px = np.unravel_index(np.argmax(window), window.shape)
            peak_offsets.append(np.hypot(px + max(ix - 3, 0) - row.x, py + max(iy - 3, 0) - row.y))
    assert len(peak_offsets) >= 10
    assert np.median(peak_offsets) <= 0.75 and np.max(peak_offsets) <= 1.5  # 4' pixels, 14.4' beam
    coco = COCO(str(results / "coco" / "instances_train.json"))
    assert len(coco.getAnnIds()) == (boxes["split"] == "train").sum()
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["source"]


def test_mgcls_sources_above_5_sigma_are_boxed_and_crop_counts_match_the_truth(survey_runs):
    results = survey_runs / "results" / "mgcls-sim"
    check = json.loads((results / "crosscheck" / "crosscheck.json").read_text())
    assert check["reference_sources_in_a_cutout"] > 30
    assert check["fraction_inside_of_those_in_a_cutout"] == 1.0
    crops = pd.read_parquet(results / "ssl" / "crops.parquet")
    truth = pd.read_parquet(results / "simulated" / "truth.parquet")
    for row in crops.itertuples():
        expected = ((truth["x"] >= row.x0 - 0.5) & (truth["x"] < row.x1 - 0.5)
                    & (truth["y"] >= row.y0 - 0.5) & (truth["y"] < row.y1 - 0.5)).sum()
        assert row.source_count == expected
    # crops: 256 px, n + 1 per axis, none holding NaN (the first cube plane)
    manifest = pd.read_parquet(results / "cutouts" / "mgcls-sim-A" / "manifest.parquet")
    assert (manifest["width"] == 256).all() and (manifest["nan_fraction"] == 0).all()
    starts = sorted(manifest["x0"].unique())
    assert len(crops) == len(manifest) and starts[0] == 0
    data = fits.getdata(results / "cutouts" / "mgcls-sim-A" / "fits" / f"{manifest['cutout_id'].iloc[0]}.fits")
    assert data.ndim == 2 and np.isfinite(data).all()
    dataset = SelfSupervisedCrops(results / "ssl" / "crops.parquet")
    image, count = dataset[0]
    assert image.shape == (1, 256, 256) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert count == crops["source_count"].iloc[0]


def test_mirabest_classification_dataset_loads_with_labels_from_the_codes(survey_runs):
    directory = survey_runs / "results" / "mirabest" / "classification"
    dataset = RadioClassification(directory)
    assert len(dataset) == 20
    image, label = dataset[0]
    assert image.shape == (1, 150, 150) and image.dtype == torch.float32 and float(image.max()) == 1.0
    raw = RadioClassification(directory, raw=True)[0][0]
    assert raw.dtype == torch.uint8
    metadata = dataset.metadata
    # the label is the first digit of the MiraBest code in the file name of the field holding the source
    fields = pd.read_csv(REPO / "config" / "fields" / "mirabest.tsv", sep="\t").set_index("field")
    for row in metadata.itertuples():
        code = fields.loc[row.field, "image"].split("/")[-1].split("_")[0]
        assert row.label == int(code[0])
    assert sorted(metadata["label_name"].value_counts().to_dict().items()) == [("FRI", 10), ("FRII", 6),
                                                                                 ("hybrid", 4)]
