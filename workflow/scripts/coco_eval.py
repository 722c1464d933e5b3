"""Snakemake adapter: COCO mAP of the detector on the test split (radiodet.detector.engine)."""

from pathlib import Path

from radiodet.boxes import n_sigma_for
from radiodet.detector.engine import evaluate_model
from radiodet.logs import configure

with configure(snakemake.log[0]):
    evaluate_model(snakemake.input.model, Path(snakemake.input.coco) / "instances_test.json",
                   snakemake.output.detections, snakemake.output.metrics,
                   min_score=snakemake.params.score_threshold,
                   n_sigma=n_sigma_for(snakemake.params.boxes["extent"], snakemake.params.boxes["scale"]))
