"""The classical baseline: PyBDSF on the same image, in the same catalogue formats.

PyBDSF runs on a symlink of the image inside a scratch directory (it writes
its log next to its input), with the restoring beam and frequency passed
explicitly from the header (PyBDSF 1.14 does not find the beam in the SDC1
headers by itself). Its source list becomes the schema's Parquet (sizes: the
deconvolved DC_Maj/DC_Min, PA east of north) and the SDC1 submission format,
with fluxes divided by the primary-beam response when one is configured and
every source given ``class_id`` (SDC1: 3, SFG, the commonest class).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .catalogues.pybdsf import read_pybdsf_srl
from .catalogues.sdc1 import write_submission
from .images import open_image, sample_image
from .schema import SOURCE_COLUMNS, write_parquet

__all__ = ["run_pybdsf"]

log = logging.getLogger(__name__)


def run_pybdsf(image_path: str | Path, srl_path: str | Path, output: str | Path, submission: str | Path,
               summary_path: str | Path, *, class_id: int = 3, primary_beam: str | Path | None = None,
               thresh_isl: float = 3.0, thresh_pix: float = 5.0, ncores: int = 1) -> dict:
    """Run PyBDSF with the given thresholds and write its catalogue three ways.

    Parameters
    ----------
    image_path : str or Path
        The FITS image (Jy/beam, with BMAJ/BMIN/BPA).
    srl_path : str or Path
        PyBDSF's own source list, as it writes it (ASCII ``srl``).
    output : str or Path
        The catalogue in the source schema (Parquet; fluxes in Jy divided by
        the primary beam at each source, deconvolved sizes FWHM in arcsec, PA
        in degrees east of north).
    submission : str or Path
        The same catalogue as an SDC1 submission (the scorer's columns).
    summary_path : str or Path
        JSON: source count, seconds, thresholds.
    class_id : int
        Class code given to every source (PyBDSF does not classify; SFG = 3 in SDC1).
    primary_beam : str or Path, optional
        Primary-beam image; without it the fluxes are left as measured.
    thresh_isl, thresh_pix : float
        PyBDSF's island and peak thresholds, in units of the local rms.
    ncores : int
        Processes PyBDSF may use.

    Returns
    -------
    dict
        The summary written to ``summary_path``.
    """
    import bdsf

    image_path = Path(image_path).resolve()
    with open_image(image_path) as image:
        if image.beam is None:
            raise ValueError(f"{image_path}: no restoring beam in the header")
        beam = (image.beam.major / 3600.0, image.beam.minor / 3600.0, image.beam.pa)
        frequency = image.frequency_hz
    scratch = Path(tempfile.mkdtemp(prefix="pybdsf-"))
    started = time.monotonic()
    try:
        link = scratch / image_path.name
        os.symlink(image_path, link)
        options = {"beam": beam, "thresh_isl": thresh_isl, "thresh_pix": thresh_pix, "quiet": True,
                   "ncores": ncores}
        if frequency:
            options["frequency"] = frequency
        log.info("PyBDSF on %s with %s", image_path, options)
        result = bdsf.process_image(str(link), **options)
        raw = scratch / "sources.srl"
        result.write_catalog(outfile=str(raw), format="ascii", catalog_type="srl", clobber=True)
        with atomic_path(srl_path) as tmp:
            shutil.copyfile(raw, tmp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.monotonic() - started
    catalogue = read_pybdsf_srl(srl_path)
    pb = sample_image(primary_beam, catalogue["ra"], catalogue["dec"]) if primary_beam else np.ones(len(catalogue))
    catalogue["flux"] = catalogue["flux"] / pb
    catalogue["peak_flux"] = catalogue["peak_flux"] / pb
    catalogue["class_id"] = np.int16(class_id)
    catalogue["pb"] = pb
    write_parquet(catalogue, output, columns=SOURCE_COLUMNS, metadata={"image": str(image_path), **{
        k: v for k, v in options.items() if k != "quiet"}})
    write_submission(catalogue, submission)
    summary = {"sources": int(len(catalogue)), "seconds": round(seconds, 1), "thresh_isl": thresh_isl,
               "thresh_pix": thresh_pix}
    write_json(summary_path, summary)
    log.info("PyBDSF: %d sources in %.1f s", len(catalogue), seconds)
    return summary
