"""Snakemake adapter: COCO mAP on the test split (radiodet.predict / radiodet.score)."""

from pathlib import Path

from radiodet.logs import configure
from radiodet.predict import detect_coco_split

with configure(snakemake.log[0]):
    detect_coco_split(snakemake.input.model, Path(snakemake.input.coco) / "instances_test.json",
                      snakemake.output.detections, snakemake.output.metrics,
                      score_threshold=snakemake.params.score_threshold)
