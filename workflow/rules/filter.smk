# Stage 4: local noise, primary beam, SNR and the k x rms cut.


rule filter:
    """SNR of every (source, cutout) pair; keep those with SNR >= k."""
    input:
        unpack(get_filter_maps),
        assignments=f"{RESULTS}/index/assignments.parquet",
        sources=f"{RESULTS}/catalogue/sources.parquet",
        manifests=get_manifests,
    output:
        snr=f"{RESULTS}/filter/snr.parquet",
        summary=f"{RESULTS}/filter/filter.json",
    params:
        fields=FIELD_NAMES,
        filter=config["filter"],
    log:
        f"{RESULTS}/logs/filter.log",
    benchmark:
        f"{RESULTS}/benchmarks/filter.tsv"
    conda:
        "../envs/dataset.yaml"
    script:
        "../scripts/filter.py"
