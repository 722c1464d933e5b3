# Stage 7: detector training (one process per GPU through torchrun; CPU works, slowly).


rule train:
    """Train the detector (config model.kind) on the COCO train split; checkpoints each epoch, resumes."""
    input:
        coco=f"{RESULTS}/coco",
    output:
        model=f"{RESULTS}/train/model.pth",
        loss=f"{RESULTS}/train/loss.csv",
        summary=f"{RESULTS}/train/train.json",
    log:
        f"{RESULTS}/logs/train.log",
    benchmark:
        f"{RESULTS}/benchmarks/train.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    params:
        settings=training_settings(),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        nproc=lambda wildcards, resources: max(1, int(resources.get("gpu", 0))),
    shell:
        "torchrun --standalone --nproc_per_node={params.nproc} -m radiodet.detector.train"
        " --train-json {input.coco:q}/instances_train.json --val-json {input.coco:q}/instances_val.json"
        " --out-dir {params.out_dir:q}"
        " --config-json {params.settings:q} > {log:q} 2>&1"


rule plot_training:
    """Loss terms and learning rate against step."""
    input:
        loss=f"{RESULTS}/train/loss.csv",
    output:
        plot=report(
            f"{RESULTS}/plots/training_loss.png",
            caption="../report/loss.rst",
            category="Detector",
            subcategory="Training",
        ),
    log:
        f"{RESULTS}/logs/plot_training.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_training.tsv"
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/plot_training.py"
