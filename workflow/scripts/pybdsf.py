"""Snakemake adapter: the PyBDSF baseline (radiodet.baseline)."""

from radiodet.baseline import run_pybdsf
from radiodet.logs import configure

with configure(snakemake.log[0]):
    options = snakemake.params.pybdsf
    run_pybdsf(snakemake.input.image, snakemake.output.srl, snakemake.output.catalogue, snakemake.output.submission,
               snakemake.output.summary, class_id=options["class_id"], thresh_isl=options["thresh_isl"],
               thresh_pix=options["thresh_pix"], primary_beam=snakemake.input.get("primary_beam"),
               ncores=snakemake.threads)
