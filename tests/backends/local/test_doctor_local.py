"""``cluster doctor`` where no scheduler answers (the Slurm checks are in tests/backends/slurm/test_doctor.py)."""

from __future__ import annotations

import os
import sys

import pytest

from cluster.cli import main
from support.runs import REPO

ROOT = REPO


def test_no_scheduler_means_local_executor(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sinfo, no qstat
    code = main(["doctor", str(ROOT / "jobs" / "smoke.yaml"), "--set", f"environment.python={sys.executable}",
                 "--set", f"output.runs_dir={tmp_path / 'runs'}", "--probe"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "warn  scheduler: no Slurm or PBS answers here: jobs will use the local executor" in out
    assert "ok    runs dir:" in out and "will be created" in out
    assert "ok    python:" in out and "ok    torch: torch " in out
    assert "warn  probe: no scheduler" in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_unwritable_runs_dir_fails(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    try:
        code = main(["doctor", str(ROOT / "jobs" / "smoke.yaml"), "--set", "scheduler.kind=local",
                     "--set", f"environment.python={sys.executable}", "--set", f"output.runs_dir={locked / 'runs'}"])
    finally:
        locked.chmod(0o700)
    out = capsys.readouterr().out
    assert code == 1 and "FAIL  runs dir:" in out
    assert "ok    scheduler: scheduler.kind is local" in out
