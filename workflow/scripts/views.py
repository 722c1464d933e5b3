"""Snakemake adapter: cutouts -> PNG/NPY views (radiodet.views)."""

from radiodet.logs import configure
from radiodet.views import ViewConfig, write_views

with configure(snakemake.log[0]):
    options = dict(snakemake.params.views)
    options["formats"] = tuple(options["formats"])
    options["percentiles"] = tuple(options["percentiles"])
    write_views(snakemake.input.manifest, snakemake.input.sample, snakemake.output.views, ViewConfig(**options))
