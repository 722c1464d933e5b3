"""A job killed at any moment, then `snakemake --unlock` and the same command: the outputs of an
uninterrupted run. And a full disk: a clear error, nothing half-written, a rerun that succeeds.

What a cluster does to a job (a time limit, a pre-empted node, an out-of-memory
kill) is done here: SIGKILL to the workflow's whole process group (Snakemake,
the job, its DataLoader workers, the private PostGIS server it started). Each
kill lands at a moment found from the job's own log, then the user's commands
follow: ``snakemake --unlock``, then the same command with
``--rerun-incomplete``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, world_readable_tmpdir
from test_workflow import ENV, SNAKEMAKE

from radiodet.detector.checkpoints import load_checkpoint

pytestmark = [pytest.mark.workflow, pytest.mark.postgis]

RESULTS = Path("results") / "sdc1-demo"
FIELD = "B1_1000h_0.3tr"

#: long enough to be killed mid-epoch, with DataLoader workers (the case a resume must get right)
TRAINING = {"epochs": 3, "batch_size": 2, "crop": 64, "crops_per_image": 2, "optimizer": "adamw", "lr": 0.002,
            "warmup_steps": 2, "workers": 1}


class Workflow:
    """Snakemake on a scratch copy of config/ and resources/, run the way a user runs it."""

    def __init__(self, workdir: Path, config: dict | None = None):
        self.workdir = Path(workdir)
        self.configfile = self.workdir / "config" / "config.yaml"
        if config is not None:
            self.configfile = self.workdir / "config" / "test.yaml"
            self.configfile.write_text(yaml.safe_dump(config))

    @classmethod
    def scratch(cls, prefix: str, change: Callable[[dict], None] | None = None) -> "Workflow":
        workdir = world_readable_tmpdir(prefix)
        shutil.copytree(REPO / "config", workdir / "config")
        shutil.copytree(REPO / "resources", workdir / "resources")
        config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
        if change is not None:
            change(config)
        return cls(workdir, config)

    @property
    def results(self) -> Path:
        return self.workdir / RESULTS

    def _command(self, *extra: str) -> list[str]:
        return SNAKEMAKE + ["--directory", str(self.workdir), "--configfile", str(self.configfile), *extra]

    def start(self, *extra: str) -> subprocess.Popen:
        """The workflow in a process group of its own (as a batch job is)."""
        return subprocess.Popen(self._command("--cores", "2", *extra), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)

    def run(self, *extra: str, timeout: int = 900, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(self._command("--cores", "2", *extra), capture_output=True, text=True,
                              timeout=timeout, env=ENV)
        if ok:
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
        return done

    def unlock(self) -> None:
        done = subprocess.run(self._command("--unlock"), capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    def kill_at(self, moment: Callable[[], bool], delay: float, *extra: str, timeout: float = 300) -> float:
        """Start the workflow, wait for ``moment()``, sleep ``delay`` s, SIGKILL its process group.

        Returns the seconds from the start to the kill. Fails the test when the
        workflow ended before the kill: that moment was never tested.
        """
        started = time.monotonic()
        run = self.start(*extra)
        deadline = started + timeout
        while not moment() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        alive = run.poll() is None
        if alive:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        # the private server detaches from the group; a killed node loses it too
        subprocess.run(["pkill", "-9", "-f", str(self.workdir / "results" / "postgis")], capture_output=True)
        assert alive, f"the run ended (rc {run.returncode}) before the kill: {run.stderr.read()[-3000:]}"
        killed_at = time.monotonic() - started
        # nothing of the job may run on (torchrun's workers sit in sessions of their own; DataLoader
        # workers die with their process: distributed.worker_dies_with_parent)
        deadline = time.monotonic() + 3
        while (left := processes_in(self.workdir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes of the killed workflow still run: {left}"
        return killed_at

    def time_from(self, moment: Callable[[], bool], *extra: str) -> float:
        """Seconds from ``moment()`` to the end of an uninterrupted run (the span kills can land in)."""
        run = self.start(*extra)
        while not moment() and run.poll() is None:
            time.sleep(0.01)
        seen = time.monotonic()
        assert run.wait(timeout=900) == 0, run.stderr.read()[-3000:]
        return time.monotonic() - seen

    def rerun_after_kill(self, *extra: str) -> None:
        """What the user does next: unlock, then the same command."""
        self.unlock()
        self.run(*extra, "--rerun-incomplete")


def processes_in(workdir: Path) -> list[str]:
    """The live processes whose working directory is ``workdir`` (Snakemake runs its jobs there)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == workdir.resolve():
                found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes().replace(bytes(1), b' ').decode()[:200]}")
        except OSError:  # gone, or a zombie
            continue
    return found


