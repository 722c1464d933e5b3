# Stage 1: catalogue -> typed Parquet with one documented schema.


rule download:
    """Fetch a configured input file (config `download`: path -> URL)."""
    output:
        "{path}",
    log:
        "results/downloads/{path}.log",
    wildcard_constraints:
        path="|".join(re.escape(p) for p in config["download"]) or "(?!x)x",
    retries: 2
    localrule: True
    conda:
        "../envs/download.yaml"
    params:
        url=lambda wildcards: config["download"][wildcards.path],
    shell:
        "curl --fail --location --silent --show-error --output {output}.part {params.url:q} 2> {log:q}"
        " && mv {output:q}.part {output:q}"


rule ingest:
    """Read the survey catalogue, validate it and write the schema's Parquet."""
    input:
        catalogue=config["catalogue"]["path"],
    output:
        sources=f"{RESULTS}/catalogue/sources.parquet",
        report=f"{RESULTS}/catalogue/ingest.json",
    log:
        f"{RESULTS}/logs/ingest.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest.tsv"
    priority: CRITICAL_PATH
    conda:
        "../envs/dataset.yaml"
    params:
        format=config["catalogue"]["format"],
        # the column map of the generic `table` format (None for the others)
        options=config["catalogue"].get("table"),
        class_ids=sorted(CLASSES),
    script:
        "../scripts/ingest.py"
