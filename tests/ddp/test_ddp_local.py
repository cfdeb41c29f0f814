"""Data-parallel training without a scheduler: two processes started here, and the local executor.

The processes get torch's env:// variables as `cluster.job` exports them from Slurm's, and
run `Trainer(..., distributed=True)` (gloo, one thread each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
WORKER = """
import sys
from cluster.spec import load_spec
from train.trainer import Trainer
stop = int(sys.argv[3]) if len(sys.argv) > 3 else None
result = Trainer(load_spec(sys.argv[1]).train, sys.argv[2], distributed=True, stop_at_step=stop).run()
print("RESULT", result.status, result.reason)
"""
SETS = ["train.epochs=2", "train.data.samples=1000"]  # 25 steps per epoch


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    args = [a for s in SETS for a in ("--set", s)]
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "check", str(REPO / "jobs/ddp_smoke.yaml"), *args],
                         capture_output=True, text=True, check=True, cwd=REPO)
    path = tmp_path / "spec.yaml"
    path.write_text(out.stdout)
    return path


def train_two_ranks(spec: Path, run_dir: Path, stop_at: dict[int, int] | None = None) -> list[str]:
    """Run both ranks to their end; return each one's output."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        extra = [str((stop_at or {})[rank])] if rank in (stop_at or {}) else []
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(spec), str(run_dir), *extra], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    return outputs


def stop_lines(outputs: list[str]) -> list[str]:
    return [line for out in outputs for line in out.splitlines() if line.startswith("stopping (")]


@pytest.mark.slow  # two ranks train
def test_a_stop_on_one_rank_stops_both_at_the_same_step_and_the_run_resumes_exactly(spec: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    train_two_ranks(spec, reference)
    expected = (reference / "summary.json").read_text()

    run = tmp_path / "interrupted"
    first = train_two_ranks(spec, run, stop_at={1: 10})  # only rank 1 is asked to stop
    lines = stop_lines(first)
    # The same step and checkpoint on both (the reason names the rank's own request, or not).
    assert len(lines) == 2 and lines[0].split(") ", 1)[1] == lines[1].split(") ", 1)[1], lines
    assert "global step 11:" in lines[0]  # decided together, one step after the request
    assert "RESULT stopped stop_at_step test hook" in first[1]
    assert "RESULT stopped stop requested on another rank" in first[0]
    second = train_two_ranks(spec, run, stop_at={0: 30})  # now rank 0, in the second epoch
    assert "global step 31:" in stop_lines(second)[0]
    third = train_two_ranks(spec, run)
    assert all("RESULT completed" in out and "resumed from ckpt-000000031.pt" in out for out in third)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["weights_sha256"] == json.loads(expected)["weights_sha256"]
    assert summary["world_size"] == 2 and summary["resumes"] == 2 and summary["samples"] == 2 * 800
    ranks = [(run / "ranks" / f"rank-{r}.sha256").read_text().strip() for r in (0, 1)]
    assert ranks == [summary["weights_sha256"]] * 2
    # The epoch losses are the whole batches' (summed over both ranks), and survive the stops.
    losses = [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses == [json.loads(line)["train_loss"] for line in (reference / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two ranks train
def test_the_last_batch_may_leave_a_rank_without_samples(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "check", str(REPO / "jobs/ddp_smoke.yaml"),
                          "--set", "train.epochs=1", "--set", "train.batch_size=479"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    spec.write_text(out.stdout)  # 480 training samples: the second batch has one, for rank 0 only
    train_two_ranks(spec, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["samples"] == 480
    assert summary["train_loss"] == summary["train_loss"]  # not NaN


@pytest.mark.slow  # two ranks train
def test_the_local_executor_starts_both_ranks(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "submit", str(REPO / "jobs/ddp_smoke.yaml"),
                           "--executor", "local", "--wait"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    ranks = [(run / "ranks" / f"rank-{r}.sha256").read_text().strip() for r in (0, 1)]
    assert ranks == [summary["weights_sha256"]] * 2


@pytest.mark.slow  # two ranks train
def test_a_dataset_task_on_two_ranks_stopped_and_resumed_equals_an_uninterrupted_two_rank_run(tmp_path: Path) -> None:
    """The second shipped task (a torch Dataset, not tensors), with AdamW, a cosine schedule
    and clipping: each rank collates its own share of every batch."""
    sets = ["train.epochs=2", "train.options.samples=500", "train.options.length=32"]  # 13 steps per epoch
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "check", str(REPO / "jobs/signal_cnn.yaml"),
                          *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True, check=True, cwd=REPO)
    spec = tmp_path / "spec.yaml"
    spec.write_text(out.stdout)
    train_two_ranks(spec, tmp_path / "reference")
    expected = json.loads((tmp_path / "reference" / "summary.json").read_text())

    run = tmp_path / "interrupted"
    assert "RESULT stopped" in train_two_ranks(spec, run, stop_at={0: 9})[0]  # mid-epoch 1
    assert "RESULT stopped" in train_two_ranks(spec, run, stop_at={1: 13})[1]  # at the epoch boundary
    train_two_ranks(spec, run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["weights_sha256"] == expected["weights_sha256"] and summary["resumes"] == 2
    assert summary["world_size"] == 2 and summary["task"] == "train.tasks.signal_cnn:SignalCNN"
    ranks = [(run / "ranks" / f"rank-{r}.sha256").read_text().strip() for r in (0, 1)]
    assert ranks == [summary["weights_sha256"]] * 2
