"""Snakemake adapter: boxes -> COCO files (radiodet.coco)."""

from radiodet.boxes import n_sigma_for
from radiodet.coco import write_coco
from radiodet.logs import configure

with configure(snakemake.log[0]):
    fields = snakemake.params.fields
    write_coco(snakemake.input.boxes, dict(zip(fields, snakemake.input.manifests)),
               dict(zip(fields, snakemake.input.views)), snakemake.output.coco, snakemake.output.summary,
               classes=snakemake.params.classes, survey=snakemake.params.survey,
               n_sigma=n_sigma_for(snakemake.params.boxes["extent"], snakemake.params.boxes["scale"]),
               ownership_path=snakemake.input.ownership, segmentation=snakemake.params.coco["segmentation"],
               workers=snakemake.threads)
