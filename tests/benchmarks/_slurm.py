"""Shared by the Slurm benchmarks (bench_submit, bench_status, bench_sweep): the test
cluster's environment, a clean skip when it is down, waiting for the queue, and the
counting PATH wrappers of tests/support/runs.py.

Not a benchmark itself (run_all.sh runs bench_*.py only).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # a script, not run by pytest: its pythonpath ini does not apply

from support.runs import calls, counting_wrappers  # noqa: E402

__all__ = ["REPO", "calls", "counting_wrappers", "use_slurm", "cluster_script", "queue", "wait_idle",
           "wait_gone", "fmt_ms", "spread"]


def use_slurm(bench: str) -> None:
    """Put the test cluster's environment (``tests/slurm/cluster.sh env``) into os.environ;
    exit 0 with a 'skipped' line when sinfo does not answer."""
    proc = subprocess.run(["bash", "-c", 'eval "$(bash tests/slurm/cluster.sh env)" && env -0'],
                          cwd=REPO, capture_output=True)
    if proc.returncode == 0:
        env = dict(item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
        for key in ("CLUSTER_TEST_STATE", "SLURM_CONF", "MODULESHOME", "MODULEPATH"):
            if key in env:
                os.environ[key] = env[key]
    try:
        ok = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        print(f"{bench}: skipped: no Slurm (sinfo does not answer; start the test cluster with "
              f"`bash tests/slurm/cluster.sh up`)")
        sys.exit(0)


def cluster_script() -> list[str]:
    """The console script users run (beside this interpreter), else ``python -m cluster.cli``."""
    script = Path(sys.executable).with_name("cluster")
    if script.exists():
        return [str(script)]
    found = shutil.which("cluster")
    return [found] if found else [sys.executable, "-m", "cluster.cli"]


def queue() -> list[str]:
    """Ids of the jobs Slurm has not finished (pending, running, completing...), anyone's."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30).stdout
    return out.split()


def wait_idle(timeout: float = 600, poll: float = 0.5) -> float:
    """Wait until the queue is empty (other sessions share this 2-core cluster); return the
    seconds waited. Goes on after ``timeout`` with a note rather than failing."""
    start = time.monotonic()
    while queue() or not nodes_idle():
        if time.monotonic() - start > timeout:
            print(f"  note: the queue is still busy after {timeout:.0f} s ({len(queue())} jobs); measuring anyway")
            break
        time.sleep(poll)
    return time.monotonic() - start


def nodes_idle() -> bool:
    """Every node idle: none still completing the last job (its epilogue), which would delay
    the start of the next one."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and all(state == "idle" for state in out.stdout.split())


def wait_gone(job_ids: list[str], timeout: float = 600, poll: float = 0.3) -> None:
    """Wait until none of ``job_ids`` (or their array tasks) is pending or running."""
    ids = ",".join(j.split("_")[0] for j in job_ids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ids], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and not out.stdout.strip():
            return
        time.sleep(poll)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for jobs {ids} to end")


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def spread(values: list[float]) -> str:
    """'median X ms (min, max; n runs)'."""
    return (f"median {fmt_ms(statistics.median(values))}  (min {min(values) * 1000:.1f}, "
            f"max {max(values) * 1000:.1f}; {len(values)} runs)")
