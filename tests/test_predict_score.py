"""Prediction tiling and measurement, SDC1 submissions, and scoring helpers."""

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS
from conftest import SDC1_IMAGE, SDC1_TRUTH, sky_header, write_image

from radiodet.catalogues import read_catalogue
from radiodet.catalogues.sdc1 import (
    SUBMISSION_COLUMNS,
    read_submission,
    submission_frame,
    truth_submission,
    write_submission,
)
from radiodet.detector.predict import PredictConfig, measure_detections, tile_cores
from radiodet.score import calibrate_threshold, in_regions, sdc1_score
from radiodet.tiling import axis_starts


def test_tile_cores_partition_the_axis():
    starts = axis_starts(1041, 205, 48)
    cores = tile_cores(starts, 205, 1041)
    assert cores[0][0] == 0 and cores[-1][1] == 1041
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
    assert all(s <= lo and hi <= s + 205 for s, (lo, hi) in zip(starts, cores))


def test_measurement_in_bands_recovers_injected_elliptical_sources(tmp_path):
    """Sources in Jy/beam at SDC1 amplitudes, measured band by band through the image file."""
    from radiodet.geometry import (
        covariance_from_ellipse,
        deconvolve,
        ellipse_from_covariance,
        pixel_jacobian,
    )

    header = sky_header(64, 200, cdelt=0.6 / 3600, beam_arcsec=1.5)
    wcs = WCS(header)
    yy, xx = np.mgrid[0:200, 0:64]
    beam_sky = covariance_from_ellipse(1.5, 1.5, 0.0)
    jac = pixel_jacobian(wcs, [32], [100])[0]
    inv = np.linalg.inv(jac)
    beam_pix = inv @ beam_sky @ inv.T
    data = np.random.default_rng(2).normal(0, 3.8e-7, (200, 64))
    # one source per band of 64 rows, one on a band edge; intrinsic 3" x 1.5" at PA 60 east of north
    sources = [(30.3, 33.6), (20.7, 64.2), (40.1, 150.5)]
    cov = inv @ (covariance_from_ellipse(3.0, 1.5, 60.0) + beam_sky) @ inv.T
    peak = 2e-5
    for x0, y0 in sources:
        d = np.stack([xx - x0, yy - y0], axis=-1)
        data += peak * np.exp(-0.5 * np.einsum("...i,ij,...j", d, np.linalg.inv(cov), d))
    image = write_image(tmp_path / "src.fits", data, header)
    detections = pd.DataFrame({"x": [31.0, 20.0, 40.0], "y": [34.0, 64.0, 151.0], "rms": 3.8e-7, "background": 0.0})
    fits = measure_detections(image, detections, beam_cov=beam_pix, config=PredictConfig(band_rows=64))
    assert fits["converged"].all() and fits["free"].all()
    np.testing.assert_allclose(np.column_stack([fits["x"], fits["y"]]), sources, atol=0.03)
    # integrated flux = peak x (convolved area / beam area)
    flux = fits["amplitude"] * np.sqrt(np.linalg.det(fits["cov"]) / np.linalg.det(beam_pix))
    np.testing.assert_allclose(flux, peak * np.hypot(3.0, 1.5) * np.hypot(1.5, 1.5) / 1.5**2, rtol=0.03)
    major, minor, pa = ellipse_from_covariance(jac @ deconvolve(fits["cov"], beam_pix) @ jac.T)
    np.testing.assert_allclose(major, 3.0, rtol=0.08)
    np.testing.assert_allclose(minor, 1.5, rtol=0.15)
    np.testing.assert_allclose(pa, 60.0, atol=3.0)


def test_submission_round_trip_and_conventions(tmp_path):
    catalogue = pd.DataFrame({"source_id": [1, 2], "ra": [359.5, 0.5], "dec": [-30.0, -29.0],
                              "ra_core": [359.5, 0.5], "dec_core": [-30.0, -29.0], "flux": [1e-5, 2e-5],
                              "major_fwhm": [2.0, 0.0], "minor_fwhm": [1.0, np.nan], "pa": [0.0, 30.0],
                              "class_id": [3, 1]})
    written = write_submission(catalogue, tmp_path / "sub.txt")
    back = read_submission(tmp_path / "sub.txt")
    assert list(back.columns) == SUBMISSION_COLUMNS and len(back) == 2
    # PA east of north 0 (north) is 90 = -90 clockwise from west, written in
    # [-90, 90) as the truth catalogues are; sizes never zero
    assert back["pa"].tolist() == pytest.approx([-90.0, 60.0])
    assert (back["b_min"] > 0).all() and (back["size"] == 2).all()
    pd.testing.assert_frame_equal(written.reset_index(drop=True), back, check_dtype=False)


