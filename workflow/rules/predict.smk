# Stage 8: inference over whole fields -> catalogues; the PyBDSF baseline beside it.


rule predict:
    """Tiled detection over one field, each detection measured on the image (batched Gaussian fits)."""
    input:
        unpack(get_primary_beam),
        model=rules.train.output.model,
        image=get_image,
        sample=f"{RESULTS}/cutouts/{{field}}/pixel_sample.npy",
    output:
        catalogue=f"{RESULTS}/predict/{{field}}.parquet",
        submission=f"{RESULTS}/predict/{{field}}.sdc1.txt",
        summary=f"{RESULTS}/predict/{{field}}.json",
    log:
        f"{RESULTS}/logs/predict/{{field}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{field}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    params:
        predict=config["predict"],
        views=config["views"],
        plane=config["image"]["plane"],
    script:
        "../scripts/predict.py"


rule coco_eval:
    """COCO mAP of the detector on the test split (pycocotools COCOeval)."""
    input:
        model=rules.train.output.model,
        coco=f"{RESULTS}/coco",
    output:
        metrics=f"{RESULTS}/score/coco_test.json",
        detections=f"{RESULTS}/score/detections_test.json",
    log:
        f"{RESULTS}/logs/coco_eval.log",
    benchmark:
        f"{RESULTS}/benchmarks/coco_eval.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    params:
        score_threshold=config["predict"]["coco_score_threshold"],
        boxes=config["boxes"],
    script:
        "../scripts/coco_eval.py"


rule pybdsf:
    """PyBDSF on the same field, written as the detector's catalogues are."""
    input:
        unpack(get_primary_beam),
        image=get_image,
    output:
        srl=f"{RESULTS}/baseline/{{field}}.srl",
        catalogue=f"{RESULTS}/baseline/{{field}}.parquet",
        submission=f"{RESULTS}/baseline/{{field}}.sdc1.txt",
        summary=f"{RESULTS}/baseline/{{field}}.json",
    log:
        f"{RESULTS}/logs/pybdsf/{{field}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pybdsf/{{field}}.tsv"
    conda:
        "../envs/scoring.yaml"
    threads: 1
    params:
        pybdsf=config["baseline"]["pybdsf"],
    script:
        "../scripts/pybdsf.py"
