"""Snakemake adapter: simulated MGCLS-format fields (radiodet.simulate)."""

from radiodet.logs import configure
from radiodet.simulate import SimulationConfig, simulate_fields

with configure(snakemake.log[0]):
    options = dict(snakemake.params.simulate)
    fields = options.pop("fields")
    options = {k: v for k, v in options.items() if k in SimulationConfig.__dataclass_fields__}
    names = [f["name"] for f in fields]
    simulate_fields(fields, SimulationConfig(**options), dict(zip(names, snakemake.output.images)),
                    dict(zip(names, snakemake.output.rms_maps)), snakemake.output.catalogue, snakemake.output.truth)
