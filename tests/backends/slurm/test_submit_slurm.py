"""`cluster submit` on the real local Slurm: completion, requeue, walltime, SIGKILL + resume, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.backends import render_script
from cluster.runs import Run
from cluster.spec import load_spec

from support import slurm as sh
from support.runs import (FIRST_EPOCH_TIMEOUT, REPO, cluster_cmd, drive, last_run, reference_sha, slurm_walltime,
                          wait_until)

pytestmark = pytest.mark.slurm

# ~15 s of work on 2 cores: long enough to interrupt mid-training.
LONGER = ["--set", "train.epochs=10", "--set", "train.data.samples=20000"]


def test_smoke_completes_with_the_same_weights_as_a_local_run(workdir: Path) -> None:
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), "--executor", "slurm", "--wait", cwd=workdir)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "submitted to slurm as job" in proc.stdout
    run = last_run(workdir)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", [])
    record = run.read()
    assert record["state"] == "completed" and record["scheduler"] == "slurm"
    assert record["requeues"] == 0
    # The spec's own prologue was submitted: render and submit agree.
    submitted = run.script_path.read_text()
    rendered = render_script(load_spec(run.spec_path), "slurm")
    for line in rendered.directives + rendered.prologue:
        if line.startswith("#SBATCH --signal="):
            # By hand the batch shell forwards the warning (B:); submitted, srun's step gets it.
            assert "#SBATCH --signal=USR2@120" in submitted.splitlines()
        else:
            assert line in submitted.splitlines(), line


def test_scontrol_requeue_mid_training_resumes_exactly(workdir: Path) -> None:
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), "--executor", "slurm", *LONGER, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = last_run(workdir)
    job_id = run.current_job_id()
    wait_until(lambda: (run.path / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the first epoch")
    sh.run(["scontrol", "requeue", job_id])
    sh.wait_state(job_id, ["PENDING"], timeout=30)
    sh.make_eligible(job_id)
    sh.wait_job(job_id, timeout=180)
    wait_until(lambda: run.read()["state"] == "completed", 30, "run.json to say completed")
    record = run.read()
    assert record["requeues"] >= 1
    assert len(record["attempts"]) >= 2 and record["attempts"][-1]["resumed_from_step"]
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", LONGER[1::2])
    epochs = [json.loads(l)["epoch"] for l in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 11))


SAMPLES = 20000
STEPS_PER_EPOCH = 500  # 16,000 training samples (a fifth is the validation split), batches of 32


def test_walltime_shorter_than_training_continues_through_requeues(workdir: Path) -> None:
    # The work is about three attempts' worth, measured here and now; a machine that speeds up
    # after the measurement (other work ended) may finish in one: then the work is tripled.
    # A 1-minute walltime, Slurm warns 45 s before it (later on a loaded machine: slurm_walltime);
    # the trainer's own deadline is the backstop.
    steps, walltime = slurm_walltime(workdir, str(REPO / "jobs/smoke.yaml"), SAMPLES)
    epochs = max(2, -(-3 * steps // STEPS_PER_EPOCH))
    for _ in range(3):
        sets = [f"train.epochs={epochs}", f"train.data.samples={SAMPLES}", *walltime, "scheduler.max_requeues=40"]
        proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), "--executor", "slurm",
                           *[a for s in sets for a in ("--set", s)], cwd=workdir)
        assert proc.returncode == 0, proc.stderr
        run = last_run(workdir)
        record = drive(run, 2400)
        assert record["state"] == "completed", record
        if record["requeues"] >= 1:
            break
        epochs *= 3
    assert record["requeues"] >= 1, f"{epochs // 3} epochs never needed a requeue"
    epochs_seen = [json.loads(l)["epoch"] for l in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert epochs_seen == list(range(1, epochs + 1)), "an epoch was lost or repeated"
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", sets[:2])


def _training_pids(run: Run) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"submitit.core._submit {run.logs_dir}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_sigkill_fails_the_run_and_resume_finishes_it(workdir: Path) -> None:
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), "--executor", "slurm", *LONGER, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = last_run(workdir)
    job_id = run.current_job_id()
    wait_until(lambda: (run.path / "metrics.jsonl").exists() and _training_pids(run), FIRST_EPOCH_TIMEOUT,
               "the first epoch")
    for pid in _training_pids(run):
        os.kill(pid, signal.SIGKILL)
    sh.wait_job(job_id, timeout=60)
    status = cluster_cmd("status", str(run.path), "--json", cwd=workdir)
    row = json.loads(status.stdout)[0]
    assert row["state"] == "failed", row
    assert "cluster resume" in (row["action"] or "")

    resumed = cluster_cmd("resume", str(run.path), "--wait", cwd=workdir, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    record = run.read()
    assert [j["reason"] for j in record["jobs"]] == ["submit", "resume"]
    assert record["jobs"][1]["job_id"] != job_id
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", LONGER[1::2])


@pytest.mark.parametrize("override, expected", [
    ("resources.queue=nosuchpartition", "invalid partition"),
    ("resources.gpus_per_node=3", "Requested node configuration is not available"),
])
def test_refused_spec_shows_the_scheduler_message(workdir: Path, override: str, expected: str) -> None:
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), "--executor", "slurm", "--set", override,
                       cwd=workdir)
    assert proc.returncode == 1
    assert expected.lower() in proc.stderr.lower(), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not list((workdir / "runs").glob("*/run.json")), "a refused job left a run directory"


def test_cancel_stops_the_live_job(workdir: Path) -> None:
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), "--executor", "slurm", *LONGER, cwd=workdir)
    run = last_run(workdir)
    job_id = run.current_job_id()
    sh.wait_state(job_id, ["RUNNING"], timeout=60)
    cancelled = cluster_cmd("cancel", str(run.path), cwd=workdir)
    assert cancelled.returncode == 0 and f"cancelled job {job_id}" in cancelled.stdout
    assert sh.wait_job(job_id, timeout=60).startswith("CANCELLED")
    row = json.loads(cluster_cmd("status", str(run.path), "--json", cwd=workdir).stdout)[0]
    assert row["state"] == "cancelled"


def test_submit_never_imports_torch(workdir: Path) -> None:
    code = ("import sys; from cluster.cli import main; "
            f"rc = main(['submit', {str(REPO / 'jobs/smoke.yaml')!r}, '--executor', 'slurm']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert "NO-TORCH 0" in proc.stdout, proc.stdout + proc.stderr
    job_id = last_run(workdir).current_job_id()
    sh.wait_job(job_id, timeout=120)
