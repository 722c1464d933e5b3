# Stage 3: footprints and sources -> PostGIS, one set-based spatial join.


rule index:
    """Load sources and cutout footprints into PostGIS and assign sources to cutouts."""
    input:
        sources=rules.ingest.output.sources,
        manifests=get_manifests,
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
    params:
        survey=SURVEY,
        centres=field_centres(),
        database=config["database"],
        margin_px=config["index"]["margin_px"],
        allow_empty=config["index"]["allow_empty"],
    script:
        "../scripts/index.py"
