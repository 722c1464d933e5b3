"""The small SDC1 workflow through a real single-node SLURM, as users run it.

`snakemake --profile slurm` with the example profile installed where
Snakemake looks for profiles (here: $XDG_CONFIG_HOME/snakemake/slurm), so the
executor is SLURM; the jobs must show SLURM job ids and the outputs must equal
a local run's. Skipped, with the reason, only where SLURM cannot be started
(not root, no Debian packages); `make test` sets RADIODET_REQUIRE_SLURM=1 when
it could install them, and then a missing SLURM fails instead.
"""

import json
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest
import slurm_cluster
import yaml
from conftest import REPO, world_readable_tmpdir
from test_workflow import ENV, SNAKEMAKE

pytestmark = [pytest.mark.slurm, pytest.mark.postgis]

RESULTS = "results/sdc1-demo"


@pytest.fixture(scope="module")
def slurm():
    reason = slurm_cluster.why_not_available()
    if reason:
        if os.environ.get("RADIODET_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM test required but impossible: {reason}")
        pytest.skip(reason)
    state = world_readable_tmpdir("radiodet-slurm-")
    slurm_cluster.start(state)
    yield state
    slurm_cluster.stop()
    shutil.rmtree(state, ignore_errors=True)


def _workdir(name: str, max_per_job: int | None = None) -> tuple:
    workdir = world_readable_tmpdir(f"radiodet-{name}-")
    shutil.copytree(REPO / "config", workdir / "config")
    shutil.copytree(REPO / "resources", workdir / "resources")
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["train"] = {"activate": False}  # the dataset stages: what every user runs first
    if max_per_job is not None:
        config["cutouts"]["max_per_job"] = max_per_job
    (workdir / "config" / "small.yaml").write_text(yaml.safe_dump(config))
    return workdir, workdir / "config" / "small.yaml"


def test_the_workflow_runs_through_slurm_and_matches_a_local_run(slurm, postgis_url):
    """The cluster run cuts the field in 5 parts, each its own SLURM job; the local run cuts it in one."""
    local, local_config = _workdir("local")
    done = subprocess.run(SNAKEMAKE + ["--directory", str(local), "--cores", "2", "--configfile", str(local_config)],
                          capture_output=True, text=True, timeout=900, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]

    cluster, cluster_config = _workdir("cluster", max_per_job=4)
    xdg = cluster / "xdg"
    shutil.copytree(REPO / "workflow" / "profiles" / "slurm", xdg / "snakemake" / "slurm")
    command = ["timeout", "-s", "KILL", "1200"] + SNAKEMAKE + [
        "--directory", str(cluster), "--profile", "slurm", "--configfile", str(cluster_config),
        # no accounting daemon on this one-node cluster: poll squeue; no account to charge
        "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs", "--jobs", "4"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cluster,
                          env={**ENV, "XDG_CONFIG_HOME": str(xdg)})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    # the jobs really went through the scheduler
    job_ids = set(re.findall(r"SLURM jobid (\d+)", output))
    assert len(job_ids) >= 8, output[-3000:]
    slurm_logs = list((cluster / "results" / "slurm-logs").rglob("*.log"))
    assert {p.stem for p in slurm_logs} >= job_ids
    known = subprocess.run(["squeue", "-t", "all", "-h", "-o", "%i %T"], capture_output=True, text=True).stdout
    finished = {line.split()[0] for line in known.splitlines() if line.split()[1] == "COMPLETED"}
    assert job_ids <= finished
    # the parts of the field were SLURM jobs of their own; their gathering ran on the submitting node
    for rule in ("cutouts_part", "views_part"):
        part_logs = list((cluster / "results" / "slurm-logs" / f"rule_{rule}").rglob("*.log"))
        assert len({p.stem for p in part_logs} & job_ids) == 5, (rule, part_logs)
    assert not list((cluster / "results" / "slurm-logs").glob("rule_*_gather"))
    # and produced what a local run produces
    for split in ("train", "val", "test"):
        a = json.loads((local / RESULTS / "coco" / f"instances_{split}.json").read_text())
        b = json.loads((cluster / RESULTS / "coco" / f"instances_{split}.json").read_text())
        assert a == b, split
    for table in ("boxes/boxes.parquet", "index/assignments.parquet", "filter/snr.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(local / RESULTS / table),
                                      pd.read_parquet(cluster / RESULTS / table))
    assert (json.loads((local / RESULTS / "crosscheck" / "crosscheck.json").read_text())
            == json.loads((cluster / RESULTS / "crosscheck" / "crosscheck.json").read_text()))
    for workdir in (local, cluster):
        shutil.rmtree(workdir, ignore_errors=True)
