"""Sweeps as one array job: real Slurm (counting sbatch calls) and the local executor."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from support.runs import CLUSTER, REPO, calls, counting_wrappers, wait_until

SWEEP = ["--sweep", "train.lr=0.001,0.0003", "--sweep", "train.sampler.positive_weight=0.85,0.5"]
EXPECTED = {(0.001, 0.85), (0.001, 0.5), (0.0003, 0.85), (0.0003, 0.5)}


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run([*CLUSTER, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or dict(os.environ))


def _check_sweep(workdir: Path) -> Path:
    (sweep_dir,) = list((workdir / "runs").glob("smoke-sweep-*"))
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(sweep["tasks"]) == 4
    seen = set()
    for task in sweep["tasks"]:
        task_dir = sweep_dir / task["run_dir"]
        spec = yaml.safe_load((task_dir / "spec.yaml").read_text())
        seen.add((spec["train"]["lr"], spec["train"]["sampler"]["positive_weight"]))
        assert json.loads((task_dir / "run.json").read_text())["state"] == "completed"
        assert (task_dir / "summary.json").exists()
    assert seen == EXPECTED
    collected = _run(["collect", str(sweep_dir), "--to", str(workdir / "results")], cwd=workdir)
    assert collected.returncode == 0, collected.stderr
    assert "comparison (sorted by val_auc" in collected.stdout
    table = (workdir / "results" / "comparison.csv").read_text().splitlines()
    assert len(table) == 5 and "train.lr" in table[0]
    return sweep_dir


@pytest.mark.slurm
def test_sweep_is_one_sbatch_call_and_every_task_completes(tmp_path: Path) -> None:
    path, log = counting_wrappers(tmp_path / "bin", ["sbatch"])
    env = dict(os.environ, PATH=path)
    proc = _run(["submit", str(REPO / "jobs/smoke.yaml"), "--executor", "slurm", *SWEEP, "--wait"],
                cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls(log) == {"sbatch": 1}
    sweep_dir = _check_sweep(tmp_path)
    script = (sweep_dir / "submitted.sh").read_text()
    assert "#SBATCH --array=0-3%4" in script
    # The array carries the spec's own directives and prologue, like a single run.
    for line in ("#SBATCH --job-name=smoke", "#SBATCH --partition=cpu", "#SBATCH --time=00:10:00",
                 "#SBATCH --mem=1G", 'export TMPDIR="$HOME/tmp"', "#SBATCH --signal=USR2@120"):
        assert line in script.splitlines(), line
    status = _run(["status", str(sweep_dir), "--json"], cwd=tmp_path)
    rows = json.loads(status.stdout)
    assert [r["state"] for r in rows] == ["completed"] * 4
    assert len({r["job_id"] for r in rows}) == 4 and all("_" in r["job_id"] for r in rows)


@pytest.mark.slow  # four tasks train in turn
def test_sweep_on_the_local_executor(tmp_path: Path) -> None:
    proc = _run(["submit", str(REPO / "jobs/smoke.yaml"), "--executor", "local", *SWEEP, "--wait"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_sweep(tmp_path)


def test_sweep_rejects_keys_outside_train(tmp_path: Path) -> None:
    proc = _run(["submit", str(REPO / "jobs/smoke.yaml"), "--executor", "local",
                 "--sweep", "resources.nodes=1,2"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "sweep keys must be dotted keys under train" in proc.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_refused_sweep_point_names_itself_and_leaves_nothing_behind(tmp_path: Path) -> None:
    proc = _run(["submit", str(REPO / "jobs/smoke.yaml"), "--executor", "local",
                 "--sweep", "train.lr=0.1,-5,0.01"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr == (f"{REPO}/jobs/smoke.yaml (sweep point 1: train.lr=-5): "
                           "train.lr: must be a positive number (got -5.0)\n"), proc.stderr
    assert not (tmp_path / "runs").exists(), "the refused sweep left its runs/ folder"


@pytest.mark.slurm
@pytest.mark.serial  # lowers the cluster's MaxArraySize (slurmctld restarts) for every test beside it
def test_a_sweep_beyond_max_array_size_is_split_into_the_fewest_arrays(tmp_path: Path) -> None:
    from support import slurm as sh

    limit, points = 4, 10  # ceil(10 / 4) = 3 arrays (4, 3 and 3 tasks)
    lrs = [round(1e-3 * (i + 1), 6) for i in range(points)]
    arrays: list[str] = []
    sh.set_max_array_size(limit)
    try:
        assert sh.max_array_size() == limit
        path, log = counting_wrappers(tmp_path / "bin", ["sbatch", "scancel"])
        env = dict(os.environ, PATH=path)
        # Held: the tasks wait (nothing trains), so that status and cancel meet all of them live.
        proc = _run(["submit", str(REPO / "jobs/smoke.yaml"), "--executor", "slurm",
                     "--sweep", "train.lr=" + ",".join(map(str, lrs)),
                     "--set", "scheduler.extra_directives=[--hold]"], cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert calls(log) == {"sbatch": 3}
        (sweep_dir,) = list((tmp_path / "runs").glob("smoke-sweep-*"))
        sweep = json.loads((sweep_dir / "sweep.json").read_text())
        arrays += sweep["job_ids"]
        assert len(arrays) == 3 and sweep["job_id"] == arrays[0]
        tasks = sweep["tasks"]
        assert [t["job_id"] for t in tasks] == [f"{a}_{i}" for a, n in zip(arrays, (4, 3, 3)) for i in range(n)]
        seen = []
        for task in tasks:  # every point a run directory with its own spec and its array's script
            task_dir = sweep_dir / task["run_dir"]
            seen.append(yaml.safe_load((task_dir / "spec.yaml").read_text())["train"]["lr"])
            assert json.loads((task_dir / "run.json").read_text())["jobs"][-1]["job_id"] == task["job_id"]
            array, index = task["job_id"].split("_")
            n = {a: c for a, c in zip(arrays, (4, 3, 3))}[array]
            assert f"#SBATCH --array=0-{n - 1}%{n}" in (task_dir / "submitted.sh").read_text()
        assert seen == lrs

        status = _run(["status", str(sweep_dir), "--json"], cwd=tmp_path)
        rows = json.loads(status.stdout)
        assert sorted(r["job_id"] for r in rows) == sorted(t["job_id"] for t in tasks)
        assert {r["state"] for r in rows} == {"pending"}, rows

        cancelled = _run(["cancel", str(sweep_dir)], cwd=tmp_path, env=env)
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert cancelled.stdout.count("cancelled job ") == points
        # Slurm keeps one record per array for tasks cancelled while pending (sacct -j <array>).
        def queued() -> str:
            return sh.run(["squeue", "-h", "-o", "%i", "-j", ",".join(arrays)], check=False).stdout.strip()

        wait_until(lambda: not queued(), 60, "every task to leave the queue")
        assert [sh.sacct_state(a) for a in arrays] == ["CANCELLED"] * 3
        rows = json.loads(_run(["status", str(sweep_dir), "--json"], cwd=tmp_path).stdout)
        assert [r["state"] for r in rows] == ["cancelled"] * points, rows
    finally:
        for array in arrays:
            sh.scancel(array)
        sh.set_max_array_size(None)
    assert sh.max_array_size() == 1001  # restored: Slurm's default
