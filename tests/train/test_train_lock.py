"""At most one trainer per run directory: rank 0 holds DIR/.trainer.lock for the whole run."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from train import runfiles
from train.contract import TRAINER_LOCK, RunLocked


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under `directory`: (size, mtime in ns)."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_the_lock_is_exclusive_names_its_holder_and_is_released(tmp_path: Path) -> None:
    with runfiles.trainer_lock(tmp_path):
        assert (tmp_path / TRAINER_LOCK).read_text().split()[0] == str(os.getpid())
        # A second open of the file is a second lock, even in the same process.
        with pytest.raises(RunLocked) as refused, runfiles.trainer_lock(tmp_path):
            pass
    assert refused.value.pid == os.getpid() and refused.value.run_dir == str(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path}: another trainer is already training this run (pid {os.getpid()} on ")
    assert str(pickle.loads(pickle.dumps(refused.value))) == str(refused.value)  # crosses process boundaries
    assert (tmp_path / TRAINER_LOCK).read_text() == ""  # released: no stale pid left
    with runfiles.trainer_lock(tmp_path):  # and free again
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path, subprocess_env: dict, python: str) -> None:
    code = ("import sys, time; from train import runfiles\n"
            "with runfiles.trainer_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen([python, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=subprocess_env)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunLocked) as refused, runfiles.trainer_lock(tmp_path):
            pass
        assert refused.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    with runfiles.trainer_lock(tmp_path):  # SIGKILL released it
        pass


def test_the_trainer_refuses_a_locked_run_directory_and_writes_nothing(tmp_path: Path, config_factory, run_trainer) -> None:
    with runfiles.trainer_lock(tmp_path):
        before = snapshot(tmp_path)
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            run_trainer(config_factory(), tmp_path)
        assert snapshot(tmp_path) == before
    assert run_trainer(config_factory(), tmp_path).status == "completed"  # released by then


# 480 training samples: 15 steps per epoch, 300 steps in all.
SMALL = {"epochs": 20, "device": "cpu", "data": {"samples": 600, "vector_features": 16}, "checkpoint": {"every_minutes": 0}}


def test_a_second_trainer_on_a_running_run_exits_2_at_once_and_the_first_is_unaffected(
    tmp_path: Path, subprocess_env: dict, python: str, reference_sha
) -> None:
    from train.contract.config import TrainConfig

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "train": SMALL}))
    run_dir = tmp_path / "run"
    command = [python, "-m", "train", "--config", str(spec), "--run-dir", str(run_dir)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env)
    try:
        while not (run_dir / "progress.json").exists() and first.poll() is None:  # it is training
            time.sleep(0.002)
        # Paused (holding its lock) while the second tries: no race with its finishing.
        first.send_signal(signal.SIGSTOP)
        before = snapshot(run_dir)
        second = subprocess.run(command, capture_output=True, text=True, env=subprocess_env, timeout=300)
        assert snapshot(run_dir) == before  # the second wrote nothing
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)

    assert second.returncode == 2, second.stderr
    assert second.stderr == (f"error: {run_dir}: another trainer is already training this run (pid {first.pid} on "
                             f"{os.uname().nodename}); at most one trainer per run directory (lock: .trainer.lock)\n")
    assert first.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(TrainConfig.from_dict(SMALL))
    assert summary["resumes"] == 0
    assert [r["epoch"] for r in runfiles.read_metrics(run_dir)] == list(range(1, 21))
