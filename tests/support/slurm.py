"""Helpers for tests that use the local Slurm cluster (tests/slurm/cluster.sh).

All commands run with the process environment, which the ``slurm_cluster`` fixture
(tests/conftest.py) fills with SLURM_CONF and MODULEPATH from ``cluster.sh env``.

Tests use it as ``from support import slurm as sh``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable

SLURM_DIR = Path(__file__).resolve().parents[1] / "slurm"  # tests/slurm: cluster.sh and its modulefiles
CLUSTER_SH = SLURM_DIR / "cluster.sh"
MODULEFILES = SLURM_DIR / "modulefiles"

#: Job states after which a job will not run again (unless requeued by hand).
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)


class SlurmError(RuntimeError):
    pass


def run(cmd: list[str], *, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run a command, capture text output; raise SlurmError (with stderr) when check fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise SlurmError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc


# ------------------------------------------------------------------ cluster control


def cluster_env() -> dict[str, str]:
    """The variables that ``eval "$(cluster.sh env)"`` sets, as a dict."""
    script = f'eval "$(bash {_q(CLUSTER_SH)} env)" && env -0'
    proc = run(["bash", "-c", script], env={**os.environ})
    out = {}
    for item in proc.stdout.split("\0"):
        key, sep, value = item.partition("=")
        if sep and key in ("SLURM_CONF", "MODULEPATH", "MODULESHOME", "CLUSTER_TEST_STATE"):
            out[key] = value
    return out


def cluster_sh(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run tests/slurm/cluster.sh with the given arguments (raises on failure)."""
    return run(["bash", str(CLUSTER_SH), *args], timeout=timeout)


def cluster_mode() -> str:
    """'acct' or 'noacct': the mode cluster.sh last brought the cluster up in."""
    state = os.environ.get("CLUSTER_TEST_STATE") or cluster_env()["CLUSTER_TEST_STATE"]
    try:
        return Path(state, "mode").read_text().strip()
    except OSError:
        return "acct"


def set_accounting(enabled: bool) -> None:
    """Switch the cluster between accounting and no-accounting mode (a few seconds)."""
    cluster_sh("up") if enabled else cluster_sh("up", "--no-accounting")


def set_max_array_size(size: int | None) -> None:
    """Restart slurmctld with MaxArraySize ``size`` (None: Slurm's default), in the current
    accounting mode. Only for tests marked ``serial``: it changes the cluster for every test."""
    env = {k: v for k, v in os.environ.items() if k != "CLUSTER_TEST_MAX_ARRAY_SIZE"}
    if size is not None:
        env["CLUSTER_TEST_MAX_ARRAY_SIZE"] = str(size)
    mode = [] if cluster_mode() == "acct" else ["--no-accounting"]
    run(["bash", str(CLUSTER_SH), "up", *mode], timeout=180, env=env)


def max_array_size() -> int:
    """MaxArraySize as slurmctld reports it (``scontrol show config``)."""
    out = run(["scontrol", "show", "config"], timeout=20).stdout
    return int(re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE).group(1))


def node_states() -> list[str]:
    """sinfo's state of each node ('idle', 'mixed', 'down*', ...); raises if sinfo fails."""
    proc = run(["sinfo", "-h", "-N", "-o", "%T"], timeout=20)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def accounting_enabled() -> bool:
    proc = run(["sacct", "-n", "-X", "-S", "now-1minutes"], check=False, timeout=20)
    return proc.returncode == 0


# ------------------------------------------------------------------ jobs


def sbatch(script_path: str | os.PathLike, *args: str, cwd: str | os.PathLike | None = None) -> str:
    """Submit with ``sbatch --parsable ARGS SCRIPT``; return the job id ('123' or '123_4')."""
    proc = run(["sbatch", "--parsable", *args, str(script_path)], cwd=cwd)
    return proc.stdout.strip().split(";")[0]


def show_job(job_id: str | int) -> dict[str, str] | None:
    """``scontrol show job -o`` as a dict, or None when slurmctld no longer knows the job.

    For an array job id ('12') this describes the first task listed.
    """
    proc = run(["scontrol", "show", "job", "-o", str(job_id)], check=False, timeout=20)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return None
        raise SlurmError(f"scontrol show job {job_id}: {proc.stderr.strip()}")
    line = proc.stdout.splitlines()[0] if proc.stdout.strip() else ""
    # Values may contain spaces (Reason, Command...): split before each ' Key='.
    fields = re.split(r" (?=[A-Za-z][A-Za-z0-9_:/]*=)", line.strip())
    return dict(f.split("=", 1) for f in fields if "=" in f)


def sacct_state(job_id: str | int) -> str | None:
    """The job's state from sacct (allocation line), or None if sacct has nothing / is disabled."""
    proc = run(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State"], check=False, timeout=20)
    if proc.returncode != 0:
        return None
    states = [s.strip() for s in proc.stdout.splitlines() if s.strip()]
    if not states:
        return None
    return states[0].split()[0]  # "CANCELLED by 0" -> "CANCELLED"


def job_state(job_id: str | int) -> str | None:
    """Current state ('PENDING', 'RUNNING', 'COMPLETED', ...) from scontrol, else sacct."""
    info = show_job(job_id)
    if info is not None:
        return info.get("JobState")
    return sacct_state(job_id)


def wait_state(job_id: str | int, states: str | Iterable[str], timeout: float = 60, poll: float = 0.5) -> str:
    """Wait until the job is in one of ``states``; return that state.

    Raises TimeoutError (with the last state seen) after ``timeout`` seconds, and
    SlurmError if the job reaches a terminal state that was not asked for.
    """
    wanted = {states} if isinstance(states, str) else set(states)
    deadline = time.monotonic() + timeout
    state = None
    while True:
        state = job_state(job_id)
        if state in wanted:
            return state
        if state in TERMINAL_STATES:
            raise SlurmError(f"job {job_id} ended {state} while waiting for {sorted(wanted)}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} not in {sorted(wanted)} after {timeout}s (last state: {state})")
        time.sleep(poll)


def wait_job(job_id: str | int, timeout: float = 120, poll: float = 0.5) -> str:
    """Wait until the job reaches a terminal state; return it (e.g. 'COMPLETED')."""
    deadline = time.monotonic() + timeout
    state = None
    while True:
        state = job_state(job_id)
        if state in TERMINAL_STATES:
            return state
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} not finished after {timeout}s (last state: {state})")
        time.sleep(poll)


