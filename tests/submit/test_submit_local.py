"""`cluster submit` on submitit's local executor: completion, its own timeout + requeue, SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from submit_support import REPO, cluster_cmd, last_run, reference_sha, wait_until

from cluster.runs import Run

SMOKE = str(REPO / "jobs/smoke.yaml")


def test_local_run_completes(workdir: Path) -> None:
    proc = cluster_cmd("submit", SMOKE, "--executor", "local", "--wait", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted to local as job" in proc.stdout and "completed" in proc.stdout
    run = last_run(workdir)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", [])
    assert [json.loads(l)["epoch"] for l in (run.path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_local_timeout_requeues_and_resumes_exactly(workdir: Path) -> None:
    # A 1-minute walltime with the warning 45 s before it: the local executor sends USR2 15 s
    # into each attempt, the trainer checkpoints, the job exits for requeue and submitit's
    # controller starts it again. ~30 s of training on an idle machine: at least one requeue.
    sets = ["train.epochs=40", "train.data.samples=20000", "resources.time=1", "scheduler.signal_seconds=45",
            "scheduler.max_requeues=12"]
    args = [a for s in sets for a in ("--set", s)]
    proc = cluster_cmd("submit", SMOKE, "--executor", "local", *args, "--wait", cwd=workdir, timeout=600)
    run = last_run(workdir)
    record = run.read()
    assert proc.returncode == 0, proc.stdout + proc.stderr + json.dumps(record)
    assert record["requeues"] >= 1 and len(record["attempts"]) == record["requeues"] + 1
    epochs = [json.loads(l)["epoch"] for l in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 41)), "an epoch was lost or repeated"
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", sets[:2])


def _task_pids(run: Run) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"submitit.core._submit {run.logs_dir}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_local_sigkill_then_resume(workdir: Path) -> None:
    sets = ["train.epochs=10", "train.data.samples=20000"]
    args = [a for s in sets for a in ("--set", s)]
    proc = cluster_cmd("submit", SMOKE, "--executor", "local", *args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = last_run(workdir)
    wait_until(lambda: (run.path / "metrics.jsonl").exists() and _task_pids(run), 120, "the first epoch")
    for pid in _task_pids(run):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: json.loads(cluster_cmd("status", str(run.path), "--json", cwd=workdir).stdout)[0]["state"]
               == "failed", 60, "the run to show as failed")
    resumed = cluster_cmd("resume", str(run.path), "--wait", cwd=workdir, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    record = run.read()
    assert [j["reason"] for j in record["jobs"]] == ["submit", "resume"]
    assert record["attempts"][-1]["resumed_from_step"]
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", sets)


def test_two_runs_submitted_at_once_never_share_a_directory(workdir: Path) -> None:
    from cluster.runs import new_run_dir
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: new_run_dir(workdir / "runs", "same"), range(64)))
    assert len(set(dirs)) == 64
