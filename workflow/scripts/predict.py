"""Snakemake adapter: detector over a whole field -> catalogue (radiodet.detector.predict)."""

from radiodet.detector.predict import PredictConfig, predict_field
from radiodet.logs import configure
from radiodet.views import ViewConfig

with configure(snakemake.log[0]):
    plane = snakemake.params.plane
    predict_field(snakemake.input.model, snakemake.input.image, snakemake.input.sample, snakemake.output.catalogue,
                  snakemake.output.submission, snakemake.output.summary,
                  config=PredictConfig.from_config(snakemake.params.predict),
                  views=ViewConfig.from_config(snakemake.params.views),
                  primary_beam=snakemake.input.get("primary_beam"),
                  plane=tuple(plane) if plane is not None else None)
