"""Sky and pixel geometry of elliptical Gaussian sources.

Conventions
-----------
* Sky offsets are in arcsec in the local (east, north) basis at the source.
* Position angles (PA) are degrees **east of north**: 0 = major axis along
  north, 90 = along east.
* Pixel coordinates are 0-based FITS array coordinates ``(x, y)`` = (column,
  row) as returned by :meth:`astropy.wcs.WCS.world_to_pixel_values`.
* A source shape is a 2 x 2 covariance matrix (the second moments of a
  Gaussian); convolution with a beam is the sum of the two matrices, and a
  linear change of coordinates ``J`` maps ``C`` to ``J C J^T``. Working with
  matrices keeps axis flips (RA increasing to the left), pixel skew and
  projection distortion exact, with no sign conventions to get wrong.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FWHM_PER_SIGMA",
    "normalise_ra",
    "wrap_ra_difference",
    "covariance_from_ellipse",
    "ellipse_from_covariance",
    "pixel_covariance",
    "pixel_ellipse",
    "local_offsets",
    "pixel_jacobian",
    "sky_to_pixel_covariance",
    "deconvolve",
    "envelope_half_widths",
    "peak_to_integrated",
]

#: Gaussian FWHM / sigma = 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def normalise_ra(ra_deg):
    """Return RA folded into [0, 360) degrees (-0.41 -> 359.59)."""
    ra = np.mod(np.asarray(ra_deg, dtype=float), 360.0)
    # np.mod(-1e-17, 360) == 360.0 in floating point: fold that back to 0.
    return np.where(ra >= 360.0, 0.0, ra)


def wrap_ra_difference(delta_deg):
    """Fold an RA difference into [-180, 180) degrees."""
    return np.mod(np.asarray(delta_deg, dtype=float) + 180.0, 360.0) - 180.0


def covariance_from_ellipse(major_fwhm, minor_fwhm, pa_deg):
    """Covariance matrices (..., 2, 2) of Gaussians in the (east, north) basis.

    Parameters
    ----------
    major_fwhm, minor_fwhm : array_like
        Full widths at half maximum along the major and minor axes (any
        angular unit; the result is in that unit squared).
    pa_deg : array_like
        Position angle of the major axis, degrees east of north.
    """
    major = np.asarray(major_fwhm, dtype=float) / FWHM_PER_SIGMA
    minor = np.asarray(minor_fwhm, dtype=float) / FWHM_PER_SIGMA
    theta = np.deg2rad(np.asarray(pa_deg, dtype=float))
    s, c = np.sin(theta), np.cos(theta)
    # major axis unit vector (east, north) = (sin PA, cos PA);
    # minor axis unit vector = (cos PA, -sin PA).
    ee = major**2 * s * s + minor**2 * c * c
    nn = major**2 * c * c + minor**2 * s * s
    en = (major**2 - minor**2) * s * c
    cov = np.empty(np.broadcast(ee, nn, en).shape + (2, 2))
    cov[..., 0, 0] = ee
    cov[..., 1, 1] = nn
    cov[..., 0, 1] = cov[..., 1, 0] = en
    return cov


def ellipse_from_covariance(cov):
    """Inverse of :func:`covariance_from_ellipse`.

    Returns ``(major_fwhm, minor_fwhm, pa_deg)`` with PA east of north in
    [0, 180). For a covariance in a pixel basis (x, y) the returned "PA" is the
    angle from +y towards +x.
    """
    cov = np.asarray(cov, dtype=float)
    a, b, d = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    half_trace = 0.5 * (a + d)
    root = np.sqrt(np.maximum(0.25 * (a - d) ** 2 + b * b, 0.0))
    major = np.sqrt(np.maximum(half_trace + root, 0.0)) * FWHM_PER_SIGMA
    minor = np.sqrt(np.maximum(half_trace - root, 0.0)) * FWHM_PER_SIGMA
    # direction of the major axis: angle from the second basis vector towards
    # the first one.
    pa = 0.5 * np.degrees(np.arctan2(2.0 * b, d - a))
    return major, minor, np.mod(pa, 180.0)


def pixel_covariance(major_fwhm, minor_fwhm, angle_deg):
    """Covariance matrices (..., 2, 2) in the pixel basis (x, y).

    ``angle_deg`` is the major axis' angle from +x towards +y (the pixel-frame
    convention of the boxes, COCO annotations and the detector); FWHM in
    pixels give a covariance in pixels^2.
    """
    return covariance_from_ellipse(major_fwhm, minor_fwhm, 90.0 - np.asarray(angle_deg, dtype=float))


def pixel_ellipse(cov):
    """Inverse of :func:`pixel_covariance`: ``(major_fwhm, minor_fwhm, angle_deg)``, angle in [0, 180)."""
    major, minor, from_y = ellipse_from_covariance(cov)
    return major, minor, np.mod(90.0 - from_y, 180.0)


def local_offsets(ra0_deg, dec0_deg, ra1_deg, dec1_deg):
    """Offsets (east, north) in arcsec of position 1 seen from position 0.

    Exact tangent-plane (gnomonic) offsets, valid across RA = 0/360 and near
    the poles, for positions less than 90 degrees apart: great circles map to
    straight lines, so a sky polygon with great-circle edges maps to the
    plane polygon of its projected vertices.
    """
    ra0, dec0, ra1, dec1 = (np.deg2rad(np.asarray(v, dtype=float)) for v in (ra0_deg, dec0_deg, ra1_deg, dec1_deg))
    dra = ra1 - ra0
    cos_c = np.sin(dec0) * np.sin(dec1) + np.cos(dec0) * np.cos(dec1) * np.cos(dra)
    east = np.cos(dec1) * np.sin(dra) / cos_c
    north = (np.cos(dec0) * np.sin(dec1) - np.sin(dec0) * np.cos(dec1) * np.cos(dra)) / cos_c
    return np.rad2deg(east) * 3600.0, np.rad2deg(north) * 3600.0


def pixel_jacobian(wcs, x, y, *, step: float = 0.5):
    """Local Jacobian d(east, north)/d(x, y) in arcsec per pixel, shape (N, 2, 2).

    Central differences of the celestial ``wcs`` at 0-based pixel positions
    ``(x, y)``. Column 0 is the sky offset of a +1 step in x, column 1 of a +1
    step in y.
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    ra, dec = wcs.pixel_to_world_values(x, y)
    jac = np.empty(x.shape + (2, 2))
    for col, (dx, dy) in enumerate(((step, 0.0), (0.0, step))):
        ra_p, dec_p = wcs.pixel_to_world_values(x + dx, y + dy)
        ra_m, dec_m = wcs.pixel_to_world_values(x - dx, y - dy)
        e_p, n_p = local_offsets(ra, dec, ra_p, dec_p)
        e_m, n_m = local_offsets(ra, dec, ra_m, dec_m)
        jac[..., 0, col] = (e_p - e_m) / (2 * step)
        jac[..., 1, col] = (n_p - n_m) / (2 * step)
    return jac


