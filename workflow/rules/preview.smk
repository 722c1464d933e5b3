# Stage 7: pictures for people, and the independent check of the boxes.


rule preview:
    """A few cutouts with their boxes drawn, north up."""
    input:
        boxes=rules.boxes.output.boxes,
        manifests=get_manifests,
        ownership=rules.index.output.cutouts,
        views=get_views,
    output:
        preview=report(
            directory(f"{RESULTS}/preview"),
            patterns=["{name}.png"],
            caption="../report/preview.rst",
            category="Dataset",
            subcategory="Cutouts with boxes",
        ),
    log:
        f"{RESULTS}/logs/preview.log",
    benchmark:
        f"{RESULTS}/benchmarks/preview.tsv"
    conda:
        "../envs/dataset.yaml"
    params:
        fields=FIELD_NAMES,
        classes=CLASSES,
        n=config["preview"]["n"],
    script:
        "../scripts/preview.py"


rule statistics_plot:
    """SNR and box-size histograms, counts per split and class."""
    input:
        boxes=rules.boxes.output.boxes,
        snr=rules.filter.output.snr,
    output:
        plot=report(
            f"{RESULTS}/plots/dataset_statistics.png",
            caption="../report/statistics.rst",
            category="Dataset",
            subcategory="Statistics",
        ),
    log:
        f"{RESULTS}/logs/statistics_plot.log",
    benchmark:
        f"{RESULTS}/benchmarks/statistics_plot.tsv"
    conda:
        "../envs/dataset.yaml"
    params:
        classes=CLASSES,
        k=config["filter"]["k"],
    script:
        "../scripts/statistics_plot.py"


rule crosscheck:
    """Are the bright sources of an independent source list inside the boxes?"""
    input:
        reference=config["crosscheck"].get("catalogue", []),
        boxes=rules.boxes.output.boxes,
        manifests=get_manifests,
        ownership=rules.index.output.cutouts,
        fits=expand(f"{RESULTS}/cutouts/{{field}}/fits", field=FIELD_NAMES),
    output:
        report=report(
            f"{RESULTS}/crosscheck/crosscheck.json",
            caption="../report/crosscheck.rst",
            category="Dataset",
            subcategory="Independent check",
        ),
    log:
        f"{RESULTS}/logs/crosscheck.log",
    benchmark:
        f"{RESULTS}/benchmarks/crosscheck.tsv"
    conda:
        "../envs/dataset.yaml"
    params:
        fields=FIELD_NAMES,
        format=config["crosscheck"].get("format", "pybdsf_srl"),
        min_peak_snr=config["crosscheck"].get("min_peak_snr", 10),
    script:
        "../scripts/crosscheck.py"
