"""Shared fixtures: synthetic images with known answers, the bundled data, PostGIS."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
SDC1 = REPO / "resources" / "sdc1"
SDC1_IMAGE = SDC1 / "B1_1000h_0.3tr.fits"
SDC1_TRUTH = SDC1 / "truth_B1_0.3tr.cat"
SDC1_PB = SDC1 / "PrimaryBeam_B1.fits"
SDC1_PYBDSF = SDC1 / "B1_1000h_0.3tr.pybdsm.srl"

PIXEL_DEG = 0.6 / 3600.0  # 0.6 arcsec pixels


def sky_header(nx: int, ny: int, *, ra0: float = 0.0, dec0: float = -30.0, crpix=None, cdelt: float = PIXEL_DEG,
               four_d: bool = False, beam_arcsec: float | None = 1.5, proj: str = "SIN") -> fits.Header:
    """Header of a north-up, east-left image (CDELT1 < 0) centred on (ra0, dec0).

    ``crpix`` is 1-based FITS (default: the image centre). ``four_d`` adds
    FREQ and STOKES axes like the SDC1 images.
    """
    header = fits.Header()
    naxis = 4 if four_d else 2
    header["NAXIS"] = naxis
    header["NAXIS1"], header["NAXIS2"] = nx, ny
    cx, cy = crpix if crpix is not None else ((nx + 1) / 2.0, (ny + 1) / 2.0)
    header.update({"CTYPE1": f"RA---{proj}", "CRVAL1": ra0, "CRPIX1": cx, "CDELT1": -cdelt, "CUNIT1": "deg",
                   "CTYPE2": f"DEC--{proj}", "CRVAL2": dec0, "CRPIX2": cy, "CDELT2": cdelt, "CUNIT2": "deg",
                   "BUNIT": "JY/BEAM", "RADESYS": "ICRS"})
    if four_d:
        header.update({"NAXIS3": 1, "CTYPE3": "FREQ", "CRVAL3": 5.6e8, "CRPIX3": 1.0, "CDELT3": 1.68e8,
                       "NAXIS4": 1, "CTYPE4": "STOKES", "CRVAL4": 1.0, "CRPIX4": 1.0, "CDELT4": 1.0})
    if beam_arcsec:
        header.update({"BMAJ": beam_arcsec / 3600.0, "BMIN": beam_arcsec / 3600.0, "BPA": 0.0})
    return header


def write_image(path: Path, data: np.ndarray, header: fits.Header) -> Path:
    """Write ``data`` (2-D, y by x) with ``header``; 4-D headers get a 4-D array."""
    data = np.asarray(data, dtype=np.float32)
    if header["NAXIS"] == 4:
        data = data[np.newaxis, np.newaxis]
    hdu = fits.PrimaryHDU(data=data)
    for key, value in header.items():
        if key not in ("NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "NAXIS4", "BITPIX", "SIMPLE"):
            hdu.header[key] = value
    hdu.writeto(path, overwrite=True)
    return path


def gaussian_image(nx: int, ny: int, sources, *, noise: float = 0.0, seed: int = 1, beam_px: float = 2.5) -> np.ndarray:
    """Noise plus point sources convolved with a circular beam of FWHM ``beam_px``.

    ``sources``: iterable of (x, y, peak) in 0-based pixels / Jy/beam.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = rng.normal(0.0, noise, size=(ny, nx)) if noise else np.zeros((ny, nx))
    sigma = beam_px / (2 * np.sqrt(2 * np.log(2)))
    for x, y, peak in sources:
        image += peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return image.astype(np.float32)


def resident_pages(path) -> int:
    """How many pages of ``path`` are in the page cache (``mincore`` on a mapping that touches none).

    Skips the calling test where the mapping or ``mincore`` is not available.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = os.path.getsize(path)
    pages = -(-size // mmap.PAGESIZE)
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            pytest.skip(f"mmap failed: {os.strerror(ctypes.get_errno())}")
        try:
            vector = ctypes.create_string_buffer(pages)
            if libc.mincore(address, size, vector) != 0:
                pytest.skip(f"mincore failed: {os.strerror(ctypes.get_errno())}")
            return sum(byte & 1 for byte in vector.raw)
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)


def _postgis_available() -> bool:
    return any(Path("/usr/share/postgresql").glob("*/extension/postgis.control")) or bool(shutil.which("pg_ctl"))


def world_readable_tmpdir(prefix: str) -> Path:
    """A temporary directory the ``postgres`` user can traverse (for root runs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="session")
def postgis_url():
    """SQLAlchemy URL of a real PostGIS: a private server started for the session.

    Without PostgreSQL/PostGIS binaries the tests that need it are skipped,
    unless RADIODET_REQUIRE_POSTGIS=1 (set by `make test`), where they fail.
    """
    if not _postgis_available():
        message = "PostgreSQL + PostGIS binaries not installed (make setup installs them)"
        if os.environ.get("RADIODET_REQUIRE_POSTGIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from radiodet.db import private_server

    base = world_readable_tmpdir("radiodet-pg-")
    try:
        with private_server(base / "postgis") as url:
            yield url
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def engine(postgis_url):
    from radiodet.db import engine_for

    eng = engine_for(postgis_url)
    yield eng
    eng.dispose()


def pytest_collection_modifyitems(config, items):
    """Run the SLURM test last: while its daemons run (or were killed with their
    configuration left behind), every Snakemake start waits on the SLURM
    executor plugin's scontrol probe."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)
