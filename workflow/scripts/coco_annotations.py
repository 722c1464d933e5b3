"""Snakemake adapter: boxes -> COCO annotation files (radiodet.coco)."""

from radiodet.boxes import n_sigma_for
from radiodet.coco import write_coco_annotations
from radiodet.logs import configure

with configure(snakemake.log[0]):
    fields = snakemake.params.fields
    write_coco_annotations(
        snakemake.input.boxes, dict(zip(fields, snakemake.input.manifests)), snakemake.output.annotations,
        snakemake.output.summary, coco_dir=snakemake.params.coco_dir,
        views_dirs=dict(zip(fields, snakemake.params.views)) if snakemake.params.npy else None,
        classes=snakemake.params.classes, survey=snakemake.params.survey,
        n_sigma=n_sigma_for(snakemake.params.boxes["extent"], snakemake.params.boxes["scale"]),
        ownership_path=snakemake.input.ownership, segmentation=snakemake.params.coco["segmentation"],
        workers=snakemake.threads)
