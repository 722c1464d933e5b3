"""Snakemake adapter: kept sources -> pixel boxes (radiodet.boxes)."""

from radiodet.boxes import make_boxes
from radiodet.logs import configure

with configure(snakemake.log[0]):
    options = snakemake.params.boxes
    make_boxes(snakemake.input.snr, snakemake.input.sources,
               dict(zip(snakemake.params.fields, snakemake.input.manifests)), snakemake.output.boxes,
               snakemake.output.summary, extent=options["extent"], scale=options["scale"],
               min_visible_fraction=options["min_visible_fraction"])
