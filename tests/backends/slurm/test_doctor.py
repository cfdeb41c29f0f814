"""``cluster doctor`` against the local Slurm cluster, run as a user would: the installed command."""

from __future__ import annotations

import os
import subprocess

import pytest

from support.runs import REPO

pytestmark = pytest.mark.slurm

ROOT = REPO
CLUSTER = ROOT / ".venv" / "bin" / "cluster"
PYTHON = ROOT / ".venv" / "bin" / "python"


def doctor(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # The slurm_cluster fixture has put SLURM_CONF and MODULEPATH into os.environ.
    return subprocess.run([str(CLUSTER), "doctor", *args], cwd=ROOT, env={**os.environ},
                          capture_output=True, text=True, timeout=timeout)


def test_probe_reports_the_compute_node(tmp_path):
    proc = doctor("jobs/smoke.yaml", "--probe", "--set", f"environment.python={PYTHON}",
                  "--set", f"output.runs_dir={tmp_path}")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for line in ("ok    scheduler: Slurm answers", "ok    partition: cpu exists", "ok    accounting: sacct answers",
                 "ok    runs dir:", "ok    python:", "ok    torch: torch ", "ok    probe:"):
        assert line in out, line
    report = out.split("probe report", 1)[1]
    assert "hostname: " in report
    assert "torch version: " in report
    assert "cuda available: False" in report
    assert "TMPDIR free: " in report and "module list:" in report
    # The report came back through the runs directory: the compute node sees it.
    assert list(tmp_path.glob(".doctor/probe-*/probe.out"))
    # The probe asked for one minute, whatever the spec's walltime.
    script = next(tmp_path.glob(".doctor/probe-*/probe.sh")).read_text()
    assert "#SBATCH --time=00:01:00" in script and "#SBATCH --partition=cpu" in script


def test_probe_fails_when_gpus_are_requested_but_torch_sees_none(tmp_path):
    # The test cluster's GPUs are fake and torch is a CPU build: a GPU spec must not pass.
    proc = doctor("jobs/seed_convnet.yaml", "--probe", "--set", f"environment.python={PYTHON}",
                  "--set", f"output.runs_dir={tmp_path}", "--set", "resources.mem=1G")  # a node holds ~11 GB
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ok    module: cuda/11.1 is available" in proc.stdout
    assert "cuda/11.1" in proc.stdout.split("module list:", 1)[1]  # loaded on the compute node
    assert "FAIL  probe: 1 GPU(s) requested but torch sees none" in proc.stdout


def test_failed_checks_exit_1_with_hints(tmp_path):
    proc = doctor("jobs/smoke.yaml", "--set", "resources.queue=nosuchpartition",
                  "--set", "environment.python=/nonexistent/bin/python", "--set", f"output.runs_dir={tmp_path}")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    partition = next(i for i, l in enumerate(lines) if l.startswith("FAIL  partition:"))
    assert "gpu, cpu" in lines[partition + 1] and lines[partition + 1].strip().startswith("->")
    assert any(l.startswith("FAIL  python: /nonexistent/bin/python") for l in lines)
    assert "doctor: 2 failed" in proc.stdout


def test_without_accounting_is_a_warning(tmp_path, slurm_no_accounting):
    proc = doctor("jobs/smoke.yaml", "--set", f"environment.python={PYTHON}", "--set", f"output.runs_dir={tmp_path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warn  accounting: sacct does not work" in proc.stdout
