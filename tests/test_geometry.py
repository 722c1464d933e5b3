"""Ellipse geometry: covariances, the WCS Jacobian, box envelopes."""

import numpy as np
import pytest
from astropy.wcs import WCS
from conftest import sky_header

from radiodet.geometry import (
    FWHM_PER_SIGMA,
    covariance_from_ellipse,
    ellipse_from_covariance,
    envelope_half_widths,
    local_offsets,
    normalise_ra,
    peak_to_integrated,
    pixel_jacobian,
    sky_to_pixel_covariance,
    wrap_ra_difference,
)


def test_normalise_ra_wraps_negative_and_360():
    np.testing.assert_allclose(normalise_ra([-0.41, 0.0, 359.999, 360.0, 725.5, -1e-17]),
                               [359.59, 0.0, 359.999, 0.0, 5.5, 0.0])
    np.testing.assert_allclose(wrap_ra_difference([359.9 - 0.1, 0.1 - 359.9]), [-0.2, 0.2], atol=1e-12)


def test_covariance_round_trip():
    major, minor, pa = ellipse_from_covariance(covariance_from_ellipse(5.0, 2.0, 30.0))
    assert (major, minor, pa) == pytest.approx((5.0, 2.0, 30.0))
    # PA 100 and PA -80 are the same axis
    assert ellipse_from_covariance(covariance_from_ellipse(5.0, 2.0, -80.0))[2] == pytest.approx(100.0)


def test_pa_zero_is_north_and_90_is_east():
    north = covariance_from_ellipse(4.0, 1.0, 0.0)
    east = covariance_from_ellipse(4.0, 1.0, 90.0)
    assert north[1, 1] > north[0, 0]  # long along north (second basis vector)
    assert east[0, 0] > east[1, 1]


def test_local_offsets_across_ra_zero():
    east, north = local_offsets(359.999, -30.0, 0.001, -30.0)
    assert east == pytest.approx(0.002 * 3600 * np.cos(np.deg2rad(30.0)), rel=1e-6)
    assert north == pytest.approx(0.0, abs=1e-3)


def test_jacobian_of_a_north_up_east_left_image():
    wcs = WCS(sky_header(100, 100))
    jac = pixel_jacobian(wcs, [50.0], [50.0])[0]
    # +x is west (east offset negative), +y is north; 0.6 arcsec pixels
    np.testing.assert_allclose(jac, [[-0.6, 0.0], [0.0, 0.6]], atol=1e-6)


def test_box_of_a_known_rotated_ellipse():
    """A 10 x 4 arcsec FWHM ellipse at PA 30 deg, 1 arcsec pixels, north up, east left.

    In pixels the major axis points 30 deg from +y towards -x (east is -x).
    The 2.5-sigma envelope half-widths are
    hx = n sqrt(a^2 sin^2 30 + b^2 cos^2 30), hy = n sqrt(a^2 cos^2 30 + b^2 sin^2 30)
    with a, b the sigmas in pixels.
    """
    wcs = WCS(sky_header(201, 201, cdelt=1 / 3600, dec0=0.0))
    cov_pix = sky_to_pixel_covariance(covariance_from_ellipse(10.0, 4.0, 30.0), pixel_jacobian(wcs, [100.0], [100.0]))
    a, b, n = 10.0 / FWHM_PER_SIGMA, 4.0 / FWHM_PER_SIGMA, 2.5
    s, c = np.sin(np.deg2rad(30)), np.cos(np.deg2rad(30))
    hx, hy = envelope_half_widths(cov_pix, n)
    assert hx[0] == pytest.approx(n * np.sqrt(a**2 * s**2 + b**2 * c**2), rel=1e-5)
    assert hy[0] == pytest.approx(n * np.sqrt(a**2 * c**2 + b**2 * s**2), rel=1e-5)
    # the tilt: x and y anti-correlated (major axis towards -x as y grows)
    assert cov_pix[0, 0, 1] < 0


def test_peak_to_integrated_is_one_for_a_point_source_and_area_ratio_otherwise():
    beam = covariance_from_ellipse(1.5, 1.5, 0.0)
    assert peak_to_integrated(beam, beam) == pytest.approx(1.0)
    source = covariance_from_ellipse(2.0, 1.0, 40.0) + beam
    # Gaussian: peak / integrated = beam area / convolved area = (1.5 * 1.5) / (maj * min)
    maj, mnr, _ = ellipse_from_covariance(source)
    assert peak_to_integrated(source, beam) == pytest.approx(1.5 * 1.5 / (maj * mnr))


def test_deconvolve_recovers_the_intrinsic_shape_and_clips_unresolved_axes():
    from radiodet.geometry import deconvolve

    beam = covariance_from_ellipse(6.0, 6.0, 0.0)
    intrinsic = covariance_from_ellipse(8.0, 3.0, 35.0)
    np.testing.assert_allclose(deconvolve(intrinsic + beam, beam), intrinsic, atol=1e-9)
    # measured narrower than the beam along the minor axis: unresolved there (FWHM 0), not imaginary
    major, minor, pa = ellipse_from_covariance(deconvolve(covariance_from_ellipse(10.0, 5.0, 20.0), beam))
    assert (major, minor, pa) == pytest.approx((8.0, 0.0, 20.0), abs=1e-6)


def test_preview_compass_follows_the_wcs_north_up_and_at_the_south_pole():
    """The compass drawn on previews: north/east from the WCS, also where north is not up."""
    from astropy.io import fits
    from astropy.wcs import WCS
    from conftest import REPO, sky_header

    from radiodet.preview import sky_directions

    north, east = sky_directions(WCS(sky_header(100, 100)), 50.0, 50.0)
    np.testing.assert_allclose(north, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(east, [-1.0, 0.0], atol=1e-6)
    # HIPASS: SIN about the south pole, the pole at 0-based pixel (CRPIX1 - 1, CRPIX2 - 1) off the image;
    # meridians run radially from it, so north points straight away from the pole
    header = fits.getheader(REPO / "resources" / "hipass" / "1904-66_SIN.fits")
    pole = np.array([header["CRPIX1"] - 1, header["CRPIX2"] - 1])
    for x, y in ((20.0, 20.0), (96.0, 96.0), (170.0, 150.0)):
        north, east = sky_directions(WCS(header).celestial, x, y)
        away = (np.array([x, y]) - pole) / np.hypot(*(np.array([x, y]) - pole))
        assert north @ away > 0.9999
        # not mirrored: east is north turned 90 degrees counter-clockwise, as on a north-up image
        np.testing.assert_allclose(east, [-north[1], north[0]], atol=1e-4)
