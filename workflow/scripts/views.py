"""Snakemake adapter: cutouts -> PNG/NPY views (radiodet.views)."""

from radiodet.logs import configure
from radiodet.views import ViewConfig, write_views

with configure(snakemake.log[0]):
    write_views(snakemake.input.manifest, snakemake.input.sample, snakemake.output.views,
                ViewConfig.from_config(snakemake.params.views), workers=snakemake.threads)
