# Stage 6: COCO annotation files per split, with the PNG images beside them.


rule coco:
    """instances_{train,val,test}.json and images/<split>/*.png."""
    input:
        boxes=rules.boxes.output.boxes,
        manifests=get_manifests,
        ownership=rules.index.output.cutouts,
        views=get_views,
    output:
        coco=directory(f"{RESULTS}/coco"),
        summary=f"{RESULTS}/coco_summary.json",
    log:
        f"{RESULTS}/logs/coco.log",
    benchmark:
        f"{RESULTS}/benchmarks/coco.tsv"
    priority: CRITICAL_PATH
    conda:
        "../envs/dataset.yaml"
    threads: 2
    params:
        fields=FIELD_NAMES,
        survey=SURVEY,
        classes=CLASSES,
        boxes=config["boxes"],
        coco=config["coco"],
    script:
        "../scripts/coco.py"