def log_exists(path: Path) -> Callable[[], bool]:
    return path.exists


def log_says(path: Path, text: str) -> Callable[[], bool]:
    def said() -> bool:
        try:
            return text in path.read_text()
        except FileNotFoundError:
            return False
    return said


def _same_assignments(a: pd.DataFrame, b: pd.DataFrame) -> None:
    order = ["source_id", "cutout_id"]
    pd.testing.assert_frame_equal(a.sort_values(order).reset_index(drop=True),
                                  b.sort_values(order).reset_index(drop=True))


# ---------------------------------------------------------------------------
# the index job (the private PostGIS start-up, the load, the join)


def test_the_index_job_killed_at_any_moment_reruns_to_the_same_assignments():
    """SIGKILL at 10 moments spread over the index job, then `--unlock` and the same command:
    7 while a private cluster is made from nothing (initdb, start-up, load, join), 3 with one
    already made. The moments are fractions of the job's own duration, measured first, so
    they land inside the job on a fast machine as on a slow one."""
    flow = Workflow.scratch("radiodet-kill-index-")
    postgis = flow.workdir / "results" / "postgis"
    index_log = flow.results / "logs" / "index.log"
    forced = ("--until", "index", "--forcerun", "index")
    try:
        flow.run("--until", "index")
        assignments = flow.results / "index" / "assignments.parquet"
        reference = pd.read_parquet(assignments)
        assert len(reference) > 5000
        shutil.rmtree(postgis)
        index_log.unlink()
        cold = flow.time_from(log_exists(index_log), *forced)
        index_log.unlink()
        warm = flow.time_from(log_exists(index_log), *forced)
        # up to 0.6 of the measured span: a run may be a little faster than the one measured
        moments = [(True, cold * f) for f in (0.0, 0.08, 0.16, 0.25, 0.35, 0.45, 0.6)]
        moments += [(False, warm * f) for f in (0.1, 0.3, 0.5)]
        for fresh_cluster, delay in moments:
            if fresh_cluster:
                shutil.rmtree(postgis, ignore_errors=True)
            index_log.unlink(missing_ok=True)
            flow.kill_at(log_exists(index_log), delay, *forced)
            flow.rerun_after_kill("--until", "index")
            _same_assignments(pd.read_parquet(assignments), reference)
    finally:
        shutil.rmtree(flow.workdir, ignore_errors=True)


# ---------------------------------------------------------------------------
# coco, train, predict: one uninterrupted run, then each stage killed at 3 moments


@pytest.fixture(scope="module")
def trained():
    """The demo workflow up to the field's prediction, with a short but real training."""
    def change(config):
        config["train"] = dict(TRAINING)
    flow = Workflow.scratch("radiodet-kill-", change)
    flow.run("--until", "predict")
    yield flow
    shutil.rmtree(flow.workdir, ignore_errors=True)


