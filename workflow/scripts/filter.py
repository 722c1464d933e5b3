"""Snakemake adapter: SNR and the k x rms cut (radiodet.filtering)."""

from radiodet.filtering import filter_sources
from radiodet.logs import configure

with configure(snakemake.log[0]):
    fields = snakemake.params.fields
    options = snakemake.params.filter
    named = dict(snakemake.input.items())
    filter_sources(
        snakemake.input.assignments, snakemake.input.sources, dict(zip(fields, snakemake.input.manifests)),
        snakemake.output.snr, snakemake.output.summary, k=options["k"], flux=options["flux"],
        noise=options["noise"],
        rms_maps={f: named[f"rms_{f}"] for f in fields if f"rms_{f}" in named},
        primary_beams={f: named[f"pb_{f}"] for f in fields if f"pb_{f}" in named},
    )
