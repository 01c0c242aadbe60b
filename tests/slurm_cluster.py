"""A real single-node SLURM for the tests of the sbatch recipes (examples/slurm/README.md).

`local_slurm()` installs the packages if they are missing (root + apt-get,
through examples/slurm/local_cluster/install_slurm.sh; SICOG_SLURM_INSTALL=0
turns that off), takes a machine-wide lock (ports 6817/6818 allow one cluster
per machine, and several test sessions may run at once), starts the cluster
with local_cluster/start.sh and stops it with stop.sh. Whatever prevents a
cluster (not root, no packages, daemons that do not come up, the lock held
too long) becomes a pytest skip with the reason.

`LocalSlurm` submits jobs and reads their state with `scontrol show job -o`
(JobState, Restarts, ArrayTaskId, ...): tests assert on job states, not on
the text slurmstepd prints.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "examples" / "slurm"
LOCAL_CLUSTER = RECIPES / "local_cluster"
LOCK_PATH = Path(os.environ.get("SICOG_SLURM_LOCK", "/tmp/sicog-slurm.lock"))
LOCK_TIMEOUT_S = float(os.environ.get("SICOG_SLURM_LOCK_TIMEOUT", "900"))
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED"}
_FIELD = re.compile(r"(\w+)=(\S*)")


class LocalSlurm:
    """Submit jobs to the local cluster and read their state."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *cmd: str, env: Optional[dict[str, str]] = None, check: bool = True,
            cwd: Path = REPO) -> subprocess.CompletedProcess:
        full_env = {**self.env, **(env or {})}
        proc = subprocess.run(list(cmd), env=full_env, cwd=cwd, text=True,
                              capture_output=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sbatch(self, *args: str, env: Optional[dict[str, str]] = None) -> str:
        """sbatch --parsable ARGS from the repository root; returns the job id."""
        out = self.run("sbatch", "--parsable", *args, env=env).stdout.strip()
        job_id = out.split(";")[0]
        assert job_id.isdigit(), f"sbatch printed {out!r}, expected a job id"
        return job_id

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """One dict per job (per array task for an array job) from scontrol."""
        proc = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        if proc.returncode != 0:
            return []
        return [dict(_FIELD.findall(line)) for line in proc.stdout.splitlines() if line.strip()]

    def state(self, job_id: str) -> str:
        rows = self.jobs(job_id)
        return rows[0].get("JobState", "UNKNOWN") if rows else "UNKNOWN"

    def wait(self, job_id: str, timeout: float = 120, states: set[str] = FINAL_STATES,
             array_size: Optional[int] = None) -> list[dict[str, str]]:
        """Wait until every task of JOB_ID is in STATES; returns their rows.
        For an array, pass ARRAY_SIZE so that a pending array is not mistaken
        for a finished one-task job."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            rows = self.jobs(job_id)
            done = [r for r in rows if r.get("JobState") in states]
            if rows and len(done) == len(rows) and (array_size is None or len(rows) == array_size):
                return rows
            time.sleep(0.5)
        summary = [(r.get("JobId"), r.get("ArrayTaskId"), r.get("JobState"), r.get("Reason")) for r in rows]
        self.run("scancel", job_id, check=False)
        raise AssertionError(f"job {job_id} not in {sorted(states)} after {timeout:.0f}s: {summary}")

    def wait_until(self, predicate, timeout: float, what: str, job_id: Optional[str] = None):
        """Poll PREDICATE() until it returns a true value; fail naming WHAT."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.3)
        detail = f" (job {job_id}: {self.jobs(job_id)})" if job_id else ""
        if job_id:
            self.run("scancel", job_id, check=False)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def _skip(reason: str):
    pytest.skip(f"local SLURM cluster unavailable: {reason}")


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    with open(LOCK_PATH, "a+") as fh:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    _skip(f"{LOCK_PATH} held by another test session for over {LOCK_TIMEOUT_S:.0f}s")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ensure_installed() -> None:
    missing = [b for b in ("sbatch", "scontrol", "slurmctld", "slurmd", "munged")
               if shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if not missing:
        return
    if os.environ.get("SICOG_SLURM_INSTALL", "1") == "0":
        _skip(f"{', '.join(missing)} not installed (SICOG_SLURM_INSTALL=0 forbids installing)")
    proc = subprocess.run(["bash", str(LOCAL_CLUSTER / "install_slurm.sh")], text=True,
                          capture_output=True, timeout=900)
    if proc.returncode != 0:
        _skip(f"{', '.join(missing)} not installed and install_slurm.sh failed: {proc.stderr.strip()[-500:]}")


@contextlib.contextmanager
def local_slurm() -> Iterator[LocalSlurm]:
    """Start (or reuse) the local cluster for the duration of the block."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        _skip("needs Linux")
    if os.geteuid() != 0:
        _skip("needs root (SlurmUser=root; munged runs as the munge user)")
    _ensure_installed()
    state_dir = os.environ.get("SLURM_LOCAL_DIR", "/tmp/sicog-slurm")
    env = {**os.environ, "SLURM_LOCAL_DIR": state_dir,
           "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    with _machine_lock():
        start = subprocess.run(["bash", str(LOCAL_CLUSTER / "start.sh")], env=env, text=True,
                               capture_output=True, timeout=180)
        if start.returncode != 0:
            subprocess.run(["bash", str(LOCAL_CLUSTER / "stop.sh")], env=env, capture_output=True, timeout=120)
            _skip(f"start.sh failed: {start.stderr.strip()[-800:]}")
        env["SLURM_CONF"] = str(Path(state_dir) / "slurm.conf")
        try:
            yield LocalSlurm(env)
        finally:
            subprocess.run(["bash", str(LOCAL_CLUSTER / "stop.sh")], env=env, capture_output=True, timeout=180)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurm]:
    with local_slurm() as cluster:
        yield cluster
