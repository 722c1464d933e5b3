"""Snakemake adapter: dataset statistics figure (radiodet.preview)."""

from radiodet.logs import configure
from radiodet.preview import plot_statistics

with configure(snakemake.log[0]):
    plot_statistics(snakemake.input.boxes, snakemake.input.snr, snakemake.output.plot, k=snakemake.params.k,
                    classes=snakemake.params.classes)
