"""Snakemake adapter: sources + footprints -> PostGIS -> assignments (radiodet.index)."""

from radiodet.index import build_index
from radiodet.logs import configure

with configure(snakemake.log[0]):
    database = snakemake.params.database
    build_index(
        snakemake.input.sources, list(snakemake.input.manifests), snakemake.output.assignments,
        snakemake.output.summary, survey=snakemake.params.survey, database_url=database.get("url"),
        private_dir=database["private_dir"], schema=database["schema"], margin_px=snakemake.params.margin_px,
        postgres_bin=database.get("postgres_bin"), cores=snakemake.threads, cutouts_output=snakemake.output.cutouts,
        centres=snakemake.params.centres, allow_empty=snakemake.params.allow_empty,
        stage_path=snakemake.input.staged,
    )
