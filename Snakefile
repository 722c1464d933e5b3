# radiodet: survey images and catalogues -> machine-learning datasets.
#
#   snakemake --cores 2                         # the bundled SDC1 demo
#   snakemake --cores 2 --configfile config/sdc1.yaml
#   snakemake --profile slurm                   # on a cluster (see README)
#
# Each stage is one file in workflow/rules; the logic lives in the Python
# package under src/radiodet, called by the thin scripts in workflow/scripts.

from snakemake.utils import min_version

min_version("9.0")


# The default config is the bundled demo. A config given with --configfile
# replaces it instead of being merged into it, so no demo setting leaks into
# another survey's run.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/cutouts.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/filter.smk"
include: "workflow/rules/boxes.smk"
include: "workflow/rules/coco.smk"
include: "workflow/rules/preview.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/datasets.smk"


rule all:
    default_target: True
    input:
        get_final_targets(),