def _coco_content(coco_dir: Path) -> dict:
    content = {}
    for path in sorted(coco_dir.glob("instances_*.json")):
        data = json.loads(path.read_text())
        data.pop("info", None)  # holds the date it was written
        content[path.name] = data
    content["images"] = {str(p.relative_to(coco_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in sorted((coco_dir / "images").rglob("*")) if p.is_file()}
    return content


def test_the_coco_job_killed_at_three_moments_reruns_to_the_same_dataset(trained):
    coco_dir = trained.results / "coco"
    reference = _coco_content(coco_dir)
    assert reference["instances_train.json"]["annotations"]
    coco_log = trained.results / "logs" / "coco.log"
    forced = ("--until", "coco", "--forcerun", "coco")
    coco_log.unlink()
    span = trained.time_from(log_exists(coco_log), *forced)
    assert _coco_content(coco_dir) == reference  # a forced rerun writes the same
    for delay in (0.0, 0.25 * span, 0.5 * span):
        coco_log.unlink(missing_ok=True)
        trained.kill_at(log_exists(coco_log), delay, *forced)
        trained.rerun_after_kill("--until", "coco")
        assert _coco_content(coco_dir) == reference, f"kill {delay} s after the coco log appeared"
        assert not list(coco_dir.parent.glob(".coco.*tmp*")), "a temporary of the killed writer is left"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_the_train_job_killed_mid_epoch_resumes_to_the_same_weights(trained):
    """Killed in epoch 0 (no checkpoint yet: starts over), mid-epoch 1 (resumes from epoch 0's
    checkpoint, DataLoader workers and all) and after the last epoch: the same model.pth."""
    train_dir = trained.results / "train"
    reference = _weights(train_dir / "model.pth")
    reference_loss = pd.read_csv(train_dir / "loss.csv").drop(columns="seconds")
    train_log = trained.results / "logs" / "train.log"
    moments = [("in epoch 0", log_says(train_log, "epoch 0 step 1:"), 0.2),
               ("mid-epoch 1", log_says(train_log, "epoch 0 done"), 0.3),
               ("after the last epoch", log_says(train_log, f"epoch {TRAINING['epochs'] - 1} done"), 0.0)]
    for what, moment, delay in moments:
        shutil.rmtree(train_dir / "checkpoints")  # a fresh training, killed part-way
        train_log.unlink(missing_ok=True)
        trained.kill_at(moment, delay, "--until", "train", "--forcerun", "train")
        trained.rerun_after_kill("--until", "train")
        resumed = _weights(train_dir / "model.pth")
        assert resumed.keys() == reference.keys()
        for name, tensor in reference.items():
            assert torch.equal(resumed[name], tensor), f"killed {what}: weights {name} differ"
        pd.testing.assert_frame_equal(pd.read_csv(train_dir / "loss.csv").drop(columns="seconds"), reference_loss)


def test_the_predict_job_killed_mid_field_reruns_to_the_same_catalogue(trained):
    predict = trained.results / "predict"
    reference = pd.read_parquet(predict / f"{FIELD}.parquet")
    reference_submission = (predict / f"{FIELD}.sdc1.txt").read_text()
    assert len(reference) > 100
    predict_log = trained.results / "logs" / "predict" / f"{FIELD}.log"
    moments = [("in detection", log_exists(predict_log), 0.3),
               ("in measurement", log_says(predict_log, "detections with score"), 0.1),
               ("writing the catalogue", log_says(predict_log, "measuring"), 0.5)]
    for what, moment, delay in moments:
        predict_log.unlink(missing_ok=True)
        trained.kill_at(moment, delay, "--until", "predict", "--forcerun", "predict")
        trained.rerun_after_kill("--until", "predict")
        pd.testing.assert_frame_equal(pd.read_parquet(predict / f"{FIELD}.parquet"), reference,
                                      obj=f"catalogue after a kill {what}")
        assert (predict / f"{FIELD}.sdc1.txt").read_text() == reference_submission


# ---------------------------------------------------------------------------
# a full disk


def _kib(path: Path) -> int:
    """Disk usage in KiB, as ``du -sk`` counts it (whole blocks, as tmpfs charges them)."""
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def _mount_tmpfs(path: Path, kib: int, *, remount: bool = False) -> None:
    options = f"remount,size={kib}k" if remount else f"size={kib}k"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, capture_output=True)


def _temporaries(results: Path) -> list[Path]:
    return [p for p in results.rglob(".*") if ".tmp" in p.name or p.name.endswith(".old")]


@pytest.fixture
def small_disk_workflow():
    """A workflow whose results/ is a tmpfs the test sizes (the database elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs as results/ needs root (make test runs as root in CI)")

    def change(config):
        config["database"]["private_dir"] = "postgis"
    flow = Workflow.scratch("radiodet-full-disk-", change)
    (flow.workdir / "results").mkdir()
    try:
        _mount_tmpfs(flow.workdir / "results", 1024)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(flow.workdir, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here: {exc.stderr.strip()}")
    yield flow
    subprocess.run(["pkill", "-9", "-f", str(flow.workdir / "postgis")], capture_output=True)
    subprocess.run(["umount", "-l", str(flow.workdir / "results")], capture_output=True)
    shutil.rmtree(flow.workdir, ignore_errors=True)


def _fails_for_space(flow: Workflow, stage_log: Path, outputs: list[Path], *extra: str) -> None:
    """The run fails; the stage's log names one of its outputs with "no space left"; none is left."""
    done = flow.run(*extra, ok=False)
    assert done.returncode != 0, "the stage fitted: the test's disk is too large"
    text = stage_log.read_text()
    named = [str(p) for p in outputs if f"{p}: no space left" in text or f"{p}/" in text and "no space left" in text]
    assert named, f"the log names none of {outputs} with 'no space left': {text[-3000:]}"
    left = [p for p in outputs if (flow.workdir / p).exists()]
    assert not left, f"the failed job left {left}"
    assert not _temporaries(flow.results), _temporaries(flow.results)


def test_a_full_disk_in_cutouts_and_coco_fails_naming_the_path_and_the_rerun_succeeds(small_disk_workflow):
    flow = small_disk_workflow
    reference = Workflow.scratch("radiodet-full-disk-ref-")
    try:
        reference.run("--until", "coco")
        coco_kib = _kib(reference.results / "coco")
        before_coco_kib = _kib(reference.results) - coco_kib
        # the catalogue fits, the cutouts do not
        assert _kib(reference.results / "catalogue") + 256 < 4096 < _kib(reference.results / "cutouts")
        _mount_tmpfs(flow.workdir / "results", 4096, remount=True)
        cutouts = RESULTS / "cutouts" / FIELD
        _fails_for_space(flow, flow.results / "logs" / "cutouts" / f"{FIELD}.log",
                         [cutouts / "fits", cutouts / "manifest.parquet", cutouts / "pixel_sample.npy"],
                         "--until", "cutouts")
        # everything before COCO fits, COCO does not
        _mount_tmpfs(flow.workdir / "results", before_coco_kib + coco_kib // 2, remount=True)
        _fails_for_space(flow, flow.results / "logs" / "coco.log", [RESULTS / "coco"], "--until", "coco")
        assert (flow.workdir / cutouts / "manifest.parquet").exists()
        # space freed: the same command succeeds, with the outputs of a run that never ran out
        _mount_tmpfs(flow.workdir / "results", 256 * 1024, remount=True)
        flow.run("--until", "coco")
        assert _coco_content(flow.results / "coco") == _coco_content(reference.results / "coco")
        pd.testing.assert_frame_equal(pd.read_parquet(flow.workdir / cutouts / "manifest.parquet"),
                                      pd.read_parquet(reference.workdir / cutouts / "manifest.parquet"))
    finally:
        subprocess.run(["pkill", "-9", "-f", str(reference.workdir / "results" / "postgis")], capture_output=True)
        shutil.rmtree(reference.workdir, ignore_errors=True)
