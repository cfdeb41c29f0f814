"""The PBS executor end to end, through Slurm's Torque-compatible qsub/qstat/qdel on the local cluster.

No PBS server can run here; Slurm's compatibility layer is a real scheduler behind the
real Torque commands, which is what sites that moved to Slurm and kept `qsub` run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support import slurm as sh
from support.runs import REPO, cluster_cmd, last_run, reference_sha, steps_per_attempt, wait_until

pytestmark = pytest.mark.slurm
TORQUE = ["--executor", "pbs", "--set", "scheduler.pbs_flavor=torque"]


def test_torque_submit_completes_with_the_local_weights(tmp_path: Path) -> None:
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), *TORQUE, "--wait", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(tmp_path)
    record = run.read()
    assert record["scheduler"] == "pbs" and record["state"] == "completed"
    script = run.script_path.read_text()
    assert "#PBS -l nodes=1:ppn=1" in script and "select=" not in script
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", [])
    job_id = record["jobs"][0]["job_id"]
    assert (run.logs_dir / f"{job_id}_0_log.out").read_text().count("cluster-train: attempt 1") == 1
    logs = cluster_cmd("logs", str(run.path), cwd=tmp_path)
    assert "attempt 1" in logs.stdout and "done: 3 epochs" in logs.stdout


def test_torque_cancel(tmp_path: Path) -> None:
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), *TORQUE, "--set", "train.epochs=40",
                       "--set", "train.data.samples=20000", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = last_run(tmp_path)
    job_id = run.current_job_id()
    sh.wait_state(job_id, ["RUNNING"], timeout=60)
    cancelled = cluster_cmd("cancel", str(run.path), cwd=tmp_path)
    assert cancelled.returncode == 0 and f"cancelled job {job_id}" in cancelled.stdout, cancelled.stderr
    assert sh.wait_job(job_id, timeout=60).startswith("CANCELLED")
    row = json.loads(cluster_cmd("status", str(run.path), "--json", cwd=tmp_path).stdout)[0]
    assert row["state"] == "cancelled"


def test_walltime_continues_in_follow_up_jobs(tmp_path: Path) -> None:
    # 1 minute of walltime and no early signal: the trainer stops before its deadline (45 s
    # of margin) and the job submits its own continuation (qsub -W depend=afterany:<this job>).
    # The work is three times what one job trains on this machine now: about three jobs, and
    # room for many more if the machine slows down.
    walltime = ["train.checkpoint.deadline_margin_seconds=45", "resources.time=1"]
    wall_args = [a for s in walltime for a in ("--set", s)]
    steps = steps_per_attempt(tmp_path, str(REPO / "jobs/smoke.yaml"), [*TORQUE, *wall_args], 20000)
    epochs = -(-3 * steps // 500)  # 500 steps per epoch
    sets = [f"train.epochs={epochs}", "train.data.samples=20000", *walltime, "scheduler.max_requeues=40"]
    args = [a for s in sets for a in ("--set", s)]
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), *TORQUE, *args, "--wait", cwd=tmp_path, timeout=1800)
    run = last_run(tmp_path)
    record = run.read()
    assert proc.returncode == 0, proc.stdout + proc.stderr + json.dumps(record)
    reasons = [j["reason"] for j in record["jobs"]]
    assert reasons[0] == "submit" and reasons.count("continue") >= 1
    assert record["requeues"] == reasons.count("continue")
    epochs_seen = [json.loads(l)["epoch"] for l in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert epochs_seen == list(range(1, epochs + 1)), "an epoch was lost or repeated"
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", sets[:3])
    logs = cluster_cmd("logs", str(run.path), cwd=tmp_path).stdout
    assert logs.count("----- job ") == len(record["jobs"])  # status/logs follow the chain


def test_plain_submitit_finds_the_plugin(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, submitit
        ex = submitit.AutoExecutor({str(tmp_path / 'jobs')!r}, cluster="pbs", pbs_flavor="torque")
        ex.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=1, pbs_queue="cpu")
        job = ex.submit(sum, [1, 2, 39])
        print("RESULT", job.result(), type(ex._executor).__name__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          cwd=tmp_path, env=dict(os.environ))
    assert "RESULT 42 PBSExecutor" in proc.stdout, proc.stdout + proc.stderr
