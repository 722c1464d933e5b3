"""Snakemake adapter: catalogue -> Parquet (radiodet.ingest)."""

from radiodet.atomic import write_json
from radiodet.ingest import ingest
from radiodet.logs import configure

with configure(snakemake.log[0]):
    report = ingest(snakemake.input.catalogue, snakemake.params.format, snakemake.output.sources,
                    class_ids=set(snakemake.params.class_ids), options=snakemake.params.options)
    write_json(snakemake.output.report, report.as_dict())
