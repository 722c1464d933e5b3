"""Scores: the official SDC1 scorer, COCO mAP, and the comparison table and plot.

SDC1: ``ska_sdc.Sdc1Scorer(submission, truth, freq).run(mode=0, train=True)``
on the rows of both catalogues whose position lies in the evaluation region
(the config's test split region of the field). ``train=True`` makes the
scorer keep the SDC1 training area only, which is where the bundled data and
the labelled part of the full image lie. Completeness is matches over the
truth rows of the region, precision matches over detections.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_json
from .catalogues.sdc1 import submission_frame, truth_submission, write_scorer_table
from .schema import read_frame, read_sources
from .tiling import PixelBox, SkyBox, region_from_config

__all__ = ["ACCURACY_COLUMNS", "in_regions", "sdc1_score", "score_table", "plot_completeness_precision",
           "calibrate_threshold", "score_methods"]

log = logging.getLogger(__name__)

#: the official scorer's per-match accuracies (each in [0, 1]; a match scores their mean)
ACCURACY_COLUMNS = ["position", "flux", "b_maj", "b_min", "pa", "core_frac", "class"]


def in_regions(ra, dec, regions: list[dict], wcs, shape) -> np.ndarray:
    """Whether each (RA, Dec) lies in any of ``regions`` of an image.

    Pixel boxes count whole pixels: column ``x_min`` starts at continuous
    coordinate ``x_min - 0.5`` in 0-based pixel terms.
    """
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    ny, nx = shape
    x, y = wcs.world_to_pixel_values(ra, dec)
    inside_image = PixelBox(0, nx, 0, ny).holds(x, y)
    mask = np.zeros(ra.shape, dtype=bool)
    for spec in regions:
        region = region_from_config(spec)
        if isinstance(region, SkyBox):
            mask |= region.contains(ra, dec) & inside_image
        else:
            mask |= region.clip(nx, ny).holds(x, y)
    return mask


def sdc1_score(submission: pd.DataFrame, truth: pd.DataFrame, *, freq_mhz: int = 560) -> dict:
    """Run the official scorer; returns the figures and the match table."""
    from ska_sdc import Sdc1Scorer

    empty = {"score": 0.0, "n_det": 0, "n_match": 0, "n_false": 0, "match_df": pd.DataFrame(),
             "accuracy": {name: None for name in ACCURACY_COLUMNS}}
    if submission.empty:
        return empty
    result = Sdc1Scorer(submission.reset_index(drop=True), truth.reset_index(drop=True), freq_mhz).run(
        mode=0, train=True, detail=True)
    accuracy = empty["accuracy"]
    if result.scores_df is not None and len(result.scores_df):
        accuracy = {name: round(float(result.scores_df[name].mean()), 4) for name in ACCURACY_COLUMNS}
    return {"score": float(result.value), "n_det": int(result.n_det), "n_match": int(result.n_match),
            "n_false": int(result.n_false), "match_df": result.match_df, "accuracy": accuracy}


def score_table(rows: list[dict], truth_rows: int, path: str | Path) -> pd.DataFrame:
    """``scores.csv``: method, score, n_det, n_match, n_false, precision, completeness, mAP, the
    scorer's mean accuracy per property over the matches (``acc_<property>``) and the threshold used."""
    table = pd.DataFrame([{
        "method": r["method"], "score": round(r["score"], 3), "n_det": r["n_det"], "n_match": r["n_match"],
        "n_false": r["n_false"], "precision": round(r["n_match"] / r["n_det"], 4) if r["n_det"] else 0.0,
        "completeness": round(r["n_match"] / truth_rows, 4) if truth_rows else 0.0,
        "mAP": r.get("mAP"), "mAP50": r.get("mAP50"), "truth_rows": truth_rows,
        **{f"acc_{name}": r.get("accuracy", {}).get(name) for name in ACCURACY_COLUMNS},
        "score_threshold": r.get("score_threshold"),
    } for r in rows])
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return table


