# Stage 7: pictures for people, and the independent check of the boxes.


rule preview:
    """A few cutouts with their boxes drawn, north up."""
    input:
        boxes=f"{RESULTS}/boxes/boxes.parquet",
        manifests=get_manifests,
        ownership=f"{RESULTS}/index/cutouts.parquet",
        views=get_views,
    output:
        preview=report(directory(f"{RESULTS}/preview"), patterns=["{name}.png"], caption="../report/preview.rst",
                       category="Dataset", subcategory="Cutouts with boxes"),
    params:
        fields=FIELD_NAMES,
        classes=CLASSES,
        n=config["preview"]["n"],
    log:
        f"{RESULTS}/logs/preview.log",
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/preview.py"


rule statistics_plot:
    """SNR and box-size histograms, counts per split and class."""
    input:
        boxes=f"{RESULTS}/boxes/boxes.parquet",
        snr=f"{RESULTS}/filter/snr.parquet",
    output:
        plot=report(f"{RESULTS}/plots/dataset_statistics.png", caption="../report/statistics.rst",
                    category="Dataset", subcategory="Statistics"),
    params:
        classes=CLASSES,
        k=config["filter"]["k"],
    log:
        f"{RESULTS}/logs/statistics_plot.log",
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/statistics_plot.py"


rule crosscheck:
    """Are the bright sources of an independent source list inside the boxes?"""
    input:
        reference=config["crosscheck"].get("catalogue", []),
        boxes=f"{RESULTS}/boxes/boxes.parquet",
        manifests=get_manifests,
        ownership=f"{RESULTS}/index/cutouts.parquet",
        fits=expand(f"{RESULTS}/cutouts/{{field}}/fits", field=FIELD_NAMES),
    output:
        report=report(f"{RESULTS}/crosscheck/crosscheck.json", caption="../report/crosscheck.rst",
                      category="Dataset", subcategory="Independent check"),
    params:
        fields=FIELD_NAMES,
        format=config["crosscheck"].get("format", "pybdsf_srl"),
        min_peak_snr=config["crosscheck"].get("min_peak_snr", 10),
    log:
        f"{RESULTS}/logs/crosscheck.log",
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/crosscheck.py"
