"""``cluster env`` for real: one venv built with pip (torch 2.13.0 from the on-disk wheel, this
project editable, a submitit wheel repacked from the test's own environment since the offline
index lacks it), under a spec tmpdir while TMPDIR points elsewhere; then jobs run in it on the
real Slurm and on the local executor (each job's interpreter reports ``sys.prefix`` through a
``.pth`` line the test adds to the venv), ``--on-queue`` updates it from a Slurm job after a
module load, and a missing or broken venv fails the Slurm job fast with one line.

The one pip install of torch is shared by the module (30-60 s on the 2-core test machine). As
root, the outer TMPDIR is an 8 MB tmpfs, where torch's 190 MB wheel could not be unpacked.
"""

from __future__ import annotations

import json
import os
import shlex
import re
import subprocess
import sys
from pathlib import Path

import pytest

from env.helpers import repack_wheel, small_dir
from support import slurm as sh
from support.runs import REPO, cluster_cmd
from cluster.isolate import JOB_BOOTSTRAP
from cluster.runs import Run

# One worker under pytest -n (--dist loadgroup): the module fixture `built` creates a venv once.
pytestmark = pytest.mark.xdist_group("env-build")

SMOKE = REPO / "jobs/smoke.yaml"
PREFIX_FILE = "python-prefix.txt"
# One line of a .pth file runs at every start of the venv's Python: it appends sys.prefix to the
# run directory's PREFIX_FILE when the process runs inside a job (CLUSTER_RUN_DIR is set).
PTH = ("import os, sys; d = os.environ.get('CLUSTER_RUN_DIR'); "
       f"d and open(os.path.join(d, '{PREFIX_FILE}'), 'a').write(sys.prefix + '\\n')\n")


def _spec(workdir: Path, name: str, venv: Path, kind: str = "slurm") -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(f"extends: {SMOKE}\nname: {name}\nscheduler: {{kind: {kind}}}\nenvironment:\n"
                    f"  tmpdir: {workdir}/pip-tmp\n  venv: {venv}\n  requirements: [torch==2.13.0]\n"
                    f"  requirements_file: {workdir}/requirements.txt\n")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """``cluster env`` run once, as a user would, with TMPDIR pointing at an empty directory."""
    workdir = tmp_path_factory.mktemp("env")
    wheels = workdir / "wheels"
    wheels.mkdir()
    repack_wheel("submitit", wheels)
    (workdir / "requirements.txt").write_text(f"--find-links {wheels}\n")
    venv = workdir / "venv"
    spec = _spec(workdir, "venvjob", venv)
    outer_tmp = workdir / "outer-tmp"
    with small_dir(outer_tmp) as small:  # 8 MB when root may mount a tmpfs: torch would not fit
        env = dict(os.environ, TMPDIR=str(outer_tmp))
        proc = subprocess.run([sys.executable, "-m", "cluster.cli", "env", str(spec)], cwd=workdir,
                              env=env, capture_output=True, text=True, timeout=900)
        left_in_outer_tmp = list(outer_tmp.iterdir())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "zz_report_prefix.pth").write_text(PTH)
    return {"workdir": workdir, "spec": spec, "venv": venv, "proc": proc, "small": small,
            "left_in_outer_tmp": left_in_outer_tmp}


@pytest.mark.slow  # builds a venv
def test_cluster_env_builds_the_venv_with_pip_temp_under_the_spec_tmpdir(built):
    venv, pip_tmp, out = built["venv"], built["workdir"] / "pip-tmp", built["proc"].stdout
    assert f"pip temp: TMPDIR={pip_tmp}, PIP_CACHE_DIR={pip_tmp}/pip-cache (environment.tmpdir)" in out
    assert f"venv: creating {venv}" in out and f"venv: ready: {venv}" in out
    assert re.search(r"Successfully installed .*cluster-train-0\.1\.0 .*torch-2\.13\.0", out), out[-2000:]
    # pip's own log names every temporary directory it made: all under the spec's tmpdir, except
    # the stash pip keeps beside a package it replaces (~name inside the venv's site-packages)
    made = re.findall(r"Created temporary directory: (\S+)", (venv / "cluster-env-pip.log").read_text())
    assert made, "pip logged no temporary directory"
    elsewhere = [p for p in made if not p.startswith(f"{pip_tmp}/") and not re.match(
        rf"{re.escape(str(venv))}/lib/python3[.\d]+/site-packages/~", p)]
    assert elsewhere == []
    assert built["left_in_outer_tmp"] == [], "something was written to the outer TMPDIR"
    probe = subprocess.run([str(venv / "bin/python"), "-c", "import sys, torch, cluster, submitit; "
                            "print(sys.prefix, torch.__version__, cluster.__file__)"],
                           capture_output=True, text=True, timeout=120)
    assert probe.stdout.split() == [str(venv), "2.13.0+cpu", str(REPO / "cluster/__init__.py")], probe.stderr