def plot_completeness_precision(truth: pd.DataFrame, results: dict[str, dict], path: str | Path) -> None:
    """Completeness against true flux, precision against measured flux, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fluxes = truth["flux"].to_numpy(float)
    positive = fluxes[fluxes > 0]
    bins = (np.logspace(np.log10(positive.min()), np.log10(positive.max()), 25) if positive.size
            else np.logspace(-7, -2, 25))
    centres = np.sqrt(bins[:-1] * bins[1:])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    all_truth, _ = np.histogram(fluxes, bins)
    for method, result in results.items():
        match = result["match_df"]
        sub = result["submission"]
        matched_true = match["flux_t"].to_numpy(float) if len(match) else np.array([])
        found, _ = np.histogram(matched_true, bins)
        with np.errstate(divide="ignore", invalid="ignore"):
            axes[0].plot(centres, np.where(all_truth > 0, found / all_truth, np.nan), marker="o", ms=3, label=method)
            detected, _ = np.histogram(sub["flux"].to_numpy(float), bins)
            good, _ = np.histogram(match["flux"].to_numpy(float) if len(match) else np.array([]), bins)
            axes[1].plot(centres, np.where(detected > 0, good / detected, np.nan), marker="o", ms=3, label=method)
    axes[0].set(xscale="log", xlabel="true flux density [Jy]", ylabel="completeness (matched / truth)",
                ylim=(0, 1.05), title="Completeness in the test region")
    axes[1].set(xscale="log", xlabel="measured flux density [Jy]", ylabel="precision (matched / detected)",
                ylim=(0, 1.05), title="Precision in the test region")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_sdc1_json(result: dict, path: str | Path, **extra) -> None:
    """The figures of one scorer run (without the match table)."""
    write_json(path, {k: v for k, v in result.items() if k not in ("match_df", "submission")} | extra)


def _region_rows(frames: dict[str, pd.DataFrame], manifests: dict[str, str | Path], regions: list[dict],
                 ra: str = "ra", dec: str = "dec") -> pd.DataFrame:
    """Rows of per-field tables whose position lies in ``regions`` of their field."""
    from .manifest import field_shape, field_wcs

    parts = []
    for field, frame in frames.items():
        wcs, shape = field_wcs(manifests[field]), field_shape(manifests[field])
        parts.append(frame[in_regions(frame[ra], frame[dec], regions, wcs, shape)])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def region_truth(sources_by_field: dict[str, pd.DataFrame], manifests: dict[str, str | Path],
                 regions: list[dict]) -> pd.DataFrame:
    """SDC1 truth rows (scorer columns) in ``regions``, one row per source.

    Overlapping fields both list a source of their overlap; the scorer must
    see it once, in the scored region as in the calibration region.
    """
    return truth_submission(_region_rows(sources_by_field, manifests, regions)).drop_duplicates("id")


#: the detector score thresholds tried on the calibration region
THRESHOLD_GRID = np.round(np.arange(0.02, 0.97, 0.02), 2)


def calibrate_threshold(catalogue: pd.DataFrame, truth: pd.DataFrame, *, freq_mhz: int,
                        thresholds=THRESHOLD_GRID) -> tuple[float, list[dict]]:
    """The detector score threshold that maximises the SDC1 score on ``truth``'s region.

    A detection adds its match's mean accuracy when it matches and costs 1
    when it does not, so the threshold that maximises the score is the one
    at which the detections it admits are real with the break-even
    probability ``1 / (1 + mean accuracy)`` (about 0.6 at a mean of 0.7).

    ``catalogue``: detections of that same region (never the test region).
    """
    trials = []
    for threshold in thresholds:
        result = sdc1_score(submission_frame(catalogue[catalogue["score"] >= threshold]), truth, freq_mhz=freq_mhz)
        trials.append({"threshold": float(threshold), **{k: result[k] for k in ("score", "n_det", "n_match")}})
    best = max(trials, key=lambda t: t["score"])
    return best["threshold"], trials


def score_methods(sources_path: str | Path, manifests: dict[str, str | Path],
                  catalogues: dict[str, dict[str, str | Path]], coco_metrics_path: str | Path | None, *,
                  regions: list[dict], freq_mhz: int, table: str | Path, plot: str | Path, truth_path: str | Path,
                  method_json: dict[str, str | Path], submissions: dict[str, str | Path],
                  calibration_regions: list[dict] | None = None) -> pd.DataFrame:
    """Score every method's catalogues against the truth rows of ``regions``.

    ``catalogues``: method -> field -> Parquet catalogue (schema columns; the
    detector's also has ``score``). A catalogue with a ``score`` column gets
    its score threshold chosen on ``calibration_regions`` (the val split:
    never the test region) before it is scored. Writes the table, the plot,
    one JSON per method, the truth rows used (``truth_path``, the truth
    catalogue's format) and, per method, the exact submission given to the
    scorer (``submissions[method]``), so that
    ``Sdc1Scorer.from_txt(submission, truth_path, freq)`` reproduces the figures.

    Parameters
    ----------
    sources_path : str or Path
        The ingest stage's Parquet (the truth catalogue: fluxes in Jy, sizes
        FWHM in arcsec, PA in degrees east of north).
    manifests : dict of str to str or Path
        Field name -> its cutout manifest (the field's WCS and shape decide
        which rows lie in a region).
    catalogues : dict of str to dict of str to str or Path
        Method (``detector``, ``pybdsf``) -> field -> its Parquet catalogue.
    coco_metrics_path : str or Path or None
        The ``coco_eval`` rule's metrics JSON; its mAP and mAP50 are added to
        the detector's row.
    regions : list of dict
        Scored regions (pixel or sky boxes of :func:`radiodet.tiling.region_from_config`).
    freq_mhz : int
        The image's frequency for the scorer (560 or 1400 for SDC1).
    table, plot, truth_path : str or Path
        The score CSV, the completeness/precision PNG and the truth rows
        given to the scorer.
    method_json, submissions : dict of str to str or Path
        Method -> its result JSON, and the submission text it was scored on.
    calibration_regions : list of dict, optional
        Where a score threshold is chosen (val, never test).

    Returns
    -------
    pandas.DataFrame
        One row per method: SDC1 score, detections, matches, false
        detections, per-property accuracies, threshold, mAP.
    """
    import json

    if not regions:
        raise ValueError("score.region names a split without regions: nothing to score on")
    sources = read_sources(sources_path)
    by_field = {field: sources for field in manifests}
    truth = region_truth(by_field, manifests, regions)
    write_scorer_table(truth, truth_path, header=False)
    log.info("%d truth rows in the evaluation region", len(truth))
    coco = json.loads(Path(coco_metrics_path).read_text()) if coco_metrics_path else {}
    rows, plotted = [], {}
    for method, files in catalogues.items():
        frames = {field: read_frame(path) for field, path in files.items()}
        extra = {}
        if all("score" in frame for frame in frames.values()) and calibration_regions:
            calibration_truth = region_truth(by_field, manifests, calibration_regions)
            threshold, trials = calibrate_threshold(_region_rows(frames, manifests, calibration_regions),
                                                    calibration_truth, freq_mhz=freq_mhz)
            log.info("%s: score threshold %.2f chosen on the calibration region (%d truth rows)", method, threshold,
                     len(calibration_truth))
            frames = {field: frame[frame["score"] >= threshold] for field, frame in frames.items()}
            extra = {"score_threshold": threshold, "calibration": trials}
        sub = submission_frame(_region_rows(frames, manifests, regions))
        write_scorer_table(sub, submissions[method])
        result = sdc1_score(sub, truth, freq_mhz=freq_mhz)
        result["method"] = method
        result["score_threshold"] = extra.get("score_threshold")
        if method == "detector":
            result.update({"mAP": coco.get("mAP"), "mAP50": coco.get("mAP50")})
        rows.append(result)
        plotted[method] = {**result, "submission": sub}
        write_sdc1_json(result, method_json[method], truth_rows=len(truth), **extra)
        log.info("%s: SDC1 score %.1f, %d detections, %d matched, %d false", method, result["score"],
                 result["n_det"], result["n_match"], result["n_false"])
    scores = score_table(rows, len(truth), table)
    plot_completeness_precision(truth, plotted, plot)
    return scores
