"""Snakemake adapter: sources -> staged PostGIS tables, beside the cutouts (radiodet.index.stage_sources)."""

from radiodet.index import stage_sources
from radiodet.logs import configure

with configure(snakemake.log[0]):
    database = snakemake.params.database
    stage_sources(
        snakemake.input.sources, list(zip(snakemake.params.fields, snakemake.input.images, strict=True)),
        snakemake.output.staged, survey=snakemake.params.survey, database_url=database.get("url"),
        private_dir=database["private_dir"], schema=database["schema"], margin_px=snakemake.params.margin_px,
        postgres_bin=database.get("postgres_bin"), cores=snakemake.threads,
    )
