"""`python -m train` as a job runs it: exit codes, one-line errors, a real SIGUSR2 and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from train.trainer import EXIT_REQUEUE


def write_spec(path: Path, train: dict) -> Path:
    path.write_text(yaml.safe_dump({"name": "test", "train": train}))
    return path


# 480 training samples: 15 steps per epoch, 300 steps in all.
SMALL = {"epochs": 20, "device": "cpu", "data": {"samples": 600, "vector_features": 16}, "checkpoint": {"every_minutes": 0}}


def train_cmd(spec: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "train", "--config", str(spec), "--run-dir", str(run_dir)]


def test_config_error_is_one_line_and_exit_2(tmp_path: Path, subprocess_env: dict) -> None:
    spec = write_spec(tmp_path / "bad.yaml", {"epochs": 0})
    proc = subprocess.run(train_cmd(spec, tmp_path / "run"), capture_output=True, text=True, env=subprocess_env)
    assert proc.returncode == 2
    assert proc.stderr == f"{spec}: train.epochs: must be a positive integer (got 0)\n"
    assert not (tmp_path / "run").exists()


def test_data_error_is_one_line_and_exit_2(tmp_path: Path, subprocess_env: dict) -> None:
    np.savez(tmp_path / "d.npz", x1=np.zeros((10, 10, 18)), x2=np.zeros((10, 3)), y=np.full(10, 3))
    spec = write_spec(tmp_path / "spec.yaml", {"device": "cpu", "data": {"source": "npz", "path": "d.npz"}})
    proc = subprocess.run(
        train_cmd(spec, tmp_path / "run"), capture_output=True, text=True, env=subprocess_env, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: d.npz: array 'y' (label) must hold only 0 and 1")


@pytest.mark.slow  # trains, stops and resumes in subprocesses
def test_sigusr2_exits_for_requeue_and_resume_is_exact(tmp_path: Path, subprocess_env: dict) -> None:
    spec = write_spec(tmp_path / "spec.yaml", SMALL)

    reference = subprocess.run(train_cmd(spec, tmp_path / "reference"), capture_output=True, text=True, env=subprocess_env)
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "reference" / "summary.json").read_text())["weights_sha256"]

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(spec, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env)
    # progress.json appears at the first step: the signal then lands inside training.
    deadline = time.monotonic() + 60
    while not (run_dir / "progress.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_REQUEUE, err
    assert "stopping (SIGUSR2)" in out
    assert not (run_dir / "summary.json").exists()

    resumed = subprocess.run(train_cmd(spec, run_dir), capture_output=True, text=True, env=subprocess_env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from ckpt-" in resumed.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["weights_sha256"] == expected
    assert summary["resumes"] == 1


def test_importing_train_has_no_side_effects(tmp_path: Path, subprocess_env: dict) -> None:
    code = "import sys, train; assert 'torch' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env, cwd=tmp_path)
    assert proc.stdout == "ok\n" and proc.stderr == ""
    assert list(tmp_path.iterdir()) == []


# --- main() in-process: cheaper than a subprocess for the exit-status paths ----------------


@pytest.fixture
def main_in_process(monkeypatch: pytest.MonkeyPatch):
    """train.__main__.main, with the signal handlers it installs restored afterwards."""
    from train.__main__ import main

    for name in ("CLUSTER_DEADLINE", "SLURM_JOB_ID", "PBS_JOBID"):
        monkeypatch.delenv(name, raising=False)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    yield main
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_refused_resume_is_one_line_and_exit_2(tmp_path: Path, main_in_process, capsys: pytest.CaptureFixture) -> None:
    train = {"epochs": 1, "device": "cpu", "data": {"samples": 200, "vector_features": 4}}
    spec = write_spec(tmp_path / "a.yaml", train)
    assert main_in_process(["--config", str(spec), "--run-dir", str(tmp_path / "run")]) == 0
    changed = write_spec(tmp_path / "b.yaml", {**train, "data": {"samples": 300, "vector_features": 4}})
    capsys.readouterr()
    assert main_in_process(["--config", str(changed), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot resume from ")
    assert "train.data.samples differs (checkpoint: 200, now: 300)" in err


def test_walltime_from_the_spec_inside_a_scheduler_job(
    tmp_path: Path, main_in_process, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # 10 s of walltime is inside the default 10 s safety margin: checkpoint and ask for requeue.
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "t",
        "resources": {"time": "00:00:10"},
        "train": {"epochs": 1, "device": "cpu", "data": {"samples": 200, "vector_features": 4}},
    }))
    assert main_in_process(["--config", str(spec), "--run-dir", str(tmp_path / "local")]) == 0  # no deadline
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert main_in_process(["--config", str(spec), "--run-dir", str(tmp_path / "job")]) == EXIT_REQUEUE
    assert "stopping (deadline)" in capsys.readouterr().out


def _npz(path: Path, n: int = 40, **arrays: np.ndarray) -> None:
    base = {"x1": np.ones((n, 10, 18)), "x2": np.ones((n, 3)), "y": (np.arange(n) % 4 == 0).astype(np.int64)}
    np.savez(path, **{**base, **arrays})


@pytest.mark.parametrize(
    "data, arrays, expected",
    [
        pytest.param({"samples": 0}, None, "{spec}: train.data.samples: must be a positive integer (got 0)", id="samples-0"),
        pytest.param({"source": "npz", "path": "d.npy"}, None,
                     "{spec}: train.data.path: is a .npy file (a single array; got 'd.npy'): source: npz reads a .npz "
                     "archive holding the image, vector and label arrays (numpy.savez)", id="npy-path"),
        pytest.param({"source": "npz", "path": "d.npz"}, {"x1": np.ones((40, 10, 18)) * (1 + 2j)},
                     "error: d.npz: array 'x1' (image) is complex (dtype complex128); only real numbers can be trained "
                     "on: store the real part, or the magnitude, explicitly", id="complex"),
        pytest.param({"source": "npz", "path": "d.npz"}, {"x1": np.ones((0, 10, 18)), "x2": np.ones((0, 3)),
                                                          "y": np.ones(0, dtype=np.int64)},
                     "error: d.npz: arrays x1, x2, y have no samples (0 rows)", id="zero-rows"),
    ],
)
def test_bad_data_is_one_line_and_exit_2(
    tmp_path: Path, main_in_process, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
    data: dict, arrays: dict | None, expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # the data path is relative to the working directory
    if arrays is not None:
        _npz(tmp_path / "d.npz", **arrays)
    np.save(tmp_path / "d.npy", np.ones((40, 10, 18)))
    spec = write_spec(tmp_path / "spec.yaml", {"epochs": 1, "device": "cpu", "data": data})
    assert main_in_process(["--config", str(spec), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == expected.format(spec=spec) + "\n"
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
