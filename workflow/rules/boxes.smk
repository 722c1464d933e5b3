# Stage 5: pixel bounding boxes from sky positions and shapes.


rule boxes:
    """Bounding box of every kept (source, cutout) pair, clipped to the cutout."""
    input:
        snr=f"{RESULTS}/filter/snr.parquet",
        sources=f"{RESULTS}/catalogue/sources.parquet",
        manifests=get_manifests,
    output:
        boxes=f"{RESULTS}/boxes/boxes.parquet",
        summary=f"{RESULTS}/boxes/boxes.json",
    params:
        fields=FIELD_NAMES,
        boxes=config["boxes"],
    log:
        f"{RESULTS}/logs/boxes.log",
    benchmark:
        f"{RESULTS}/benchmarks/boxes.tsv"
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/boxes.py"
