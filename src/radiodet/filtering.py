"""Local noise, primary-beam attenuation, signal-to-noise and the k x rms cut.

For every (source, cutout) pair of the spatial index:

* ``rms`` (image unit, Jy/beam): the cutout's robust noise (1.4826 x MAD of
  its finite pixels, from the cutout stage; ``noise: mad``), the field's rms
  map sampled at the source (nearest pixel; ``noise: map``), or the
  catalogue's own local noise (PyBDSF Isl_rms; ``noise: catalogue``);
  ``noise: auto`` takes the map where the field has one, else the
  catalogue's value where known, else the MAD;
* ``pb``: the primary-beam response at the source (bilinear in the primary
  beam image; 1 when no primary beam is configured). Catalogue fluxes are
  true sky fluxes, the image shows ``apparent = true x pb``;
* ``peak_model`` (Jy/beam): the catalogued peak when the catalogue has one,
  else the peak of the source's Gaussian model convolved with the restoring
  beam, ``flux x sqrt(det B / det(C + B))`` (:func:`radiodet.geometry.peak_to_integrated`);
* ``snr_peak = pb x peak_model / rms`` and ``snr_integrated = pb x flux / rms``;
  ``snr`` is the one chosen by ``filter.flux`` and ``keep = snr >= k``.

Every pair is written, kept or not, so the choice of k can be studied later
without rerunning anything. Pairs whose rms or pb is undefined (NaN in the rms
map, outside the primary beam image) are not kept and are counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .atomic import write_json
from .errors import ConfigError
from .geometry import covariance_from_ellipse, peak_to_integrated
from .images import sample_image
from .manifest import field_beam
from .schema import (
    decoded_strings,
    field_pairs,
    fields_end_to_end,
    key_index,
    read_frame,
    read_pairs,
    read_sources,
    take_or_nan,
    write_parquet,
)

__all__ = ["FILTER_COLUMNS", "filter_sources"]

log = logging.getLogger(__name__)

FILTER_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "source_id": (pa.int64(), "", "source id"),
    "cutout_id": (pa.string(), "", "cutout id"),
    "field": (pa.string(), "", "field"),
    "rms": (pa.float64(), "Jy/beam", "local noise (image unit)"),
    "pb": (pa.float64(), "", "primary-beam response at the source (1 without a primary beam)"),
    "peak_model": (pa.float64(), "Jy/beam", "catalogued peak, or Gaussian model peak (true sky)"),
    "snr_peak": (pa.float64(), "", "pb x peak_model / rms"),
    "snr_integrated": (pa.float64(), "", "pb x flux / rms"),
    "snr": (pa.float64(), "", "the SNR the cut uses (filter.flux)"),
    "keep": (pa.bool_(), "", "snr >= k"),
}


def filter_sources(assignments_path: str | Path, sources_path: str | Path, manifest_paths: dict[str, str | Path],
                   output: str | Path, summary_path: str | Path, *, k: float, flux: str = "peak",
                   noise: str = "mad", rms_maps: dict[str, str | Path] | None = None,
                   primary_beams: dict[str, str | Path] | None = None) -> dict:
    """Compute SNR for every (source, cutout) pair and apply the k x rms cut.

    Parameters
    ----------
    assignments_path, sources_path : str or Path
        The index stage's pairs and the ingested catalogue.
    manifest_paths : dict
        {field: manifest} (the field's WCS, beam and cutout noise).
    output, summary_path : str or Path
        Every pair with its rms (image unit, Jy/beam), primary-beam response,
        SNRs and keep flag (Parquet, :data:`FILTER_COLUMNS`), and a JSON summary.
    k : float
        Keep pairs with ``snr >= k``.
    flux : {"peak", "integrated"}
        Which SNR the cut uses: ``pb x peak / rms`` or ``pb x flux / rms``.
    noise : {"mad", "map", "catalogue", "auto"}
        Where the rms comes from (see the module docstring).
    rms_maps, primary_beams : dict, optional
        {field: FITS path}.

    Returns
    -------
    dict
        The summary written to ``summary_path`` (pairs, kept, noise source).
    """
    if flux not in ("peak", "integrated"):
        raise ConfigError(f"filter.flux must be 'peak' or 'integrated', got {flux!r}")
    if noise not in ("mad", "map", "catalogue", "auto"):
        raise ConfigError(f"filter.noise must be mad, map, catalogue or auto, got {noise!r}")
    pairs = read_pairs(assignments_path)
    # the source columns this run uses: positions only to sample an rms map or a primary beam,
    # the catalogue's local rms only where it may be the noise
    maps_used = bool(primary_beams) or (noise in ("map", "auto") and bool(rms_maps))
    source_columns = ["flux", "peak_flux", "major_fwhm", "minor_fwhm", "pa",
                      *(["ra", "dec"] if maps_used else []), *(["local_rms"] if noise in ("catalogue", "auto") else [])]
    sources = read_sources(sources_path, columns=["source_id", *source_columns])
    source_rows = key_index(sources["source_id"], path=sources_path, column="source_id")
    parts: list[dict[str, np.ndarray]] = []
    noise_used: dict[str, str] = {}
    for number, (field, manifest_path) in enumerate(manifest_paths.items()):
        manifest = read_frame(manifest_path, ["cutout_id", "rms_mad"])
        # left joins, row order kept: a source or cutout the tables lack gets NaN
        joined = field_pairs(pairs, field, source_rows, manifest["cutout_id"], manifest_path=manifest_path)
        of_source = {name: take_or_nan(sources[name], joined.of_source) for name in source_columns}
        rms_map = (rms_maps or {}).get(field)
        source = noise
        if noise == "auto":
            source = "map" if rms_map else ("catalogue" if np.isfinite(of_source["local_rms"]).any() else "mad")
        if source == "map":
            if not rms_map:
                raise ConfigError(f"filter.noise is 'map' but field {field!r} has no rms_map in the field table")
            rms = sample_image(rms_map, of_source["ra"], of_source["dec"], order=0)
        elif source == "catalogue":
            if not np.isfinite(of_source["local_rms"]).any() and len(joined.rows):
                raise ConfigError("filter.noise is 'catalogue' but the catalogue has no local rms (Isl_rms)")
            rms = of_source["local_rms"]
        else:
            rms = take_or_nan(manifest["rms_mad"], joined.of_cutout)
        noise_used[field] = source
        log.info("field %s: noise from %s", field, {"map": f"the rms map {rms_map}", "catalogue":
                 "the catalogue's local rms", "mad": "the cutouts' MAD"}[source])
        pb_path = (primary_beams or {}).get(field)
        pb = sample_image(pb_path, of_source["ra"], of_source["dec"]) if pb_path else np.ones(len(joined.rows))
        beam = field_beam(manifest_path)
        cov_beam = covariance_from_ellipse(beam.major, beam.minor, beam.pa)
        cov = covariance_from_ellipse(of_source["major_fwhm"], of_source["minor_fwhm"], of_source["pa"]) + cov_beam
        model_peak = of_source["flux"] * peak_to_integrated(cov, cov_beam)
        catalogued = of_source["peak_flux"]
        parts.append({"source_id": joined.source_id, "cutout_code": joined.cutout_code,
                      "field_code": np.full(len(joined.rows), number, dtype=np.int32), "rms": rms, "pb": pb,
                      "peak_model": np.where(np.isfinite(catalogued), catalogued, model_peak),
                      "flux": of_source["flux"], "of_source": joined.of_source})
    column = fields_end_to_end(parts, {"source_id": np.int64, "cutout_code": np.int32, "field_code": np.int32,
                                       "rms": float, "pb": float, "peak_model": float, "flux": float,
                                       "of_source": np.intp})
    with np.errstate(divide="ignore", invalid="ignore"):
        snr_peak = column["pb"] * column["peak_model"] / column["rms"]
        snr_integrated = column["pb"] * column["flux"] / column["rms"]
    snr = snr_peak if flux == "peak" else snr_integrated
    undefined = ~np.isfinite(snr)
    keep = np.where(undefined, False, snr >= k)
    out = pa.table({
        "source_id": column["source_id"],
        # the ids as dictionary codes, decoded by Arrow: millions of pairs name a few thousand cutouts
        "cutout_id": decoded_strings(column["cutout_code"], pairs["cutout_id"].cat.categories),
        "field": decoded_strings(column["field_code"], list(manifest_paths)),
        "rms": column["rms"], "pb": column["pb"], "peak_model": column["peak_model"],
        "snr_peak": snr_peak, "snr_integrated": snr_integrated, "snr": snr, "keep": keep,
    })
    write_parquet(out, output, columns=FILTER_COLUMNS, metadata={"k": k, "flux": flux, "noise": noise})
    source_id = column["source_id"]
    summary = {
        "k": k, "flux": flux, "noise": noise, "noise_per_field": noise_used, "pairs": int(len(source_id)),
        "pairs_kept": int(keep.sum()),
        "pairs_undefined_snr": int(undefined.sum()),
        "sources": _distinct_sources(source_id, column["of_source"], len(sources)),
        "sources_kept": _distinct_sources(source_id[keep], column["of_source"][keep], len(sources)),
        "median_rms": float(np.nanmedian(column["rms"])) if len(source_id) else None,
        "pb_range": [float(np.nanmin(column["pb"])), float(np.nanmax(column["pb"]))] if len(source_id) else None,
    }
    if summary["pairs_undefined_snr"]:
        log.warning("%d pairs have no defined SNR (NaN noise or outside the primary beam) and are not kept",
                    summary["pairs_undefined_snr"])
    write_json(summary_path, summary)
    log.info("filter: kept %d of %d (source, cutout) pairs, %d of %d sources, at %s SNR >= %g",
             summary["pairs_kept"], summary["pairs"], summary["sources_kept"], summary["sources"], flux, k)
    return summary


def _distinct_sources(source_id: np.ndarray, of_source: np.ndarray, n_sources: int) -> int:
    """How many distinct ids ``source_id`` holds, given each one's row in the sources (-1: not there).

    The rows are marked in an array of the sources' length (hashing millions of ids
    cost a tenth of the stage); ids the sources lack are counted by hashing.
    """
    known = of_source >= 0
    marked = np.zeros(n_sources, dtype=bool)
    marked[of_source[known]] = True
    return int(np.count_nonzero(marked)) + len(pd.unique(source_id[~known]))

