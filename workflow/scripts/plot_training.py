"""Snakemake adapter: training loss figure (radiodet.preview)."""

from radiodet.logs import configure
from radiodet.preview import plot_training_loss

with configure(snakemake.log[0]):
    plot_training_loss(snakemake.input.loss, snakemake.output.plot)
