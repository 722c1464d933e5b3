# Stage 2: images -> FITS cutouts with their own WCS, a manifest, PNG/NPY views.


rule cutouts:
    """Cut one field's image into FITS cutouts laid out inside the split regions."""
    input:
        image=get_image,
    output:
        fits=directory(f"{RESULTS}/cutouts/{{field}}/fits"),
        manifest=f"{RESULTS}/cutouts/{{field}}/manifest.parquet",
        sample=f"{RESULTS}/cutouts/{{field}}/pixel_sample.npy",
    log:
        f"{RESULTS}/logs/cutouts/{{field}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cutouts/{{field}}.tsv"
    conda:
        "../envs/dataset.yaml"
    params:
        cutouts=config["cutouts"],
        regions=config["split"]["regions"],
        plane=config["image"]["plane"],
        beam=config["image"]["beam"],
    script:
        "../scripts/cutouts.py"


rule views:
    """PNG/NPY views of one field's cutouts, scaled over the whole field."""
    input:
        manifest=f"{RESULTS}/cutouts/{{field}}/manifest.parquet",
        fits=f"{RESULTS}/cutouts/{{field}}/fits",
        sample=f"{RESULTS}/cutouts/{{field}}/pixel_sample.npy",
    output:
        views=directory(f"{RESULTS}/views/{{field}}"),
    log:
        f"{RESULTS}/logs/views/{{field}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/views/{{field}}.tsv"
    conda:
        "../envs/dataset.yaml"
    threads: 2
    params:
        views=config["views"],
    script:
        "../scripts/views.py"