def sky_to_pixel_covariance(cov_sky, jacobian):
    """Map (east, north) covariances to pixel covariances: ``J^-1 C J^-T``."""
    inv = np.linalg.inv(jacobian)
    return inv @ cov_sky @ np.swapaxes(inv, -1, -2)


def deconvolve(cov, cov_beam):
    """Intrinsic covariance: ``cov - cov_beam`` with negative eigenvalues set to 0.

    A source measured (or catalogued) narrower than the beam along some axis
    is unresolved along it: its intrinsic width there is 0, not imaginary.
    Works on (..., 2, 2) stacks.
    """
    values, vectors = np.linalg.eigh(np.asarray(cov, dtype=float) - cov_beam)
    return vectors @ (np.clip(values, 0, None)[..., None] * np.swapaxes(vectors, -1, -2))


def envelope_half_widths(cov_pix, n_sigma):
    """Half-widths (hx, hy) of the axis-aligned box around the n-sigma ellipse.

    The ellipse ``{d : d^T C^-1 d <= n^2}`` has extreme x at ``n sqrt(C_xx)``
    and extreme y at ``n sqrt(C_yy)``.
    """
    cov_pix = np.asarray(cov_pix, dtype=float)
    return n_sigma * np.sqrt(cov_pix[..., 0, 0]), n_sigma * np.sqrt(cov_pix[..., 1, 1])


def peak_to_integrated(cov_source_plus_beam, cov_beam):
    """Peak brightness (per beam) over integrated flux of a Gaussian source.

    For a Gaussian of integrated flux S observed with a Gaussian beam, the
    peak in flux per beam is ``S * sqrt(det B / det(C + B))``; both matrices
    in the same basis. 1 for a point source.
    """
    return np.sqrt(np.linalg.det(cov_beam) / np.linalg.det(cov_source_plus_beam))
