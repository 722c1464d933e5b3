"""Interruptions, bad configs, the database under concurrency, and credentials."""

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from conftest import (
    REPO,
    SDC1_IMAGE,
    gaussian_image,
    sky_header,
    world_readable_tmpdir,
    write_image,
)
from test_workflow import ENV, SNAKEMAKE

from radiodet.cutouts import CutoutConfig, make_cutouts
from radiodet.errors import InputError
from radiodet.index import build_index

CUT = ("import sys; from radiodet.cutouts import CutoutConfig, make_cutouts; "
       "make_cutouts(sys.argv[1], sys.argv[2] + '/fits', sys.argv[2] + '/manifest.parquet', "
       "sys.argv[2] + '/sample.npy', field='big', config=CutoutConfig(size=64))")


def _run_cutouts(image, out_dir):
    return subprocess.Popen([sys.executable, "-c", CUT, str(image), str(out_dir)],
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, start_new_session=True)


def test_a_stage_killed_with_sigkill_leaves_nothing_and_the_rerun_matches(tmp_path):
    image = write_image(tmp_path / "big.fits", gaussian_image(2400, 2400, [], noise=1.0), sky_header(2400, 2400))
    reference = tmp_path / "uninterrupted"
    assert _run_cutouts(image, reference).wait(timeout=600) == 0
    n_files = len(list((reference / "fits").glob("*.fits")))
    assert n_files == 38 * 38
    killed = tmp_path / "killed"
    process = _run_cutouts(image, killed)
    deadline = time.monotonic() + 120
    # kill it while it is writing cutouts (the temporary directory exists, the final one not yet)
    while time.monotonic() < deadline and not any(killed.glob(".fits.*.tmpdir/*.fits")):
        time.sleep(0.01)
    time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    # nothing complete-looking was left: no final directory, no manifest
    assert not (killed / "fits").exists() and not (killed / "manifest.parquet").exists()
    # the rerun cleans the leftovers and produces the same outputs
    assert _run_cutouts(image, killed).wait(timeout=600) == 0
    assert not list(killed.glob(".*tmp*"))
    names = sorted(p.name for p in (reference / "fits").glob("*.fits"))
    assert names == sorted(p.name for p in (killed / "fits").glob("*.fits"))
    for name in names[::97]:
        assert (reference / "fits" / name).read_bytes() == (killed / "fits" / name).read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(reference / "manifest.parquet"),
                                  pd.read_parquet(killed / "manifest.parquet"))


def _dry_run(workdir, config_path):
    return subprocess.run(SNAKEMAKE + ["--directory", str(workdir), "-n", "--configfile", str(config_path)],
                          capture_output=True, text=True, timeout=300, env=ENV)


@pytest.fixture
def scratch_copy():
    workdir = world_readable_tmpdir("radiodet-trust-")
    shutil.copytree(REPO / "config", workdir / "config")
    shutil.copytree(REPO / "resources", workdir / "resources")
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


def test_a_config_that_fails_the_schema_stops_with_the_key_named(scratch_copy):
    config = yaml.safe_load((scratch_copy / "config" / "config.yaml").read_text())
    config["cutouts"]["size"] = "big"
    (scratch_copy / "config" / "bad.yaml").write_text(yaml.safe_dump(config))
    done = _dry_run(scratch_copy, scratch_copy / "config" / "bad.yaml")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "'big' is not of type 'integer'" in output and "size" in output


def test_a_password_in_the_config_is_refused_and_never_echoed(scratch_copy):
    config = yaml.safe_load((scratch_copy / "config" / "config.yaml").read_text())
    config["database"]["url"] = "postgresql://radio:Hunter2-Secret@db.example.org/radio"
    (scratch_copy / "config" / "pw.yaml").write_text(yaml.safe_dump(config))
    done = _dry_run(scratch_copy, scratch_copy / "config" / "pw.yaml")
    assert done.returncode != 0 and "must not contain a password" in done.stdout + done.stderr
    assert "Hunter2-Secret" not in done.stderr + done.stdout


def _index_worker(args):
    sources, manifest, out, survey, url = args
    return build_index(sources, [manifest], out / f"{survey}-{os.getpid()}.parquet",
                       out / f"{survey}-{os.getpid()}.json", survey=survey, database_url=url,
                       private_dir=out / "unused", schema="radiodet_concurrent", margin_px=0.0)["pairs"]


