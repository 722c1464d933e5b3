# The other datasets built from the same inputs: per-source classification
# cutouts (MingoLoTSS recipe) and self-supervised crops (MGCLS recipe).


rule classification:
    """Per-source cutouts, clipped, cropped, masked and scaled to uint8, with labels."""
    input:
        unpack(get_field_images),
        sources=rules.ingest.output.sources,
    output:
        dataset=directory(f"{RESULTS}/classification"),
    log:
        f"{RESULTS}/logs/classification.log",
    benchmark:
        f"{RESULTS}/benchmarks/classification.tsv"
    conda:
        "../envs/dataset.yaml"
    params:
        fields=lambda wildcards: FIELDS.to_dict(orient="list"),
        classes=CLASSES,
        recipe=config["classification"],
    script:
        "../scripts/classification.py"


rule ssl:
    """Crops with the per-field stretch and their catalogue source counts."""
    input:
        manifests=get_manifests,
        ownership=rules.index.output.cutouts,
        assignments=rules.index.output.assignments,
        sources=rules.ingest.output.sources,
        snr=rules.filter.output.snr,
        views=get_views,
    output:
        table=f"{RESULTS}/ssl/crops.parquet",
    log:
        f"{RESULTS}/logs/ssl.log",
    benchmark:
        f"{RESULTS}/benchmarks/ssl.tsv"
    conda:
        "../envs/dataset.yaml"
    params:
        fields=FIELD_NAMES,
        min_snr=config["ssl"]["min_snr"],
    script:
        "../scripts/ssl.py"
