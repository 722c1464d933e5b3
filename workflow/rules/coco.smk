# Stage 6: COCO annotation files per split, with the PNG images beside them.


rule coco_annotations:
    """instances_{train,val,test}.json, their paths relative to the COCO directory (no wait for the views)."""
    input:
        boxes=rules.boxes.output.boxes,
        manifests=get_manifests,
        ownership=rules.index.output.cutouts,
    output:
        annotations=directory(f"{RESULTS}/coco_annotations"),
        summary=f"{RESULTS}/coco_summary.json",
    log:
        f"{RESULTS}/logs/coco_annotations.log",
    benchmark:
        f"{RESULTS}/benchmarks/coco_annotations.tsv"
    priority: CRITICAL_PATH
    conda:
        "../envs/dataset.yaml"
    # one core: a job needing two waited for every views job to end (25,600 cutouts: 10 s of idle core)
    threads: 1
    params:
        fields=FIELD_NAMES,
        survey=SURVEY,
        classes=CLASSES,
        boxes=config["boxes"],
        coco=config["coco"],
        coco_dir=f"{RESULTS}/coco",
        views=get_views,
        npy="npy" in config["views"]["formats"],
    script:
        "../scripts/coco_annotations.py"


rule coco:
    """The COCO directory: the annotation files and images/<split>/*.png linked from the views."""
    input:
        annotations=rules.coco_annotations.output.annotations,
        manifests=get_manifests,
        ownership=rules.index.output.cutouts,
        views=get_views,
    output:
        coco=directory(f"{RESULTS}/coco"),
    log:
        f"{RESULTS}/logs/coco.log",
    benchmark:
        f"{RESULTS}/benchmarks/coco.tsv"
    priority: CRITICAL_PATH
    localrule: True
    conda:
        "../envs/dataset.yaml"
    params:
        fields=FIELD_NAMES,
    script:
        "../scripts/coco.py"
