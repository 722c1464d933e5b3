"""Snakemake adapter: the classification dataset (radiodet.classification)."""

import pandas as pd

from radiodet.classification import StampConfig, build_classification_dataset
from radiodet.logs import configure

with configure(snakemake.log[0]):
    recipe = snakemake.params.recipe
    build_classification_dataset(snakemake.input.sources, pd.DataFrame(snakemake.params.fields),
                                 snakemake.output.dataset, classes=snakemake.params.classes,
                                 config=StampConfig.from_config(recipe), label_table=recipe.get("label_table"))