def _prefixes(run_dir: Path) -> list[str]:
    return (run_dir / PREFIX_FILE).read_text().splitlines()


def _submitted_run(proc: subprocess.CompletedProcess) -> Path:
    match = re.search(r"run directory: (\S+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return Path(match.group(1))


@pytest.mark.slurm
def test_a_slurm_job_runs_in_the_venv(built):
    proc = cluster_cmd("submit", str(built["spec"]), "--wait", cwd=built["workdir"], timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = _submitted_run(proc)
    assert "weights_sha256" in proc.stdout
    prefixes = _prefixes(run_dir)
    assert prefixes and set(prefixes) == {str(built["venv"])}, prefixes
    script = Run(run_dir).script_path
    assert f'"{built["venv"]}/bin/python" -u -c {shlex.quote(JOB_BOOTSTRAP)} submitit.core._submit' in script.read_text()


@pytest.mark.slow  # builds a venv
def test_a_local_job_runs_in_the_venv(built):
    proc = cluster_cmd("submit", str(built["spec"]), "--executor", "local", "--wait", cwd=built["workdir"],
                       timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefixes = _prefixes(_submitted_run(proc))
    assert prefixes and set(prefixes) == {str(built["venv"])}, prefixes


def test_a_local_job_with_a_missing_venv_is_refused_in_one_line(built, tmp_path):
    spec = _spec(built["workdir"], "novenv-local", tmp_path / "nowhere", kind="local")
    proc = cluster_cmd("submit", str(spec), cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"cluster submit: environment.venv: {tmp_path}/nowhere is not a virtualenv "
                                        f"(no pyvenv.cfg); build it with: cluster env {spec}"]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slurm
def test_on_queue_updates_the_venv_in_a_job_after_the_module_loads(built):
    proc = cluster_cmd("env", str(built["spec"]), "--on-queue", "--set", "environment.modules=[cuda/11.1]",
                       cwd=built["workdir"], timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    out, venv, pip_tmp = proc.stdout, built["venv"], built["workdir"] / "pip-tmp"
    assert re.search(r"env job \d+ submitted to slurm", out)
    assert f"  job: venv: updating {venv}" in out and f"  job: venv: ready: {venv}" in out
    assert f"  job: pip temp: TMPDIR={pip_tmp}" in out and "  job: cluster env: job exit 0" in out
    (script,) = (built["workdir"] / "runs" / ".env").glob("env-*/env.sh")
    text = script.read_text()
    assert text.index("module load cuda/11.1") < text.index(" cluster.cli env")
    assert "VIRTUAL_ENV" not in text  # the job builds the venv: it does not activate it first


def _broken_venv(root: Path) -> Path:
    """A venv whose base Python is gone: pyvenv.cfg, and bin/python pointing at nothing."""
    (root / "bin").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /nonexistent/bin\n")
    (root / "bin" / "python").symlink_to("/nonexistent/bin/python3.11")
    return root


@pytest.mark.slurm
def test_a_missing_or_broken_venv_fails_the_slurm_job_fast_in_one_line(built, tmp_path):
    venvs = {"missing": tmp_path / "missing-venv", "broken": _broken_venv(tmp_path / "broken-venv")}
    runs = {}
    for name, venv in venvs.items():
        proc = cluster_cmd("submit", str(_spec(tmp_path, f"venv-{name}", venv)), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        runs[name] = _submitted_run(proc)
    for name, run_dir in runs.items():
        job_id = json.loads((run_dir / "run.json").read_text())["jobs"][-1]["job_id"]
        assert sh.wait_job(job_id, timeout=120) == "FAILED"
        err = cluster_cmd("logs", str(run_dir), "--err", cwd=tmp_path).stdout
        lines = [line for line in err.strip().splitlines() if not line.startswith("----- job ")]
        assert lines == [
            f"cluster-train: 'activate venv {venvs[name]}' failed; stopping before training "
            "(fix environment.venv, or build it: cluster env SPEC)"], err
        (row,) = json.loads(cluster_cmd("status", str(run_dir), "--json", cwd=tmp_path).stdout)
        assert row["state"] == "failed" and row["diagnosis"], row
        assert not (run_dir / PREFIX_FILE).exists()
