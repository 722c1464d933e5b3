"""Snakemake adapter: catalogue -> Parquet (radiodet.catalogues.ingest)."""

from radiodet.atomic import write_json
from radiodet.catalogues import ingest
from radiodet.logs import configure

with configure(snakemake.log[0]):
    report = ingest(snakemake.input.catalogue, snakemake.params.format, snakemake.output.sources,
                    class_ids=set(snakemake.params.class_ids))
    write_json(snakemake.output.report, report.as_dict())