def test_concurrent_indexing_is_safe(tmp_path, postgis_url, engine):
    from radiodet.ingest import ingest

    make_cutouts(SDC1_IMAGE, tmp_path / "fits", tmp_path / "m.parquet", tmp_path / "s.npy", field="f",
                 config=CutoutConfig(size=205))
    ingest(REPO / "resources" / "sdc1" / "truth_B1_0.3tr.cat", "sdc1_truth", tmp_path / "src.parquet",
           class_ids={1, 2, 3})
    jobs = [(tmp_path / "src.parquet", tmp_path / "m.parquet", tmp_path, survey, postgis_url)
            for survey in ("alpha", "alpha", "beta", "beta", "gamma")]
    with multiprocessing.get_context("spawn").Pool(5) as pool:
        pairs = pool.map(_index_worker, jobs)
    assert len(set(pairs)) == 1  # every run found the same pairs
    with engine.connect() as conn:
        for survey in ("alpha", "beta", "gamma"):
            counts = [conn.execute(sa.text(f"SELECT count(*) FROM radiodet_concurrent.{t} WHERE survey = :s"),
                                   {"s": survey}).scalar() for t in ("sources", "cutouts", "assignments")]
            assert counts == [17731, 30, pairs[0]], survey


def test_image_and_catalogue_that_do_not_overlap(tmp_path, postgis_url):
    far = sky_header(300, 300, ra0=120.0, dec0=40.0)
    image = write_image(tmp_path / "far.fits", gaussian_image(300, 300, [], noise=1.0), far)
    make_cutouts(image, tmp_path / "fits", tmp_path / "m.parquet", tmp_path / "s.npy", field="far",
                 config=CutoutConfig(size=100))
    from radiodet.ingest import ingest

    ingest(REPO / "resources" / "sdc1" / "truth_B1_0.3tr.cat", "sdc1_truth", tmp_path / "src.parquet",
           class_ids={1, 2, 3})
    with pytest.raises(InputError, match="do not overlap") as err:
        build_index(tmp_path / "src.parquet", [tmp_path / "m.parquet"], tmp_path / "a.parquet", tmp_path / "a.json",
                    survey="far", database_url=postgis_url, private_dir=tmp_path / "unused")
    assert "truth_B1_0.3tr.cat" in str(err.value) and "far.fits" in str(err.value)
    assert not (tmp_path / "a.parquet").exists()
    summary = build_index(tmp_path / "src.parquet", [tmp_path / "m.parquet"], tmp_path / "a.parquet",
                          tmp_path / "a.json", survey="far", database_url=postgis_url,
                          private_dir=tmp_path / "unused", allow_empty=True)
    assert summary["pairs"] == 0 and pd.read_parquet(tmp_path / "a.parquet").empty


def test_index_with_a_password_in_the_environment_never_logs_it(scratch_copy, postgis_url):
    socket_dir = postgis_url.split("host=")[1]
    config = yaml.safe_load((scratch_copy / "config" / "config.yaml").read_text())
    config["database"]["url"] = f"postgresql://postgres@/postgres?host={socket_dir}"
    config["database"]["schema"] = "radiodet_pw"
    (scratch_copy / "config" / "pw.yaml").write_text(yaml.safe_dump(config))
    secret = "Sup3r-Secret-Pw"
    done = subprocess.run(SNAKEMAKE + ["--directory", str(scratch_copy), "--cores", "1", "--until", "index",
                                       "--configfile", str(scratch_copy / "config" / "pw.yaml")],
                          capture_output=True, text=True, timeout=600, env={**ENV, "PGPASSWORD": secret})
    assert done.returncode == 0, done.stderr[-3000:]
    assert secret not in done.stdout + done.stderr
    logs = [p for p in scratch_copy.rglob("*") if p.is_file() and (p.suffix in (".log", ".json") or "log" in p.parts)]
    assert logs
    for path in logs:
        assert secret not in path.read_text(errors="replace"), path
    assert json.loads((scratch_copy / "results" / "sdc1-demo" / "index" / "index.json").read_text())["pairs"] > 0


