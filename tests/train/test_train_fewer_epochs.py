"""Resuming a run with fewer epochs than it has already trained is refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _spec(tmp_path: Path, epochs: int) -> Path:
    text = (REPO / "jobs/smoke.yaml").read_text().replace("epochs: 3", f"epochs: {epochs}")
    path = tmp_path / f"smoke-{epochs}.yaml"
    path.write_text(text)
    return path


def _train(spec: Path, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", "--config", str(spec), "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # trains a run to the end first
def test_fewer_epochs_than_done_is_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert _train(_spec(tmp_path, 3), run_dir).returncode == 0
    summary = (run_dir / "summary.json").read_bytes()
    proc = _train(_spec(tmp_path, 1), run_dir)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"{tmp_path / 'smoke-1.yaml'}: train.epochs: is 1 but this run has already trained 3 epochs "
        "(raise it to continue the run, or start a new one)"]
    assert (run_dir / "summary.json").read_bytes() == summary  # nothing rewritten
