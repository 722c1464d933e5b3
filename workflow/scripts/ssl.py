"""Snakemake adapter: self-supervised crops with source counts (radiodet.ssl)."""

from radiodet.logs import configure
from radiodet.ssl import build_ssl_table

with configure(snakemake.log[0]):
    fields = snakemake.params.fields
    build_ssl_table(dict(zip(fields, snakemake.input.manifests)), snakemake.input.ownership, snakemake.input.sources,
                    snakemake.input.assignments, dict(zip(fields, snakemake.input.views)), snakemake.output.table,
                    snr_path=snakemake.input.snr, min_snr=snakemake.params.min_snr)
