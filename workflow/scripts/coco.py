"""Snakemake adapter: COCO annotation files + PNG views -> the COCO directory (radiodet.coco)."""

from radiodet.coco import link_coco_images
from radiodet.logs import configure

with configure(snakemake.log[0]):
    fields = snakemake.params.fields
    link_coco_images(snakemake.input.annotations, dict(zip(fields, snakemake.input.manifests)),
                     dict(zip(fields, snakemake.input.views)), snakemake.output.coco,
                     ownership_path=snakemake.input.ownership)
