# Stage 4: local noise, primary beam, SNR and the k x rms cut.


rule filter:
    """SNR of every (source, cutout) pair; keep those with SNR >= k."""
    input:
        unpack(get_filter_maps),
        assignments=rules.index.output.assignments,
        sources=rules.ingest.output.sources,
        manifests=get_manifests,
    output:
        snr=f"{RESULTS}/filter/snr.parquet",
        summary=f"{RESULTS}/filter/filter.json",
    log:
        f"{RESULTS}/logs/filter.log",
    benchmark:
        f"{RESULTS}/benchmarks/filter.tsv"
    priority: CRITICAL_PATH
    conda:
        "../envs/dataset.yaml"
    params:
        fields=FIELD_NAMES,
        filter=config["filter"],
    script:
        "../scripts/filter.py"
