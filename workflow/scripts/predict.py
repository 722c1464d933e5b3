"""Snakemake adapter: detector over a whole field -> catalogue (radiodet.predict)."""

from radiodet.logs import configure
from radiodet.predict import PredictConfig, predict_field
from radiodet.views import ViewConfig

with configure(snakemake.log[0]):
    options = {k: v for k, v in snakemake.params.predict.items() if k in PredictConfig.__dataclass_fields__}
    plane = snakemake.params.plane
    predict_field(snakemake.input.model, snakemake.input.image, snakemake.input.sample, snakemake.output.catalogue,
                  snakemake.output.submission, snakemake.output.summary, config=PredictConfig(**options),
                  views=ViewConfig.from_config(snakemake.params.views), primary_beam=snakemake.input.get("primary_beam"),
                  plane=tuple(plane) if plane is not None else None)