def test_the_truth_scores_itself_perfectly():
    truth = truth_submission(read_catalogue(SDC1_TRUTH, "sdc1_truth").head(300))
    result = sdc1_score(truth.copy(), truth, freq_mhz=560)
    assert result["n_match"] == result["n_det"] == 300 and result["n_false"] == 0
    assert result["score"] == pytest.approx(300, rel=1e-6)


def test_region_membership_counts_whole_pixels():
    header = sky_header(100, 80)
    wcs = WCS(header)
    ra, dec = wcs.pixel_to_world_values(np.array([39.49, 39.51, 99.4, 50.0]), np.array([10, 10, 10, 79.6]))
    mask = in_regions(ra, dec, [{"x_min": 40}], wcs, (80, 100))
    assert mask.tolist() == [False, True, True, False]


def test_threshold_calibration_prefers_the_clean_cut():
    truth = truth_submission(read_catalogue(SDC1_TRUTH, "sdc1_truth").head(200))
    real = pd.DataFrame({"source_id": truth["id"], "ra": np.mod(truth["ra_cent"], 360), "dec": truth["dec_cent"],
                         "ra_core": np.mod(truth["ra_core"], 360), "dec_core": truth["dec_core"],
                         "flux": truth["flux"], "major_fwhm": truth["b_maj"], "minor_fwhm": truth["b_min"],
                         "pa": 0.0, "class_id": 3, "score": 0.9})
    rng = np.random.default_rng(0)
    fake = real.sample(100, random_state=1).assign(source_id=lambda d: d["source_id"] + 10**9, score=0.2,
                                                   dec=lambda d: d["dec"] + rng.uniform(0.01, 0.02, len(d)),
                                                   dec_core=lambda d: d["dec"])
    threshold, trials = calibrate_threshold(pd.concat([real, fake]), truth, freq_mhz=560)
    assert 0.2 < threshold <= 0.9
    assert len(trials) == 48 and max(t["score"] for t in trials) == pytest.approx(
        sdc1_score(submission_frame(real), truth)["score"])


def test_sdc1_image_and_truth_overlap_in_the_test_region():
    truth = read_catalogue(SDC1_TRUTH, "sdc1_truth")
    from radiodet.images import open_image

    with open_image(SDC1_IMAGE) as image:
        mask = in_regions(truth["ra"], truth["dec"], [{"x_min": 640}], image.wcs, image.shape)
    assert 6500 < mask.sum() < 6600


def test_truth_of_overlapping_fields_counts_each_source_once(tmp_path):
    """Two fields over the same sky list each source twice; the scorer's truth has it once."""
    from radiodet.cutouts import CutoutConfig, make_cutouts
    from radiodet.score import region_truth

    manifest = tmp_path / "m.parquet"
    make_cutouts(SDC1_IMAGE, tmp_path / "fits", manifest, tmp_path / "s.npy", field="a",
                 config=CutoutConfig(size=512))
    truth = read_catalogue(SDC1_TRUTH, "sdc1_truth")
    one = region_truth({"a": truth}, {"a": manifest}, [{"x_min": 640}])
    two = region_truth({"a": truth, "b": truth}, {"a": manifest, "b": manifest}, [{"x_min": 640}])
    assert 6500 < len(one) < 6600 and len(two) == len(one) and two["id"].is_unique


def test_the_submission_pa_range_is_the_truths():
    """The scorer folds PAs without wrapping: the same axis written as 150 or -30 scores differently.

    Written in the range of the truth catalogue's star-forming galaxies, [-90, 90), the truth scores
    1 on PA against itself. (Its AGN, 4 % of the rows, carry PAs in [0, 360) instead.)
    """
    sources = read_catalogue(SDC1_TRUTH, "sdc1_truth")
    sources = sources[(sources["flux"] > 3e-6) & (sources["class_id"] == 3)].head(400)
    truth = truth_submission(sources)
    written = submission_frame(sources)
    assert written["pa"].between(-90, 90).all()
    result = sdc1_score(written, truth, freq_mhz=560)
    assert result["accuracy"]["pa"] > 0.99
    shifted = written.assign(pa=np.mod(written["pa"], 180.0))  # the same axes in [0, 180)
    assert sdc1_score(shifted, truth, freq_mhz=560)["accuracy"]["pa"] < 0.8
