"""The batched Gaussian measurement, in the data's real units and on the real SDC1 image."""

import numpy as np
import pytest
from astropy.wcs import WCS
from conftest import SDC1_IMAGE, SDC1_PB, SDC1_TRUTH, sky_header

from radiodet.catalogues import read_catalogue
from radiodet.detector.measure import MeasureConfig, fit_sources
from radiodet.geometry import (
    covariance_from_ellipse,
    deconvolve,
    ellipse_from_covariance,
    pixel_jacobian,
    sky_to_pixel_covariance,
)
from radiodet.images import open_image, robust_rms, sample_image

NOISE = 3.8e-7  # Jy/beam: the SDC1 560 MHz 1000 h rms
BEAM = 1.5      # arcsec FWHM
PIXEL = 0.6     # arcsec


def _scene(sources, *, size=96, noise=NOISE, seed=3):
    """SDC1-like image (Jy/beam) with elliptical Gaussians; returns image, WCS, beam pixel covariance.

    ``sources``: (x, y, integrated flux Jy, intrinsic major, minor FWHM arcsec, PA deg east of north).
    """
    header = sky_header(size, size, cdelt=PIXEL / 3600, beam_arcsec=BEAM)
    wcs = WCS(header)
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.random.default_rng(seed).normal(0, noise, (size, size))
    beam_sky = covariance_from_ellipse(BEAM, BEAM, 0.0)
    jac = pixel_jacobian(wcs, [size / 2], [size / 2])[0]
    beam_pix = sky_to_pixel_covariance(beam_sky, jac)
    for x, y, flux, major, minor, pa in sources:
        cov = sky_to_pixel_covariance(covariance_from_ellipse(major, minor, pa) + beam_sky, jac)
        peak = flux * np.sqrt(np.linalg.det(beam_pix) / np.linalg.det(cov))  # Jy/beam
        d = np.stack([xx - x, yy - y], axis=-1)
        image += peak * np.exp(-0.5 * np.einsum("...i,ij,...j", d, np.linalg.inv(cov), d))
    return image.astype(np.float32), wcs, beam_pix, jac


def _sky_shape(fit, beam_pix, jac):
    own = deconvolve(fit.cov, beam_pix)
    return ellipse_from_covariance(jac @ own @ jac.T)


def test_a_source_at_sdc1_amplitude_is_fitted_not_returned_as_the_start():
    # 20 uJy, 3" x 1.5" at PA 60: a peak of ~8 uJy/beam, SNR ~20 per pixel; started off-centre
    image, _, beam_pix, jac = _scene([(40.3, 43.6, 2e-5, 3.0, 1.5, 60.0)])
    fit = fit_sources(image, [41.0], [43.0], NOISE, beam_pix)
    assert fit.free[0] and fit.converged[0]
    assert (fit.x[0], fit.y[0]) == pytest.approx((40.3, 43.6), abs=0.1)
    assert fit.flux(beam_pix)[0] == pytest.approx(2e-5, rel=0.08)
    major, minor, pa = _sky_shape(fit, beam_pix, jac)
    assert (major[0], minor[0]) == pytest.approx((3.0, 1.5), rel=0.2)
    assert pa[0] == pytest.approx(60.0, abs=8.0)


def test_the_fit_is_the_same_in_jy_mjy_and_counts():
    image, _, beam_pix, _ = _scene([(30.2, 35.7, 5e-5, 2.0, 1.0, 20.0), (60.6, 50.1, 4e-6, 0.0, 0.0, 0.0)])
    results = []
    for factor in (1.0, 1e3, 1e7):
        fit = fit_sources(image * factor, [30, 61], [36, 50], NOISE * factor, beam_pix)
        results.append((fit.x, fit.y, fit.flux(beam_pix) / factor, fit.cov, fit.free))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_faint_sources_keep_the_guessed_shape_and_bright_ones_are_fitted_freely():
    image, _, beam_pix, _ = _scene([(30.0, 30.0, 2.2e-6, 0.5, 0.5, 0.0), (60.0, 60.0, 2e-4, 4.0, 2.0, 45.0)])
    guess = np.zeros((2, 2, 2))
    fit = fit_sources(image, [30.2, 60.2], [29.9, 59.8], NOISE, beam_pix, shape_guess=guess,
                      config=MeasureConfig(free_snr=10.0))
    assert not fit.free[0] and fit.free[1]
    np.testing.assert_allclose(fit.cov[0], beam_pix)  # held at beam + guess
    assert 3 < fit.snr[0] < 9 and fit.snr[1] > 100
    assert abs(fit.x[0] - 30.0) < 1.0 and abs(fit.y[0] - 30.0) < 1.0


