"""The k x rms filter on injected sources of known flux, and box geometry."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.wcs import WCS
from conftest import gaussian_image, sky_header, write_image

from radiodet.boxes import BOX_COLUMNS, clip_boxes, make_boxes, n_sigma_for
from radiodet.cutouts import CutoutConfig, make_cutouts
from radiodet.errors import ConfigError, InputError
from radiodet.filtering import filter_sources
from radiodet.geometry import FWHM_PER_SIGMA
from radiodet.images import sample_image

NOISE = 1e-5  # Jy/beam
BEAM_ARCSEC = 1.5
PIXEL_ARCSEC = 0.6


def _source_table(header, rows):
    """rows: (source_id, x, y, flux Jy, major", minor", pa) -> catalogue frame."""
    wcs = WCS(header)
    frame = pd.DataFrame(rows, columns=["source_id", "x", "y", "flux", "major_fwhm", "minor_fwhm", "pa"])
    ra, dec = wcs.pixel_to_world_values(frame["x"], frame["y"])
    frame["ra"], frame["dec"] = np.mod(ra, 360), dec
    frame["peak_flux"] = np.nan
    frame["local_rms"] = np.nan
    frame["class_id"] = np.int16(3)
    return frame


@pytest.fixture
def injected(tmp_path):
    """Point sources of 10, 4 and 2 sigma (peak = integrated flux) in 1e-5 Jy/beam noise."""
    header = sky_header(200, 200, cdelt=PIXEL_ARCSEC / 3600, beam_arcsec=BEAM_ARCSEC)
    fluxes = {1: 10 * NOISE, 2: 4 * NOISE, 3: 2 * NOISE}
    positions = {1: (50.3, 60.7), 2: (120.0, 40.2), 3: (150.5, 150.5)}
    data = gaussian_image(200, 200, [(*positions[i], fluxes[i]) for i in fluxes], noise=NOISE,
                          beam_px=BEAM_ARCSEC / PIXEL_ARCSEC, seed=7)
    image = write_image(tmp_path / "injected.fits", data, header)
    make_cutouts(image, tmp_path / "fits", tmp_path / "m.parquet", tmp_path / "s.npy", field="inj",
                 config=CutoutConfig(size=200))
    sources = _source_table(header, [(i, *positions[i], fluxes[i], 0.0, 0.0, 0.0) for i in fluxes])
    sources.to_parquet(tmp_path / "src.parquet")
    pairs = pd.DataFrame({"source_id": list(fluxes), "cutout_id": "inj_x00000_y00000", "field": "inj"})
    pairs.to_parquet(tmp_path / "pairs.parquet")
    return tmp_path, header, data


def test_k_sigma_filter_keeps_what_the_image_shows(injected):
    path, header, data = injected
    summary = filter_sources(path / "pairs.parquet", path / "src.parquet", {"inj": path / "m.parquet"},
                             path / "snr.parquet", path / "snr.json", k=3.0)
    snr = pd.read_parquet(path / "snr.parquet").set_index("source_id")
    assert snr.loc[1, "rms"] == pytest.approx(NOISE, rel=0.05)
    np.testing.assert_allclose(snr["snr"], [10, 4, 2], rtol=0.08)
    assert snr["keep"].tolist() == [True, True, False]
    assert summary["pairs_kept"] == 2 and summary["pairs"] == 3
    # what the image itself says at the source: peak pixel / noise
    assert data[61, 50] / NOISE == pytest.approx(snr.loc[1, "snr"], rel=0.15)


def test_primary_beam_attenuates_catalogue_fluxes(injected, tmp_path):
    path, header, _ = injected
    pb = write_image(tmp_path / "pb.fits", np.full((200, 200), 0.5), header)
    filter_sources(path / "pairs.parquet", path / "src.parquet", {"inj": path / "m.parquet"},
                   path / "snr_pb.parquet", path / "snr_pb.json", k=3.0, primary_beams={"inj": pb})
    snr = pd.read_parquet(path / "snr_pb.parquet").set_index("source_id")
    np.testing.assert_allclose(snr["pb"], 0.5)
    np.testing.assert_allclose(snr["snr"], [5, 2, 1], rtol=0.08)
    assert snr["keep"].tolist() == [True, False, False]


def test_integrated_snr_of_a_resolved_source_exceeds_its_peak_snr(tmp_path):
    header = sky_header(100, 100, cdelt=PIXEL_ARCSEC / 3600)
    image = write_image(tmp_path / "i.fits", gaussian_image(100, 100, [], noise=NOISE), header)
    make_cutouts(image, tmp_path / "fits", tmp_path / "m.parquet", tmp_path / "s.npy", field="r",
                 config=CutoutConfig(size=100))
    # a 3" x 1.5" source with 1.5" beam: peak / integrated = 1.5^2 / (sqrt(3^2+1.5^2) * sqrt(1.5^2+1.5^2))
    _source_table(header, [(1, 50, 50, 20 * NOISE, 3.0, 1.5, 45.0)]).to_parquet(tmp_path / "src.parquet")
    pairs = pd.DataFrame({"source_id": [1], "cutout_id": ["r_x00000_y00000"], "field": ["r"]})
    pairs.to_parquet(tmp_path / "p.parquet")
    filter_sources(tmp_path / "p.parquet", tmp_path / "src.parquet", {"r": tmp_path / "m.parquet"},
                   tmp_path / "o.parquet", tmp_path / "o.json", k=3.0, flux="integrated")
    row = pd.read_parquet(tmp_path / "o.parquet").iloc[0]
    ratio = 1.5**2 / (np.hypot(3.0, 1.5) * np.hypot(1.5, 1.5))
    assert row["snr_peak"] / row["snr_integrated"] == pytest.approx(ratio, rel=1e-6)
    assert row["snr"] == row["snr_integrated"]


def test_boxes_centre_on_the_source_plus_half_a_pixel_with_the_analytic_size(tmp_path):
    header = sky_header(100, 100, cdelt=PIXEL_ARCSEC / 3600)
    image = write_image(tmp_path / "b.fits", np.zeros((100, 100)), header)
    make_cutouts(image, tmp_path / "fits", tmp_path / "m.parquet", tmp_path / "s.npy", field="b",
                 config=CutoutConfig(size=50))
    # 6" x 2" at PA 30 deg east of north, in cutout (50, 50)-(100, 100) at its pixel (20.25, 10.75)
    _source_table(header, [(7, 70.25, 60.75, 1e-3, 6.0, 2.0, 30.0),
                           (8, 99.9, 99.9, 1e-3, 0.0, 0.0, 0.0)]).to_parquet(tmp_path / "src.parquet")
    pd.DataFrame({"source_id": [7, 8], "cutout_id": "b_x00050_y00050", "field": "b", "snr": 50.0,
                  "rms": 2e-5, "pb": [1.0, 0.5], "keep": True}).to_parquet(tmp_path / "snr.parquet")
    summary = make_boxes(tmp_path / "snr.parquet", tmp_path / "src.parquet", {"b": tmp_path / "m.parquet"},
                         tmp_path / "boxes.parquet", tmp_path / "boxes.json", extent="sigma", scale=2.5)
    boxes = pd.read_parquet(tmp_path / "boxes.parquet").set_index("source_id")
    box = boxes.loc[7]
    assert (box["x"], box["y"]) == pytest.approx((20.25, 10.75), abs=1e-6)
    assert box["bbox_x"] + box["bbox_w"] / 2 == pytest.approx(20.75, abs=1e-6)
    assert box["bbox_y"] + box["bbox_h"] / 2 == pytest.approx(11.25, abs=1e-6)
    # convolved with the 1.5" beam, in 0.6" pixels; PA 30 deg from north towards east (-x)
    a = np.hypot(6.0, 1.5) / FWHM_PER_SIGMA / PIXEL_ARCSEC
    b = np.hypot(2.0, 1.5) / FWHM_PER_SIGMA / PIXEL_ARCSEC
    s, c = np.sin(np.deg2rad(30)), np.cos(np.deg2rad(30))
    assert box["bbox_w"] == pytest.approx(2 * 2.5 * np.sqrt(a**2 * s**2 + b**2 * c**2), rel=1e-4)
    assert box["bbox_h"] == pytest.approx(2 * 2.5 * np.sqrt(a**2 * c**2 + b**2 * s**2), rel=1e-4)
    # in pixel coordinates the major axis points up and to the left (east = -x);
    # north in pixels turns by ~0.002 deg 20 px from the reference pixel
    # (meridians converge), which the WCS Jacobian follows
    assert box["ellipse_angle"] == pytest.approx(120.0, abs=0.01)
    # the noise and primary-beam response travel with the box (the detector's flux target)
    assert (box["rms"], box["pb"]) == (2e-5, 1.0)
    # source 8 sits at the last pixel's centre: its box is clipped to ~1/4 and dropped
    assert 8 not in boxes.index and summary["dropped_mostly_outside"] == 1


def test_clip_boxes_fractions():
    x0, y0, w, h, frac = clip_boxes(np.array([1.0, 50.0, -10.0]), np.array([50.0, 50.0, 50.0]),
                                    np.array([2.0, 2.0, 2.0]), np.array([2.0, 2.0, 2.0]), 100, 100)
    np.testing.assert_allclose(frac, [0.75, 1.0, 0.0])
    assert (x0[0], w[0]) == (0.0, 3.0)


def test_fwhm_extent_scale():
    assert n_sigma_for("fwhm", 1.0) == pytest.approx(FWHM_PER_SIGMA / 2)
    assert n_sigma_for("sigma", 3.0) == 3.0


def test_sample_image_outside_is_nan(tmp_path):
    header = sky_header(10, 10)
    path = write_image(tmp_path / "m.fits", np.arange(100.0).reshape(10, 10), header)
    ra, dec = WCS(header).pixel_to_world_values([2.0, 50.0], [3.0, 3.0])
    values = sample_image(path, ra, dec)
    assert values[0] == pytest.approx(32.0) and np.isnan(values[1])


def test_sample_image_bilinear_and_nearest(tmp_path):
    header = sky_header(10, 10)
    path = write_image(tmp_path / "m.fits", np.arange(100.0).reshape(10, 10), header)
    ra, dec = WCS(header).pixel_to_world_values([2.5, 9.4, 3.4], [3.5, 0.0, 3.6])
    np.testing.assert_allclose(sample_image(path, ra, dec), [37.5, 9.0, 39.4], atol=1e-6)
    ra, dec = WCS(header).pixel_to_world_values([2.4, 9.4, 3.4], [3.6, 0.0, 3.4])
    np.testing.assert_allclose(sample_image(path, ra, dec, order=0), [42.0, 9.0, 33.0])


def test_segmentation_polygons_lie_on_the_n_sigma_ellipse_and_are_clipped_to_the_image():
    from radiodet.coco import ellipse_polygon, ellipse_polygons

    # FWHM 4 and 2 px at 30 deg from +x towards +y, 2.5 sigma: semi-axes 2.5 * FWHM / 2.3548
    n_sigma, fwhm_to_sigma = 2.5, 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    a, b = 4.0 * fwhm_to_sigma * n_sigma, 2.0 * fwhm_to_sigma * n_sigma
    inside, edge, outside = ellipse_polygons([50.0, 0.5, -40.0], [50.0, 10.0, 10.0], [4.0] * 3, [2.0] * 3,
                                             [30.0] * 3, n_sigma, 100, 100)
    xy = np.asarray(inside).reshape(-1, 2) - 50.0
    angle = np.deg2rad(30.0)
    u = xy[:, 0] * np.cos(angle) + xy[:, 1] * np.sin(angle)
    v = -xy[:, 0] * np.sin(angle) + xy[:, 1] * np.cos(angle)
    assert len(xy) == 24
    np.testing.assert_allclose((u / a) ** 2 + (v / b) ** 2, 1.0, atol=2e-3)  # vertices rounded to 1e-3 px
    cut = np.asarray(edge).reshape(-1, 2)
    assert cut[:, 0].min() == 0.0 and cut[:, 0].max() < 0.5 + a
    assert outside == []
    # the one-ellipse form is the same computation
    assert ellipse_polygon(0.5, 10.0, 4.0, 2.0, 30.0, n_sigma, 100, 100) == edge


def test_stale_pairs_and_duplicate_ids_are_errors_naming_the_file_and_a_missing_noise_is_nan(injected):
    """Pairs joined by row lookups: what the string merges did, with clear errors for inconsistent tables."""
    tmp_path, _, _ = injected
    pd.DataFrame({"source_id": [1, 99], "cutout_id": ["inj_x00000_y00000", "inj_x00000_y00000"], "field": "inj",
                  "snr": 50.0, "rms": 1e-5, "pb": 1.0, "keep": True}).to_parquet(tmp_path / "stale.parquet")
    with pytest.raises(InputError, match=r"src\.parquet: 1 kept pairs of .*stale\.parquet name sources"):
        make_boxes(tmp_path / "stale.parquet", tmp_path / "src.parquet", {"inj": tmp_path / "m.parquet"},
                   tmp_path / "boxes.parquet", tmp_path / "boxes.json")
    assert not (tmp_path / "boxes.parquet").exists()
    sources = pd.read_parquet(tmp_path / "src.parquet")
    pd.concat([sources, sources.iloc[:1]]).to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(InputError, match=r"dup\.parquet: source_id is not unique"):
        filter_sources(tmp_path / "pairs.parquet", tmp_path / "dup.parquet", {"inj": tmp_path / "m.parquet"},
                       tmp_path / "snr.parquet", tmp_path / "snr.json", k=3.0)
    # the filter keeps the pair of a cutout the manifest lacks, with NaN noise: not kept, counted
    pd.DataFrame({"source_id": [1, 2], "cutout_id": ["inj_x00000_y00000", "inj_x09999_y09999"],
                  "field": "inj"}).to_parquet(tmp_path / "gone.parquet")
    summary = filter_sources(tmp_path / "gone.parquet", tmp_path / "src.parquet", {"inj": tmp_path / "m.parquet"},
                             tmp_path / "snr.parquet", tmp_path / "snr.json", k=3.0)
    snr = pd.read_parquet(tmp_path / "snr.parquet")
    assert snr["source_id"].tolist() == [1, 2] and np.isnan(snr["rms"].iloc[1]) and not snr["keep"].iloc[1]
    assert summary["pairs_undefined_snr"] == 1 and snr["keep"].iloc[0]


def test_noise_from_a_map_or_the_catalogue_per_field_with_a_primary_beam_and_distinct_source_counts(tmp_path):
    """noise: auto takes field a's rms map and field b's catalogued Isl_rms; the summary counts each id once.

    Then the boxes of two fields, and of none.
    """
    header = sky_header(100, 100, cdelt=PIXEL_ARCSEC / 3600)
    image = write_image(tmp_path / "i.fits", gaussian_image(100, 100, [], noise=NOISE), header)
    for field in ("a", "b"):
        make_cutouts(image, tmp_path / f"fits_{field}", tmp_path / f"m_{field}.parquet", tmp_path / f"s_{field}.npy",
                     field=field, config=CutoutConfig(size=100))
    rms_map = write_image(tmp_path / "rms.fits", np.full((100, 100), 2 * NOISE), header)
    pb = write_image(tmp_path / "pb.fits", np.full((100, 100), 0.5), header)
    sources = _source_table(header, [(1, 30, 30, 20 * NOISE, 0.0, 0.0, 0.0), (2, 60, 60, 40 * NOISE, 0.0, 0.0, 0.0),
                                     (3, 70, 20, 8 * NOISE, 0.0, 0.0, 0.0)])
    sources["local_rms"] = [4 * NOISE, 4 * NOISE, np.nan]
    sources.to_parquet(tmp_path / "src.parquet")
    # interleaved fields; source 1 in both, source 99 in no catalogue
    pd.DataFrame({"source_id": [1, 1, 2, 3, 99], "field": ["b", "a", "a", "b", "b"],
                  "cutout_id": ["b_x00000_y00000", "a_x00000_y00000", "a_x00000_y00000", "b_x00000_y00000",
                                "b_x00000_y00000"]}).to_parquet(tmp_path / "pairs.parquet")
    summary = filter_sources(tmp_path / "pairs.parquet", tmp_path / "src.parquet",
                             {"a": tmp_path / "m_a.parquet", "b": tmp_path / "m_b.parquet"}, tmp_path / "snr.parquet",
                             tmp_path / "snr.json", k=3.0, noise="auto", rms_maps={"a": rms_map},
                             primary_beams={"a": pb})
    snr = pd.read_parquet(tmp_path / "snr.parquet")
    # field by field in the order of the manifests, each field's pairs in table order
    assert snr["field"].tolist() == ["a", "a", "b", "b", "b"]
    assert snr["cutout_id"].tolist() == ["a_x00000_y00000"] * 2 + ["b_x00000_y00000"] * 3
    assert snr["source_id"].tolist() == [1, 2, 1, 3, 99]
    np.testing.assert_allclose(snr["rms"].iloc[:3], [2 * NOISE, 2 * NOISE, 4 * NOISE])
    assert snr["rms"].iloc[3:].isna().all()
    np.testing.assert_allclose(snr["pb"], [0.5, 0.5, 1.0, 1.0, 1.0])
    # point sources: the model peak is the flux; SNR = pb x flux / rms
    np.testing.assert_allclose(snr["snr"].iloc[:3], [5.0, 10.0, 5.0])
    assert snr["keep"].tolist() == [True, True, True, False, False]
    assert summary["noise_per_field"] == {"a": "map", "b": "catalogue"}
    assert (summary["pairs"], summary["pairs_kept"], summary["pairs_undefined_snr"]) == (5, 3, 2)
    assert (summary["sources"], summary["sources_kept"]) == (4, 2)
    # the boxes name each pair's field, cutout and split (field b's cutout relabelled val)
    manifest_b = pq.read_table(tmp_path / "m_b.parquet")
    manifest_b = manifest_b.set_column(manifest_b.schema.get_field_index("split"), "split",
                                       pa.array(["val"] * manifest_b.num_rows))
    pq.write_table(manifest_b, tmp_path / "m_b.parquet")
    manifests = {"a": tmp_path / "m_a.parquet", "b": tmp_path / "m_b.parquet"}
    box_summary = make_boxes(tmp_path / "snr.parquet", tmp_path / "src.parquet", manifests,
                             tmp_path / "boxes.parquet", tmp_path / "boxes.json")
    boxes = pd.read_parquet(tmp_path / "boxes.parquet")
    assert boxes[["source_id", "field", "cutout_id", "split"]].values.tolist() == [
        [1, "a", "a_x00000_y00000", "train"], [2, "a", "a_x00000_y00000", "train"],
        [1, "b", "b_x00000_y00000", "val"]]
    assert box_summary["per_split"] == {"train": 2, "val": 1}
    # nothing kept: an empty table with every column, typed
    filter_sources(tmp_path / "pairs.parquet", tmp_path / "src.parquet", manifests, tmp_path / "none.parquet",
                   tmp_path / "none.json", k=1e9, noise="auto", rms_maps={"a": rms_map})
    make_boxes(tmp_path / "none.parquet", tmp_path / "src.parquet", manifests, tmp_path / "no_boxes.parquet",
               tmp_path / "no_boxes.json")
    empty = pq.read_table(tmp_path / "no_boxes.parquet")
    assert empty.num_rows == 0 and empty.schema.names == list(BOX_COLUMNS)
    assert empty.schema.field("cutout_id").type == pa.string() and empty.schema.field("class_id").type == pa.int16()
    with pytest.raises(ConfigError, match="field 'b' has no rms_map"):
        filter_sources(tmp_path / "pairs.parquet", tmp_path / "src.parquet",
                       {"a": tmp_path / "m_a.parquet", "b": tmp_path / "m_b.parquet"}, tmp_path / "x.parquet",
                       tmp_path / "x.json", k=3.0, noise="map", rms_maps={"a": rms_map})
    assert not (tmp_path / "x.parquet").exists()
