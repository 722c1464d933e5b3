"""Snakemake adapter: simulated MGCLS-format fields (radiodet.simulate)."""

from radiodet.logs import configure
from radiodet.simulate import SimulationConfig, simulate_fields

with configure(snakemake.log[0]):
    fields = snakemake.params.simulate["fields"]
    names = [f["name"] for f in fields]
    simulate_fields(fields, SimulationConfig.from_config(snakemake.params.simulate),
                    dict(zip(names, snakemake.output.images)), dict(zip(names, snakemake.output.rms_maps)),
                    snakemake.output.catalogue, snakemake.output.truth)
