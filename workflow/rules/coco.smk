# Stage 6: COCO annotation files per split, with the PNG images beside them.


rule coco:
    """instances_{train,val,test}.json and images/<split>/*.png."""
    input:
        boxes=f"{RESULTS}/boxes/boxes.parquet",
        manifests=get_manifests,
        ownership=f"{RESULTS}/index/cutouts.parquet",
        views=get_views,
    output:
        coco=directory(f"{RESULTS}/coco"),
        summary=f"{RESULTS}/coco_summary.json",
    params:
        fields=FIELD_NAMES,
        survey=SURVEY,
        classes=CLASSES,
        boxes=config["boxes"],
        coco=config["coco"],
    log:
        f"{RESULTS}/logs/coco.log",
    benchmark:
        f"{RESULTS}/benchmarks/coco.tsv"
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/coco.py"
