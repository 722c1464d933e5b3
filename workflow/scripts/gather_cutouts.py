"""Snakemake adapter: a field's cutout parts -> its cutouts, manifest and pixel sample (radiodet.parts)."""

from radiodet.logs import configure
from radiodet.parts import gather_cutouts

with configure(snakemake.log[0]):
    gather_cutouts(snakemake.input.manifests, snakemake.input.samples, snakemake.output.fits,
                   snakemake.output.manifest, snakemake.output.sample)
