# Stage 8 (end): the official SDC1 score and COCO mAP, detector next to PyBDSF.


rule score:
    """scores.csv and the completeness/precision plot for the test region."""
    input:
        sources=rules.ingest.output.sources,
        manifests=get_manifests,
        detector=expand(f"{RESULTS}/predict/{{field}}.parquet", field=FIELD_NAMES),
        pybdsf=expand(f"{RESULTS}/baseline/{{field}}.parquet", field=FIELD_NAMES),
        coco=f"{RESULTS}/score/coco_test.json",
    output:
        table=report(
            f"{RESULTS}/score/scores.csv", caption="../report/scores.rst", category="Detector", subcategory="Scores"
        ),
        plot=report(
            f"{RESULTS}/score/completeness_precision.png",
            caption="../report/completeness.rst",
            category="Detector",
            subcategory="Scores",
        ),
        detector=f"{RESULTS}/score/sdc1_detector.json",
        pybdsf=f"{RESULTS}/score/sdc1_pybdsf.json",
        truth=f"{RESULTS}/score/truth_test_region.txt",
        # exactly what the scorer was given, to re-run it by hand
        submission_detector=f"{RESULTS}/score/submission_detector.txt",
        submission_pybdsf=f"{RESULTS}/score/submission_pybdsf.txt",
    log:
        f"{RESULTS}/logs/score.log",
    benchmark:
        f"{RESULTS}/benchmarks/score.tsv"
    conda:
        "../envs/scoring.yaml"
    params:
        fields=FIELD_NAMES,
        regions=config["split"]["regions"].get(config["score"]["region"], []),
        calibration_regions=config["split"]["regions"].get(config["score"]["calibrate_on"], []),
        freq_mhz=config["score"]["sdc1_freq_mhz"],
    script:
        "../scripts/score.py"
