"""`cluster status`/`logs` on the real local Slurm: states, diagnoses, with and without accounting,
and one scheduler query per command kind however many runs there are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support import slurm as sh
from support.runs import FIRST_EPOCH_TIMEOUT, CLUSTER, REPO, calls, cluster_cmd, counting_wrappers, wait_until

# One worker under pytest -n (--dist loadgroup): the module fixture `runs` submits seven jobs once.
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("status-slurm")]

SMOKE = str(REPO / "jobs/smoke.yaml")
LONG = ["--set", "train.epochs=200", "--set", "train.data.samples=20000"]

# name -> (extra submit args, expected state, words expected in the diagnosis, in the action)
CASES = {
    "completed": ([], "completed", None, None),
    "python-error": (["--set", "train.data={source: npz, path: /nonexistent/data.npz}"],
                     "failed", "Python error", "cluster resume"),
    "module": (["--set", "environment.modules=[cuda/99.9]"], "failed", "module load cuda/99.9", "environment.modules"),
    "timeout": (["--set", "resources.time=1", "--set", "environment.setup=[sleep 150]"], "timeout",
                "walltime", "raise resources.time"),
    "oom": (["--set", "resources.mem=150M"], "out-of-memory", "out of memory", "raise resources.mem"),
    "cancelled": (LONG, "cancelled", "cancelled", "cluster resume"),
    "running": (LONG, "running", None, None),
}


def _submit(workdir: Path, name: str, args: list[str]) -> Path:
    target = workdir / name
    target.mkdir()
    proc = cluster_cmd("submit", SMOKE, "--executor", "slurm", *args, cwd=target)
    assert proc.returncode == 0, proc.stderr
    (run_json,) = list((target / "runs").glob("*/run.json"))
    return run_json.parent


def _rows(run_dirs: dict[str, Path], cwd: Path) -> dict[str, dict]:
    proc = cluster_cmd("status", *[str(p) for p in run_dirs.values()], "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    by_path = {r["path"]: r for r in json.loads(proc.stdout)}
    return {name: by_path[str(path)] for name, path in run_dirs.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One run in each state, all submitted at once (the slow ones overlap)."""
    workdir = tmp_path_factory.mktemp("status")
    run_dirs = {name: _submit(workdir, name, args) for name, (args, *_rest) in CASES.items()}
    job = lambda name: json.loads((run_dirs[name] / "run.json").read_text())["jobs"][-1]["job_id"]
    sh.wait_state(job("cancelled"), ["RUNNING"], timeout=120)
    cluster_cmd("cancel", str(run_dirs["cancelled"]), cwd=workdir)
    for name in ("completed", "python-error", "module", "oom", "timeout", "cancelled"):
        sh.wait_job(job(name), timeout=300)
    sh.wait_state(job("running"), ["RUNNING"], timeout=120)
    yield run_dirs
    sh.scancel(job("running"))


def _check(rows: dict[str, dict]) -> None:
    for name, (_args, state, diagnosis, action) in CASES.items():
        row = rows[name]
        assert row["state"] == state, (name, row)
        if diagnosis:
            assert diagnosis in (row["diagnosis"] or ""), (name, row)
            assert action in (row["action"] or ""), (name, row)
    assert rows["completed"]["epoch"] == 3 and rows["completed"]["metric"] > 0.5


def test_states_and_diagnoses_with_accounting(runs: dict[str, Path], tmp_path: Path) -> None:
    _check(_rows(runs, tmp_path))
    text = cluster_cmd("status", *[str(p) for p in runs.values()], cwd=tmp_path).stdout
    assert "out of memory -> raise resources.mem" in text


def test_states_without_accounting(runs: dict[str, Path], slurm_no_accounting, tmp_path: Path) -> None:
    assert subprocess.run(["sacct"], capture_output=True).returncode != 0
    _check(_rows(runs, tmp_path))


def test_requeued_run_shows_requeued_and_logs_show_each_attempt(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = runs["running"]
    job_id = json.loads((run_dir / "run.json").read_text())["jobs"][-1]["job_id"]
    wait_until(lambda: (run_dir / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the first epoch")
    sh.run(["scontrol", "requeue", job_id])
    sh.wait_state(job_id, ["PENDING"], timeout=30)
    wait_until(lambda: json.loads((run_dir / "run.json").read_text())["state"] == "requeued", 30, "the checkpoint")
    row = _rows({"r": run_dir}, tmp_path)["r"]
    assert row["state"] == "requeued", row
    sh.make_eligible(job_id)
    sh.wait_state(job_id, ["RUNNING"], timeout=60)
    wait_until(lambda: json.loads((run_dir / "run.json").read_text())["requeues"] == 1, 60, "the second attempt")
    logs = cluster_cmd("logs", str(run_dir), cwd=tmp_path).stdout
    assert "attempt 1, job" in logs and "attempt 2, job" in logs
    assert _rows({"r": run_dir}, tmp_path)["r"]["requeues"] == 1


def _fake_runs(template: Path, job_ids: list[str], dest: Path) -> list[Path]:
    """Copies of a real run directory, each pointing at one real job of the cluster."""
    made = []
    for i, job_id in enumerate(job_ids):
        target = dest / f"run-{i:03d}"
        shutil.copytree(template, target, ignore=shutil.ignore_patterns("logs", "checkpoints"))
        record = json.loads((target / "run.json").read_text())
        record["jobs"] = [{"job_id": job_id, "submitted": "now", "reason": "submit"}]
        record["state"] = "pending"
        (target / "run.json").write_text(json.dumps(record))
        (target / "summary.json").unlink(missing_ok=True)
        made.append(target)
    return made


@pytest.mark.parametrize("accounting", [True, pytest.param(False, marks=pytest.mark.serial)])
def test_one_query_per_command_kind_for_50_runs(runs: dict[str, Path], tmp_path: Path, accounting: bool,
                                                request) -> None:
    script = tmp_path / "noop.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    array = sh.sbatch(script, "--array=0-49", "--partition=cpu", f"--output={tmp_path}/%A_%a.out")
    request.addfinalizer(lambda: sh.scancel(array))  # what is still queued would wait ahead of the next test's jobs
    job_ids = [f"{array}_{i}" for i in range(50)]
    made = _fake_runs(runs["completed"], job_ids, tmp_path / "runs")
    if not accounting:
        request.getfixturevalue("slurm_no_accounting")
    path, log = counting_wrappers(tmp_path / "bin", ["sacct", "squeue", "scontrol", "sinfo", "qstat"])
    proc = subprocess.run([*CLUSTER, "status", "--runs-dir", str(tmp_path / "runs"), "--json"], cwd=tmp_path,
                          capture_output=True, text=True, env=dict(os.environ, PATH=path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 50
    assert all(r["state"] in ("pending", "running", "completed", "failed") for r in rows), rows
    counted = calls(log)
    assert all(n <= 1 for n in counted.values()), counted
    assert sum(counted.values()) <= 2, counted
