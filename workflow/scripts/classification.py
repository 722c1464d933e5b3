"""Snakemake adapter: the classification dataset (radiodet.classification)."""

import pandas as pd

from radiodet.classification import StampConfig, build_classification_dataset
from radiodet.logs import configure

with configure(snakemake.log[0]):
    recipe = dict(snakemake.params.recipe)
    label_table = recipe.pop("label_table", None)
    build_classification_dataset(snakemake.input.sources, pd.DataFrame(snakemake.params.fields),
                                 snakemake.output.dataset, classes=snakemake.params.classes,
                                 config=StampConfig(**recipe), label_table=label_table)
