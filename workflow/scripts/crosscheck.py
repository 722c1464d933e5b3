"""Snakemake adapter: independent check of the boxes (radiodet.crosscheck)."""

from radiodet.crosscheck import crosscheck
from radiodet.logs import configure

with configure(snakemake.log[0]):
    crosscheck(snakemake.input.reference, snakemake.params.format, snakemake.input.boxes,
               dict(zip(snakemake.params.fields, snakemake.input.manifests)), snakemake.output.report,
               min_peak_snr=snakemake.params.min_peak_snr, ownership_path=snakemake.input.ownership)
