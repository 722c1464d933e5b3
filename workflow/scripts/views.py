"""Snakemake adapter: cutouts (pixels from their image) -> PNG/NPY views (radiodet.views)."""

from radiodet.logs import configure
from radiodet.views import ViewConfig, write_views

with configure(snakemake.log[0]):
    write_views(snakemake.input.manifest, snakemake.input.sample, snakemake.output.views,
                ViewConfig.from_config(snakemake.params.views), image_path=snakemake.input.image,
                workers=snakemake.threads)
