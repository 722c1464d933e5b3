# Stage 5: pixel bounding boxes from sky positions and shapes.


rule boxes:
    """Bounding box of every kept (source, cutout) pair, clipped to the cutout."""
    input:
        snr=rules.filter.output.snr,
        sources=rules.ingest.output.sources,
        manifests=get_manifests,
    output:
        boxes=f"{RESULTS}/boxes/boxes.parquet",
        summary=f"{RESULTS}/boxes/boxes.json",
    log:
        f"{RESULTS}/logs/boxes.log",
    benchmark:
        f"{RESULTS}/benchmarks/boxes.tsv"
    priority: CRITICAL_PATH
    conda:
        "../envs/dataset.yaml"
    params:
        fields=FIELD_NAMES,
        boxes=config["boxes"],
    script:
        "../scripts/boxes.py"
