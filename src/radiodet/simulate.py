"""A simulator of MeerKAT MGCLS-format fields and catalogues with a known truth.

No real MGCLS file is bundled, so tests and the MGCLS demo run on fields made
here, in the format of the MGCLS "enhanced" products:

* a 4-D FITS cube (STOKES, FREQ, y, x) whose first plane is the broadband
  Stokes I image at 1.28 GHz (JY/BEAM, SIN projection, restoring beam in
  BMAJ/BMIN/BPA); the other planes are sub-band images of the same sky;
* primary-beam corrected: the noise grows as 1 / PB(r) away from the
  pointing centre (a Gaussian primary beam of FWHM ``pb_fwhm_deg``) and
  pixels where PB < ``pb_cut`` are NaN (blank corners, as in MGCLS);
* an rms map (2-D FITS) of that noise;
* point sources and extended elliptical Gaussian sources, their fluxes drawn
  from a power law, their sky shapes convolved with the beam through the WCS;
* a compact-source catalogue (FITS table) with the MGCLS-style columns read
  by :func:`radiodet.catalogues.mgcls.read_mgcls` (Source_ID, RA_deg, Dec_deg,
  Stot_mJy, Speak_mJy, smax_asec, smin_asec, spa_deg, rms_mJy, Class,
  Field), plus a Parquet truth table with the 0-based pixel position of
  every source in its field (what tests compare against).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from .atomic import atomic_path
from .configuration import schema_config
from .geometry import (
    covariance_from_ellipse,
    local_offsets,
    pixel_jacobian,
    sky_to_pixel_covariance,
)

__all__ = ["SimulationConfig", "simulate_field", "simulate_fields"]

log = logging.getLogger(__name__)

FREQUENCY_HZ = 1.28e9


@schema_config("simulate", ignore=("activate", "fields", "catalogue"))
class SimulationConfig:
    """Config ``simulate`` without the list of fields (defaults from the schema)."""

    size: int
    pixel_arcsec: float
    beam_arcsec: float
    noise_ujy: float
    pb_fwhm_deg: float
    pb_cut: float
    n_point: int
    n_extended: int
    planes: int = 3  # not a config key: the MGCLS cube layout (Stokes I, frequency, ...)


def _wcs(ra: float, dec: float, config: SimulationConfig) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(config.size + 1) / 2.0, (config.size + 1) / 2.0]  # 1-based: the image centre
    wcs.wcs.cdelt = [-config.pixel_arcsec / 3600.0, config.pixel_arcsec / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    return wcs


def _primary_beam(wcs: WCS, ra0: float, dec0: float, config: SimulationConfig) -> np.ndarray:
    yy, xx = np.mgrid[0:config.size, 0:config.size]
    ra, dec = wcs.pixel_to_world_values(xx.ravel(), yy.ravel())
    east, north = local_offsets(ra0, dec0, ra, dec)
    radius_deg = np.hypot(east, north).reshape(config.size, config.size) / 3600.0
    return np.exp(-4 * np.log(2) * (radius_deg / config.pb_fwhm_deg) ** 2)


def simulate_field(image_path: str | Path, rms_path: str | Path, *, name: str, ra: float, dec: float, seed: int,
                   config: SimulationConfig, id_offset: int = 0) -> pd.DataFrame:
    """Write one field (cube + rms map); return its truth table."""
    rng = np.random.default_rng(seed)
    size = config.size
    wcs = _wcs(ra, dec, config)
    pb = _primary_beam(wcs, ra, dec, config)
    valid = pb >= config.pb_cut
    sigma = config.noise_ujy * 1e-6 / np.where(valid, pb, np.nan)
    # positions: uniform over the valid pixels (continuous, 0-based)
    n = config.n_point + config.n_extended
    valid_idx = np.flatnonzero(valid.ravel())
    picks = rng.choice(valid_idx, size=n, replace=False)
    y = picks // size + rng.uniform(-0.5, 0.5, n)
    x = picks % size + rng.uniform(-0.5, 0.5, n)
    ra_s, dec_s = wcs.pixel_to_world_values(x, y)
    # fluxes: dN/dS ~ S^-1.8 between 10 uJy and 20 mJy
    alpha, s_min, s_max = 1.8, 1e-5, 2e-2
    u = rng.uniform(size=n)
    flux = (s_min ** (1 - alpha) + u * (s_max ** (1 - alpha) - s_min ** (1 - alpha))) ** (1 / (1 - alpha))
    extended = np.arange(n) >= config.n_point
    major = np.where(extended, rng.uniform(10.0, 45.0, n), 0.0)
    minor = np.where(extended, major * rng.uniform(0.3, 1.0, n), 0.0)
    pa = np.where(extended, rng.uniform(0.0, 180.0, n), 0.0)
    beam_cov = covariance_from_ellipse(config.beam_arcsec, config.beam_arcsec, 0.0)
    cov_sky = covariance_from_ellipse(major, minor, pa) + beam_cov
    peak = flux * np.sqrt(np.linalg.det(beam_cov) / np.linalg.det(cov_sky))  # Jy/beam
    cov_pix = sky_to_pixel_covariance(cov_sky, pixel_jacobian(wcs, x, y))
    image = np.zeros((size, size))
    for i in range(n):
        half = int(np.ceil(5 * np.sqrt(max(cov_pix[i, 0, 0], cov_pix[i, 1, 1]))))
        x0, x1 = max(int(x[i]) - half, 0), min(int(x[i]) + half + 1, size)
        y0, y1 = max(int(y[i]) - half, 0), min(int(y[i]) + half + 1, size)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.stack([xx - x[i], yy - y[i]], axis=-1)
        inverse = np.linalg.inv(cov_pix[i])
        image[y0:y1, x0:x1] += peak[i] * np.exp(-0.5 * np.einsum("...i,ij,...j", d, inverse, d))
    noise = rng.normal(0.0, 1.0, (size, size)) * np.nan_to_num(sigma)
    cube = np.empty((1, config.planes, size, size), dtype=np.float32)
    for plane in range(config.planes):
        scale = 1.0 if plane == 0 else (0.9 + 0.1 * plane) ** -0.7
        extra = (0.0 if plane == 0
                 else rng.normal(0.0, 1.0, (size, size)) * np.nan_to_num(sigma) * np.sqrt(config.planes))
        cube[0, plane] = np.where(valid, image * scale + (noise if plane == 0 else extra), np.nan)
    header = wcs.to_header()
    header["CTYPE3"], header["CRVAL3"], header["CRPIX3"], header["CDELT3"], header["CUNIT3"] = (
        "FREQ", FREQUENCY_HZ, 1.0, 5e7, "Hz")
    header["CTYPE4"], header["CRVAL4"], header["CRPIX4"], header["CDELT4"] = "STOKES", 1.0, 1.0, 1.0
    header.update({"BUNIT": "JY/BEAM", "BMAJ": config.beam_arcsec / 3600, "BMIN": config.beam_arcsec / 3600,
                   "BPA": 0.0, "OBJECT": name, "TELESCOP": "MeerKAT (simulated)",
                   "COMMENT": "radiodet.simulate: MGCLS-format simulated field; plane 1 = broadband Stokes I"})
    with atomic_path(image_path) as tmp:
        fits.PrimaryHDU(cube, header=header).writeto(tmp, overwrite=True)
    rms_header = wcs.to_header()
    rms_header.update({"BUNIT": "JY/BEAM", "BMAJ": config.beam_arcsec / 3600, "BMIN": config.beam_arcsec / 3600,
                       "BPA": 0.0})
    with atomic_path(rms_path) as tmp:
        fits.PrimaryHDU(sigma.astype(np.float32), header=rms_header).writeto(tmp, overwrite=True)
    rms_at = sigma[np.clip(np.round(y).astype(int), 0, size - 1), np.clip(np.round(x).astype(int), 0, size - 1)]
    log.info("simulated field %s: %d x %d px, %d sources (%d extended), %.0f%% of pixels NaN", name, size, size, n,
             config.n_extended, 100 * (1 - valid.mean()))
    return pd.DataFrame({
        "Source_ID": id_offset + np.arange(1, n + 1), "RA_deg": np.mod(ra_s, 360.0), "Dec_deg": dec_s,
        "Stot_mJy": flux * 1e3, "Speak_mJy": peak * 1e3, "smax_asec": major, "smin_asec": minor, "spa_deg": pa,
        "rms_mJy": rms_at * 1e3, "Class": np.where(extended, 2, 1), "Field": name, "x": x, "y": y,
    })


def simulate_fields(fields: list[dict], config: SimulationConfig, images: dict[str, str | Path],
                    rms_maps: dict[str, str | Path], catalogue_path: str | Path,
                    truth_path: str | Path) -> pd.DataFrame:
    """Simulate every field and write the joint catalogue (FITS) and truth (Parquet).

    Parameters
    ----------
    fields : list of dict
        One per field: ``name``, centre ``ra`` and ``dec`` (deg), ``seed``.
    config : SimulationConfig
        Image size (pixels), pixel and beam size (arcsec), noise (uJy/beam),
        primary beam FWHM (deg) and cut, source counts.
    images, rms_maps : dict of str to str or Path
        Field name -> the MGCLS-format cube and its rms map written (FITS, Jy/beam).
    catalogue_path : str or Path
        The joint catalogue in the MGCLS columns (FITS table with units:
        mJy, arcsec, deg).
    truth_path : str or Path
        The same sources with their 0-based pixel positions (Parquet).

    Returns
    -------
    pandas.DataFrame
        The truth table.
    """
    tables = []
    for index, spec in enumerate(fields):
        name = spec["name"]
        tables.append(simulate_field(images[name], rms_maps[name], name=name, ra=spec["ra"], dec=spec["dec"],
                                     seed=spec["seed"], config=config, id_offset=(index + 1) * 1_000_000))
    truth = pd.concat(tables, ignore_index=True)
    table = Table.from_pandas(truth.drop(columns=["x", "y"]))
    units = {"RA_deg": "deg", "Dec_deg": "deg", "Stot_mJy": "mJy", "Speak_mJy": "mJy/beam", "smax_asec": "arcsec",
             "smin_asec": "arcsec", "spa_deg": "deg", "rms_mJy": "mJy/beam"}
    for column, unit in units.items():
        table[column].unit = unit
    with atomic_path(catalogue_path) as tmp:
        table.write(tmp, format="fits", overwrite=True)
    with atomic_path(truth_path) as tmp:
        truth.to_parquet(tmp, index=False)
    return truth