def make_eligible(job_id: str | int) -> None:
    """Let a pending job start now (``scontrol update JobId=N StartTime=now``).

    A requeued job is held back ~2 minutes (Reason=BeginTime); this skips that wait.
    Started in the same second as its requeue, slurmctld kills the new incarnation with
    "Job credential revoked" (the old one's credential is revoked up to that second), so
    wait past it first.
    """
    time.sleep(2)
    run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], timeout=20)



def skip_requeue_hold(job_id: str | int) -> None:
    """A requeued job waits ~2 minutes before it may start (PENDING, Reason=BeginTime): let it
    start now. Nothing for a job in any other state."""
    info = show_job(job_id) or {}
    if info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime":
        make_eligible(job_id)

def scancel(job_id: str | int) -> None:
    run(["scancel", str(job_id)], check=False, timeout=20)


def _q(path: os.PathLike | str) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


# ------------------------------------------------------------------ nodes


def job_nodes(job_id: str | int) -> str:
    """The node list of a running job ('n1', 'n[1-2]'), '' when it has none."""
    return run(["squeue", "-h", "-j", str(job_id), "-o", "%N"], timeout=20).stdout.strip()


def _pids_with_env(name: str, value: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{name}={value}".encode() in environ:
            pids.append(int(entry.name))
    return pids


def crash_node(node: str, job_id: str | int) -> None:
    """Make ``node`` fail under ``job_id`` as a crashed machine would: its slurmd dies, the
    job's processes there vanish without a signal they could act on (no checkpoint on the
    way out), and slurmctld is told the node is down (it would notice by itself only after
    SlurmdTimeout). One machine plays both nodes, so "the job's processes on the node" are
    those whose SLURMD_NODENAME is ``node``; they are frozen first, so that none reports an
    exit before slurmctld has the node down.
    """
    state = os.environ.get("CLUSTER_TEST_STATE") or cluster_env()["CLUSTER_TEST_STATE"]
    victims = [p for p in _pids_with_env("SLURM_JOB_ID", str(job_id)) if p in _pids_with_env("SLURMD_NODENAME", node)]
    steps = [int(p) for p in run(["pgrep", "-f", rf"slurmstepd: \[{job_id}\."], check=False).stdout.split()]
    for pid in steps + victims:
        _signal(pid, "STOP")
    _signal(int(Path(state, "run", f"slurmd-{node}.pid").read_text()), "KILL")
    run(["scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=crash_node"], timeout=20)
    for pid in steps + victims:
        _signal(pid, "KILL")


def restore_node(node: str, timeout: float = 60) -> None:
    """Bring a node back after `crash_node` or a manual DOWN: start its slurmd, resume it."""
    state = os.environ.get("CLUSTER_TEST_STATE") or cluster_env()["CLUSTER_TEST_STATE"]
    pidfile = Path(state, "run", f"slurmd-{node}.pid")
    alive = pidfile.exists() and Path("/proc", pidfile.read_text().strip()).exists()
    if not alive:
        run(["slurmd", "-f", os.environ["SLURM_CONF"], "-N", node], timeout=30)
    run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False, timeout=20)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], check=False, timeout=20).stdout.split()
        if out and out[0] in ("idle", "mixed", "allocated"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"node {node} not back after {timeout}s")


def _signal(pid: int, name: str) -> None:
    try:
        os.kill(pid, getattr(signal, f"SIG{name}"))
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------ many runs


def sweep_of_true_jobs(sweep_dir: Path, tasks: int, spec_path: Path, overrides: list[str] | None = None) -> str:
    """A sweep directory of ``tasks`` runs whose run.json files ``cluster.submit.prepare_run``
    writes (as ``cluster submit`` does), each pointing at one task of ONE real array job of
    ``true`` (over in seconds, however many tasks: no trainer starts). Returns the array's id.

    For reports and benchmarks over many runs without training them all on two cores."""
    import json

    from cluster.spec import load_spec
    from cluster.submit import prepare_run

    spec = load_spec(spec_path, overrides or [])
    sweep_dir.mkdir(parents=True)
    runs = []
    for i in range(tasks):
        run_dir = sweep_dir / f"task-{i:03d}"
        run_dir.mkdir()
        runs.append(prepare_run(spec, "slurm", run_dir))
    script = sweep_dir / "true.sbatch"
    script.write_text("#!/bin/bash\ntrue\n")
    array_id = sbatch(script, "--partition=cpu", "--mem=100M", "--time=1", f"--array=0-{tasks - 1}",
                      "--output=/dev/null", f"--job-name={spec.name}")
    for i, run in enumerate(runs):
        run.add_job(f"{array_id}_{i}", "submit")
    (sweep_dir / "sweep.json").write_text(json.dumps({
        "name": spec.name, "scheduler": "slurm", "job_id": array_id,
        "tasks": [{"index": i, "run_dir": r.path.name, "job_id": f"{array_id}_{i}"} for i, r in enumerate(runs)]}))
    return array_id