def test_unreachable_database_fails_the_job_with_a_clear_error(scratch_copy, tmp_path):
    config = yaml.safe_load((scratch_copy / "config" / "config.yaml").read_text())
    config["database"]["url"] = f"postgresql://nobody@/nodb?host={tmp_path}"
    (scratch_copy / "config" / "down.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(SNAKEMAKE + ["--directory", str(scratch_copy), "--cores", "1", "--until", "index",
                                       "--configfile", str(scratch_copy / "config" / "down.yaml")],
                          capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode != 0
    # the first job that needs the database (staging the sources) says why it failed, and leaves nothing
    results = scratch_copy / "results" / "sdc1-demo"
    log = (results / "logs" / "index_sources.log").read_text()
    assert "cannot connect to the database" in log
    assert not (results / "index" / "staged_sources.json").exists()
    assert not (results / "index" / "assignments.parquet").exists()


def _postgis_answers(url: str) -> bool:
    from radiodet.db import engine_for

    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
            return bool(conn.execute(sa.text("SELECT postgis_version()")).scalar())
    finally:
        engine.dispose()


def test_a_half_made_private_cluster_is_made_again(postgis_url, caplog):
    """An initdb killed half-way (PG_VERSION written, no databases yet) is detected, removed and redone."""
    from radiodet.db import private_server

    base = world_readable_tmpdir("radiodet-halfmade-")
    try:
        root = base / "postgis"
        (root / "data").mkdir(parents=True)
        (root / "data" / "PG_VERSION").write_text("15\n")
        (root / "data.initdb-4242").mkdir()  # the scratch directory of an initdb that was killed
        with caplog.at_level("WARNING"), private_server(root) as url:
            assert _postgis_answers(url)
        assert "is not a complete cluster" in caplog.text and "data.initdb-4242" in caplog.text
        assert not (root / "data.initdb-4242").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


SERVE = ("import sys, time; from radiodet.db import private_server\n"
         "with private_server(sys.argv[1]) as url:\n"
         "    print(url, flush=True); time.sleep(600)\n")


def test_a_killed_private_server_is_started_again(postgis_url, caplog):
    """SIGKILL to the job and to its server (a pre-empted node) leaves a stale postmaster.pid; the rerun copes."""
    from radiodet.db import private_server

    base = world_readable_tmpdir("radiodet-killed-")
    root = base / "postgis"
    try:
        job = subprocess.Popen([sys.executable, "-c", SERVE, str(root)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO / "src")}, start_new_session=True)
        assert job.stdout.readline().startswith("postgresql")
        postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
        os.killpg(job.pid, signal.SIGKILL)
        os.kill(postmaster, signal.SIGKILL)
        job.wait(timeout=30)
        for _ in range(100):  # the postmaster is gone once /proc forgets it
            if not os.path.exists(f"/proc/{postmaster}"):
                break
            time.sleep(0.1)
        assert (root / "data" / "postmaster.pid").exists()
        with caplog.at_level("WARNING"), private_server(root) as url:
            assert _postgis_answers(url)
        assert "stale" in caplog.text
    finally:
        subprocess.run(["pkill", "-9", "-f", str(root)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_a_full_file_system_names_the_output_and_leaves_nothing(tmp_path):
    """ENOSPC from any writer (plain files, pyarrow, a file inside an atomic directory) becomes
    NoSpaceError naming the destination, after the partial output is removed."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from radiodet.atomic import atomic_directory, atomic_path
    from radiodet.errors import NoSpaceError

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (make test runs as root in CI)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        with pytest.raises(NoSpaceError, match=r"coco: no space left on the device while writing it "
                                               r"\(its instances_train.json\)"):
            with atomic_directory(disk / "coco") as scratch:
                with atomic_path(scratch / "instances_train.json") as tmp:
                    tmp.write_bytes(bytes(200_000))
        with pytest.raises(NoSpaceError, match=r"x.parquet: no space left on the device") as caught:
            with atomic_path(disk / "x.parquet") as tmp:
                pq.write_table(pa.table({"a": np.random.default_rng(1).random(100_000)}), tmp)
        assert caught.value.path == str(disk / "x.parquet") and "run the same command again" in str(caught.value)
        assert list(disk.iterdir()) == []
        with atomic_path(disk / "small.txt") as tmp:  # what fits is written as ever
            tmp.write_text("fits")
        assert (disk / "small.txt").read_text() == "fits"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
