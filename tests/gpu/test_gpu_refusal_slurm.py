"""A job that asked for a GPU trains on it or stops at once: on the real test Slurm, whose
GPUs are fake (the scheduler allocates them, torch here is a CPU build), the seed job with
`train.device: auto` is refused with one line and recorded failed; with `train.device: cpu`
it trains on the CPU, on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.runs import REPO, cluster_cmd, last_run

pytestmark = pytest.mark.slurm

SEED = str(REPO / "jobs/seed_convnet.yaml")
SMALL = ["--set", "train.epochs=1", "--set", "train.data.samples=400", "--set", "resources.mem=1G"]


def test_gpu_job_without_cuda_stops_at_once_with_the_reason(tmp_path: Path) -> None:
    proc = cluster_cmd("submit", SEED, "--executor", "slurm", "--wait", *SMALL, cwd=tmp_path, timeout=240)
    run = last_run(tmp_path)
    record = run.read()
    assert record["state"] == "failed", (record, proc.stdout, proc.stderr)
    assert "#SBATCH --gres=gpu:1" in run.script_path.read_text().splitlines()
    error = record["error"]
    assert error.startswith("GpuUnavailableError: train.device: is auto and the scheduler gave this job GPUs "
                            "(SLURM_"), error
    assert "has no CUDA (a CPU-only build): install a CUDA build of torch" in error
    assert "or set train.device: cpu" in error
    assert not (run.path / "metrics.jsonl").exists() and not list((run.path / "checkpoints").glob("*.pt"))
    status = cluster_cmd("status", str(run.path), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "scheduler gave this job GPUs" in status.stdout, status.stdout


def test_gpu_job_with_device_cpu_trains_on_the_cpu(tmp_path: Path) -> None:
    proc = cluster_cmd("submit", SEED, "--executor", "slurm", "--wait", *SMALL, "--set", "train.device=cpu",
                       cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((last_run(tmp_path).path / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["determinism"]["deterministic_algorithms"] is False
