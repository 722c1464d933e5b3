# Stage 3: footprints and sources -> PostGIS, one set-based spatial join.


rule index_sources:
    """Stage the sources in PostGIS (loaded, in the fields' planes, indexed) while the cutouts are cut."""
    input:
        sources=rules.ingest.output.sources,
        images=lambda wildcards: [FIELDS.loc[field, "image"] for field in FIELD_NAMES],
    output:
        staged=f"{RESULTS}/index/staged_sources.json",
    log:
        f"{RESULTS}/logs/index_sources.log",
    benchmark:
        f"{RESULTS}/benchmarks/index_sources.tsv"
    priority: STAGING
    conda:
        "../envs/postgis.yaml"
    # a private PostGIS server runs at most threads - 1 parallel workers (radiodet.db)
    threads: 1
    params:
        survey=SURVEY,
        fields=FIELD_NAMES,  # the images' fields, in the same order
        database=config["database"],
        margin_px=config["index"]["margin_px"],
    script:
        "../scripts/index_sources.py"


rule index:
    """Load cutout footprints into PostGIS, attach the staged sources and assign sources to cutouts."""
    input:
        sources=rules.ingest.output.sources,
        staged=rules.index_sources.output.staged,
        manifests=get_index_manifests,
    output:
        assignments=f"{RESULTS}/index/assignments.parquet",
        cutouts=f"{RESULTS}/index/cutouts.parquet",
        summary=f"{RESULTS}/index/index.json",
    log:
        f"{RESULTS}/logs/index.log",
    benchmark:
        f"{RESULTS}/benchmarks/index.tsv"
    priority: CRITICAL_PATH
    conda:
        "../envs/postgis.yaml"
    # a private PostGIS server runs at most threads - 1 parallel workers (radiodet.db)
    threads: 1
    params:
        survey=SURVEY,
        centres=field_centres(),
        database=config["database"],
        margin_px=config["index"]["margin_px"],
        allow_empty=config["index"]["allow_empty"],
    script:
        "../scripts/index.py"
