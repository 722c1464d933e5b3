# Simulated MGCLS-format inputs (known truth), for tests and the MGCLS demo.


if config["simulate"]["activate"]:

    rule simulate:
        """Write the simulated fields, rms maps and catalogue the field table names."""
        output:
            images=[FIELDS.loc[f["name"], "image"] for f in config["simulate"]["fields"]],
            rms_maps=[FIELDS.loc[f["name"], "rms_map"] for f in config["simulate"]["fields"]],
            catalogue=config["catalogue"]["path"],
            truth=f"{RESULTS}/simulated/truth.parquet",
        log:
            f"{RESULTS}/logs/simulate.log",
        conda:
            "../envs/dataset.yaml"
        params:
            simulate=config["simulate"],
        script:
            "../scripts/simulate.py"