def test_close_pairs_share_their_flux_after_deblending():
    # two point sources 3 px (1.2 beam) apart, 20 and 10 uJy
    image, _, beam_pix, _ = _scene([(40.0, 40.0, 2e-5, 0.0, 0.0, 0.0), (43.0, 40.0, 1e-5, 0.0, 0.0, 0.0)],
                                   noise=NOISE / 10)
    # each fitted on its own, both take flux of the other
    alone = np.array([fit_sources(image, [x], [40], NOISE / 10, beam_pix).flux(beam_pix)[0] for x in (40, 43)])
    together = fit_sources(image, [40, 43], [40, 40], NOISE / 10, beam_pix)
    expected = np.array([2e-5, 1e-5])
    error_alone = np.abs(alone / expected - 1)
    error_together = np.abs(together.flux(beam_pix) / expected - 1)
    assert error_together.max() < 0.02 and error_alone.max() > 0.1
    assert together.x == pytest.approx([40, 43], abs=0.02)


def test_sources_on_nan_pixels_and_image_edges_are_measured_where_data_exist():
    image, _, beam_pix, _ = _scene([(2.0, 50.0, 3e-5, 0.0, 0.0, 0.0), (50.0, 50.0, 3e-5, 0.0, 0.0, 0.0)])
    image[:, 52:] = np.nan
    fit = fit_sources(image, [2, 50], [50, 50], NOISE, beam_pix)
    assert np.all(np.isfinite(fit.flux(beam_pix)))
    assert fit.flux(beam_pix) == pytest.approx([3e-5, 3e-5], rel=0.1)


def test_bad_noise_is_refused():
    image, _, beam_pix, _ = _scene([])
    with pytest.raises(ValueError, match="noise"):
        fit_sources(image, [10], [10], 0.0, beam_pix)


# --------------------------------------------------------------------------
# the real bundled image, at the true positions


@pytest.fixture(scope="module")
def sdc1_at_truth():
    """Fits of every truth source with a true SNR >= 3, split into the train and the val region."""
    truth = read_catalogue(SDC1_TRUTH, "sdc1_truth")
    with open_image(SDC1_IMAGE) as image:
        data, wcs, beam = image.read(0, image.shape[0]), image.wcs, image.beam
    rms, median = robust_rms(data)
    x, y = wcs.world_to_pixel_values(truth["ra"].to_numpy(), truth["dec"].to_numpy())
    inside = (x > 3) & (x < data.shape[1] - 4) & (y > 3) & (y < data.shape[0] - 4)
    truth, x, y = truth[inside].reset_index(drop=True), x[inside], y[inside]
    pb = sample_image(SDC1_PB, truth["ra"], truth["dec"])
    snr = truth["flux"].to_numpy() * pb / rms
    keep = snr >= 3
    truth, x, y, pb, snr = truth[keep].reset_index(drop=True), x[keep], y[keep], pb[keep], snr[keep]
    jac = pixel_jacobian(wcs, [520], [480])[0]
    beam_pix = sky_to_pixel_covariance(covariance_from_ellipse(beam.major, beam.minor, beam.pa), jac)
    fit = fit_sources(data, x, y, rms, beam_pix, background=median)
    major, minor, _ = _sky_shape(fit, beam_pix, jac)
    return {"truth": truth, "snr": snr, "flux": fit.flux(beam_pix) / pb, "major": major, "minor": minor,
            "train": (x < 620) & (y < 752), "val": (x < 620) & (y >= 752), "fit": fit}


def test_real_image_fluxes_at_truth_positions(sdc1_at_truth):
    """Median measured / true flux within 5 % at SNR >= 20, after the calibration learned on train.

    The raw ratio is about 0.92 on this image (PyBDSF's is 0.94): the image's
    flux scale differs from the truth catalogue's by that much, which the
    detector corrects with the factor it measures on the training split
    (``radiodet.detector.train.measurement_calibration``). The factor is
    learned on the train region and checked on the val region here.
    """
    r = sdc1_at_truth
    ratio = r["flux"] / r["truth"]["flux"].to_numpy()
    bright = r["snr"] >= 20
    scale = 1.0 / np.median(ratio[bright & r["train"]])
    assert 0.85 < 1 / scale < 1.0  # the image is fainter than the catalogue, not wildly off
    val = bright & r["val"]
    assert val.sum() > 50
    assert np.median(ratio[val] * scale) == pytest.approx(1.0, abs=0.05)
    # and the measurement is not its starting point: fitted positions moved, fluxes are not the peak pixel
    assert np.median(np.abs(r["fit"].x - np.rint(r["fit"].x))) > 0.1


def test_real_image_sizes_of_resolved_sources(sdc1_at_truth):
    """Sizes of resolved sources (true major FWHM >= the 1.5" beam) at SNR >= 20 within 20 % (median)."""
    r = sdc1_at_truth
    truth = r["truth"]
    resolved = (truth["major_fwhm"].to_numpy() >= BEAM) & (r["snr"] >= 20) & (truth["size_class"].to_numpy() == 2)
    assert resolved.sum() > 100
    assert np.median(r["major"][resolved] / truth["major_fwhm"].to_numpy()[resolved]) == pytest.approx(1.0, abs=0.2)
    # minor axes far below the beam are unresolved: a relative error of 0.1" is meaningless there
    wide = resolved & (truth["minor_fwhm"].to_numpy() >= BEAM / 3)
    assert wide.sum() > 100
    assert np.median(r["minor"][wide] / truth["minor_fwhm"].to_numpy()[wide]) == pytest.approx(1.0, abs=0.2)
