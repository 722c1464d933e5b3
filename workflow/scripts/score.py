"""Snakemake adapter: SDC1 scores, COCO mAP, table and plot (radiodet.score)."""

from radiodet.logs import configure
from radiodet.score import score_methods

with configure(snakemake.log[0]):
    fields = snakemake.params.fields
    score_methods(
        snakemake.input.sources, dict(zip(fields, snakemake.input.manifests)),
        {"detector": dict(zip(fields, snakemake.input.detector)), "pybdsf": dict(zip(fields, snakemake.input.pybdsf))},
        snakemake.input.coco, regions=snakemake.params.regions, freq_mhz=snakemake.params.freq_mhz,
        calibration_regions=snakemake.params.calibration_regions, table=snakemake.output.table,
        plot=snakemake.output.plot, truth_path=snakemake.output.truth,
        method_json={"detector": snakemake.output.detector, "pybdsf": snakemake.output.pybdsf},
        submissions={"detector": snakemake.output.submission_detector,
                     "pybdsf": snakemake.output.submission_pybdsf},
    )
