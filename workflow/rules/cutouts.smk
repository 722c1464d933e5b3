# Stage 2: images -> FITS cutouts with their own WCS, a manifest, PNG/NPY views.
#
# A field of at most cutouts.max_per_job cutouts is cut by one job (rule cutouts,
# then rule views). A bigger one is cut by one job per part, a run of whole rows
# of cutouts (rules cutouts_part, views_part), and the parts are gathered into
# the same field outputs (rules cutouts_gather, views_gather: hard links). The index
# reads the parts' manifests (common.smk: get_index_manifests) and need not wait.


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
    wildcard_constraints:
        field=ONE_JOB_FIELDS,
    conda:
        "../envs/dataset.yaml"
    params:
        cutouts=config["cutouts"],
        regions=config["split"]["regions"],
        plane=config["image"]["plane"],
        beam=config["image"]["beam"],
        part=0,
        parts=1,
    script:
        "../scripts/cutouts.py"


rule cutouts_part:
    """Cut one part (a run of whole rows of cutouts) of a field too big for one job."""
    input:
        image=get_image,
    output:
        fits=directory(f"{PARTS}/{{field}}/{{part}}/fits"),
        manifest=f"{PARTS}/{{field}}/{{part}}/manifest.parquet",
        sample=f"{PARTS}/{{field}}/{{part}}/pixel_sample.npy",
    log:
        f"{RESULTS}/logs/cutouts/{{field}}/{{part}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cutouts/{{field}}/{{part}}.tsv"
    wildcard_constraints:
        field=SPLIT_FIELDS,
    priority: CUTOUT_PARTS_FIRST
    conda:
        "../envs/dataset.yaml"
    params:
        cutouts=config["cutouts"],
        regions=config["split"]["regions"],
        plane=config["image"]["plane"],
        beam=config["image"]["beam"],
        part=lambda wildcards: int(wildcards.part),
        parts=lambda wildcards: CUTOUT_PARTS[wildcards.field],
    script:
        "../scripts/cutouts.py"


rule cutouts_gather:
    """The field's cutouts, manifest and pixel sample from its parts (equal to one job's)."""
    input:
        manifests=part_paths("manifest.parquet"),
        samples=part_paths("pixel_sample.npy"),
        fits=part_paths("fits"),
    output:
        fits=directory(f"{RESULTS}/cutouts/{{field}}/fits"),
        manifest=f"{RESULTS}/cutouts/{{field}}/manifest.parquet",
        sample=f"{RESULTS}/cutouts/{{field}}/pixel_sample.npy",
    log:
        f"{RESULTS}/logs/cutouts/{{field}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cutouts_gather/{{field}}.tsv"
    wildcard_constraints:
        field=SPLIT_FIELDS,
    localrule: True
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/gather_cutouts.py"


rule views:
    """PNG/NPY views of one field's cutouts (their pixels read from the image), scaled over the whole field."""
    input:
        image=get_image,
        manifest=f"{RESULTS}/cutouts/{{field}}/manifest.parquet",
        sample=f"{RESULTS}/cutouts/{{field}}/pixel_sample.npy",
    output:
        views=directory(f"{RESULTS}/views/{{field}}"),
    log:
        f"{RESULTS}/logs/views/{{field}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/views/{{field}}.tsv"
    wildcard_constraints:
        field=ONE_JOB_FIELDS,
    conda:
        "../envs/dataset.yaml"
    threads: 2
    params:
        views=config["views"],
    script:
        "../scripts/views.py"


rule views_part:
    """PNG/NPY views of one part's cutouts, scaled over the whole field (the gathered sample)."""
    input:
        image=get_image,
        manifest=f"{PARTS}/{{field}}/{{part}}/manifest.parquet",
        sample=f"{RESULTS}/cutouts/{{field}}/pixel_sample.npy",
    output:
        views=directory(f"{PARTS}/{{field}}/{{part}}/views"),
    log:
        f"{RESULTS}/logs/views/{{field}}/{{part}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/views/{{field}}/{{part}}.tsv"
    wildcard_constraints:
        field=SPLIT_FIELDS,
    conda:
        "../envs/dataset.yaml"
    threads: 1  # the parts run side by side, and beside the index
    params:
        views=config["views"],
    script:
        "../scripts/views.py"


rule views_gather:
    """The field's views directory from its parts' (equal to one job's)."""
    input:
        views=part_paths("views"),
    output:
        views=directory(f"{RESULTS}/views/{{field}}"),
    log:
        f"{RESULTS}/logs/views/{{field}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/views_gather/{{field}}.tsv"
    wildcard_constraints:
        field=SPLIT_FIELDS,
    localrule: True
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/gather_views.py"
