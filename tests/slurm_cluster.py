"""A single-node SLURM (Debian's slurm-wlm and munge) for end-to-end tests.

Facts that work on Debian 12 (see the README, "Testing under SLURM"):
munged runs as the munge user with /run/munge; slurm.conf must be
/etc/slurm/slurm.conf (the executor plugin strips SLURM_CONF inside jobs);
proctrack/linuxproc, task/none, select/cons_tres with CR_Core_Memory; no
accounting daemon, so the executor is told to poll with squeue, and MinJobAge
keeps finished jobs visible to squeue long enough.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

MARKER = "# written by the radiodet test suite"
CONF = Path("/etc/slurm/slurm.conf")
DAEMONS = ("slurmctld", "slurmd", "munged")


def why_not_available() -> str | None:
    """None when a single-node SLURM can be started here, else the reason."""
    if os.geteuid() != 0:
        return "not root: starting munged, slurmctld and slurmd needs root"
    missing = [b for b in ("slurmctld", "slurmd", "munged", "mungekey", "sinfo", "squeue", "sbatch")
               if not shutil.which(b)]
    if missing:
        return f"Debian packages slurm-wlm and munge are not installed (missing {', '.join(missing)})"
    if CONF.exists() and MARKER not in CONF.read_text():
        return f"{CONF} exists and was not written by these tests: not touching a real cluster's configuration"
    return None


def _memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 1024
    return 4096


def _slurm_conf(state: Path) -> str:
    cpus = os.cpu_count() or 2
    return f"""{MARKER}
ClusterName=radiodet-test
SlurmctldHost=localhost
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
SlurmUser=root
SlurmdUser=root
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mib()} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


def start(state: Path, *, timeout: float = 90.0) -> None:
    """Start munged, slurmctld and slurmd; return when the node is idle."""
    stop()
    state.mkdir(parents=True, exist_ok=True)
    for sub in ("ctld", "d"):
        (state / sub).mkdir(exist_ok=True)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(_slurm_conf(state))
    if not Path("/etc/munge/munge.key").exists():
        _run(["mungekey", "--create"])
        shutil.chown("/etc/munge/munge.key", "munge", "munge")
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    done = _run(["runuser", "-u", "munge", "--", "munged", "--force"])
    if done.returncode:
        raise RuntimeError(f"munged did not start: {done.stderr}")
    for command in (["slurmctld"], ["slurmd", "-N", "localhost"]):
        done = _run(command)
        if done.returncode:
            raise RuntimeError(f"{command[0]} did not start: {done.stderr}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state_line = _run(["sinfo", "-h", "-N", "-o", "%T"]).stdout.strip()
        if state_line in ("idle", "mixed", "allocated"):
            return
        time.sleep(1)
    logs = "".join((state / f).read_text()[-1500:] for f in ("slurmctld.log", "slurmd.log") if (state / f).exists())
    raise RuntimeError(f"the SLURM node did not become idle within {timeout} s:\n{logs}")


def stop() -> None:
    """Stop the daemons these tests start and remove their configuration (only when it is ours).

    A slurm.conf left behind with no controller running makes every later
    ``scontrol`` wait ~9 s for one, and the SLURM executor plugin calls it at
    each Snakemake start.
    """
    if CONF.exists() and MARKER not in CONF.read_text():
        return
    for daemon in DAEMONS:
        subprocess.run(["pkill", "-x", daemon], capture_output=True)
    time.sleep(1)
    CONF.unlink(missing_ok=True)
