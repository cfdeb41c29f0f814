"""environment.venv in the spec and the rendered script (no scheduler, no pip): the golden
script, the loader's errors, and the prologue run by bash against a fake venv, a missing one and
a broken one. The golden files under tests/env/golden/ are the reviewed output of
``cluster render``; regenerate with ``UPDATE_GOLDEN=1`` and read the diff."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cluster.isolate import JOB_BOOTSTRAP, job_command
from cluster.backends import render
from cluster.backends.script import EXIT_SETUP_FAILED, python_for, python_word
from cluster.cli import main
from cluster.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")
VENV_SETS = ["environment.venv=$HOME/venvs/smoke", "environment.modules=[cuda/11.1]",
             "environment.requirements=[torch==2.13.0, numpy>=1.24]", "environment.requirements_file=reqs.txt"]
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash not installed")


@pytest.mark.parametrize("scheduler", ["slurm", "pbspro", "torque"])
def test_golden_venv_script(scheduler, capsys):
    args = ["render", str(REPO / "jobs/smoke.yaml"), "--scheduler", scheduler]
    for item in VENV_SETS:
        args += ["--set", item]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert err == ""
    path = GOLDEN / f"venv.{scheduler}.sh"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(out)
    assert out == path.read_text(), f"{path.name} differs: review, then UPDATE_GOLDEN=1"
    # activation comes after the module loads (the venv may be built on a module's Python)
    assert out.index("module load") < out.index('export VIRTUAL_ENV="$HOME/venvs/smoke"') < out.index(job_command("python3", "train"))


def test_spec_round_trip_and_the_pythons():
    spec = load_spec(REPO / "jobs/smoke.yaml", VENV_SETS)
    assert load_spec(REPO / "jobs/smoke.yaml").to_dict()["environment"].keys() == {
        "modules", "tmpdir", "setup", "env", "python"}  # specs without a venv resolve as before
    assert spec.to_dict()["environment"]["requirements"] == ["torch==2.13.0", "numpy>=1.24"]
    assert python_for(spec) == "$HOME/venvs/smoke/bin/python"
    assert python_word(spec) == '"$HOME/venvs/smoke/bin/python"'  # $HOME expands in the job, nothing else


@pytest.mark.parametrize("sets, message", [
    (["environment.venv=/v", "environment.python=/usr/bin/python3"],
     "environment.python: cannot be set together with environment.venv"),
    (["environment.requirements=['--index-url=http://x']"], "environment.requirements[0]: invalid requirement"),
    (["environment.venv=/v;rm -rf x"], "environment.venv: contains ';'"),
    (["environment.venv=-v"], "environment.venv: starts with '-'"),
    (["environment.requirements_file=[a]"], "environment.requirements_file: must be a path string"),
])
def test_bad_venv_keys_are_one_line_errors(sets, message, capsys):
    args = ["check", str(REPO / "jobs/smoke.yaml")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and message in err, err


def _fake_venv(root: Path) -> Path:
    """pyvenv.cfg and a bin/python(3) that records how it was run."""
    (root / "bin").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = root / "bin" / "python"
    python.write_text('#!/bin/sh\necho "$0 $* VIRTUAL_ENV=$VIRTUAL_ENV PATH=${PATH%%:*}" >> "$HOME/python.log"\n')
    python.chmod(0o755)
    (root / "bin" / "python3").symlink_to("python")
    return root


def _run(tmp_path: Path, venv: Path) -> tuple[subprocess.CompletedProcess, Path]:
    home = tmp_path / "home"
    home.mkdir()
    spec = load_spec(REPO / "jobs/smoke.yaml", [f"environment.venv={venv}", "environment.tmpdir=$HOME/tmp"])
    script = tmp_path / "job.sh"
    script.write_text(render(spec, "slurm"))
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CLUSTER_RUN_DIR": str(tmp_path / "run")}
    return subprocess.run([BASH, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60), home


@needs_bash
def test_script_runs_the_job_in_the_venv(tmp_path):
    venv = _fake_venv(tmp_path / "venv")
    proc, home = _run(tmp_path, venv)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    check, job = (home / "python.log").read_text().splitlines()
    assert check.startswith(f"{venv}/bin/python -c ")
    run_dir = tmp_path / "run"
    assert job == (f"{venv}/bin/python3 -c {JOB_BOOTSTRAP} train --config {run_dir}/spec.yaml --run-dir {run_dir} "
                   f"VIRTUAL_ENV={venv} PATH={venv}/bin")


@needs_bash
@pytest.mark.parametrize("broken", ["missing", "no-pyvenv-cfg", "base-python-gone"])
def test_missing_or_broken_venv_stops_the_job_in_one_line(tmp_path, broken):
    venv = tmp_path / "venv"
    if broken != "missing":
        _fake_venv(venv)
    if broken == "no-pyvenv-cfg":
        (venv / "pyvenv.cfg").unlink()
    if broken == "base-python-gone":  # bin/python points at an interpreter that is not there
        (venv / "bin" / "python").unlink()
        (venv / "bin" / "python").symlink_to(tmp_path / "gone" / "python3.11")
    proc, home = _run(tmp_path, venv)
    assert proc.returncode == EXIT_SETUP_FAILED == 3
    assert proc.stderr.splitlines() == [
        f"cluster-train: 'activate venv {venv}' failed; stopping before training "
        "(fix environment.venv, or build it: cluster env SPEC)"]
    assert not (home / "python.log").exists() or " train --config" not in (home / "python.log").read_text()
    assert not (tmp_path / "run").exists(), "the job went on to create its run directory"
