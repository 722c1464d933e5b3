"""Snakemake adapter: a field's view parts -> its views directory (radiodet.parts)."""

from radiodet.logs import configure
from radiodet.parts import gather_views

with configure(snakemake.log[0]):
    gather_views(snakemake.input.views, snakemake.output.views)
