# The other datasets built from the same inputs: per-source classification
# cutouts (MingoLoTSS recipe) and self-supervised crops (MGCLS recipe).


rule classification:
    """Per-source cutouts, clipped, cropped, masked and scaled to uint8, with labels."""
    input:
        unpack(get_field_images),
        sources=f"{RESULTS}/catalogue/sources.parquet",
    output:
        dataset=directory(f"{RESULTS}/classification"),
    params:
        fields=lambda wildcards: FIELDS.to_dict(orient="list"),
        classes=CLASSES,
        recipe=config["classification"],
    log:
        f"{RESULTS}/logs/classification.log",
    benchmark:
        f"{RESULTS}/benchmarks/classification.tsv"
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/classification.py"


rule ssl:
    """Crops with the per-field stretch and their catalogue source counts."""
    input:
        manifests=get_manifests,
        ownership=f"{RESULTS}/index/cutouts.parquet",
        assignments=f"{RESULTS}/index/assignments.parquet",
        sources=f"{RESULTS}/catalogue/sources.parquet",
        snr=f"{RESULTS}/filter/snr.parquet",
        views=get_views,
    output:
        table=f"{RESULTS}/ssl/crops.parquet",
    params:
        fields=FIELD_NAMES,
        min_snr=config["ssl"]["min_snr"],
    log:
        f"{RESULTS}/logs/ssl.log",
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/ssl.py"
