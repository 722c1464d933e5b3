"""Snakemake adapter: cutouts with their boxes drawn (radiodet.preview)."""

from radiodet.logs import configure
from radiodet.preview import write_previews

with configure(snakemake.log[0]):
    fields = snakemake.params.fields
    write_previews(snakemake.input.boxes, dict(zip(fields, snakemake.input.manifests)),
                   dict(zip(fields, snakemake.input.views)), snakemake.output.preview,
                   classes=snakemake.params.classes, n=snakemake.params.n, ownership_path=snakemake.input.ownership)
