"""A task from a package outside the repository, on the real Slurm: importable in the job
through environment.env PYTHONPATH, requeued by `scontrol requeue`, bitwise exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.tasks_support import train_section, write_spec
from support import slurm as sh
from support.runs import FIRST_EPOCH_TIMEOUT, cluster_cmd, last_run, wait_until

pytestmark = pytest.mark.slurm


def test_out_of_repo_task_requeued_by_scontrol_resumes_exactly(slurm_cluster, importable: Path, tmp_path: Path) -> None:
    train = train_section("external", epochs=40, options={"samples": 2000})  # 50 steps per epoch
    spec = write_spec(tmp_path / "spec.yaml", train, resources={"queue": "cpu", "cpus_per_task": 1, "time": "00:10:00"},
                      environment={"env": {"PYTHONPATH": str(importable), "OMP_NUM_THREADS": "1"}},
                      scheduler={"kind": "slurm", "max_requeues": 3})
    (tmp_path / "ref").mkdir()
    proc = cluster_cmd("submit", str(spec), "--executor", "local", "--wait", cwd=tmp_path / "ref")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = json.loads((last_run(tmp_path / "ref").path / "summary.json").read_text())["weights_sha256"]

    work = tmp_path / "slurm"
    work.mkdir()
    proc = cluster_cmd("submit", str(spec), "--executor", "slurm", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(work)
    job_id = run.current_job_id()
    wait_until(lambda: (run.path / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the first epoch")
    sh.run(["scontrol", "requeue", job_id])  # SIGTERM, then requeued by Slurm

    def done() -> bool:
        sh.skip_requeue_hold(job_id)
        return run.read().get("state") in ("completed", "failed")

    wait_until(done, 300, "the requeued job to end", poll=1)
    record = run.read()
    assert record["state"] == "completed" and record["requeues"] >= 1, record
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["resumes"] >= 1 and summary["task"] == "usertasks.regress:Regression"
    assert summary["weights_sha256"] == expected
