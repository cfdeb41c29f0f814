"""A user's `train.py`, `cluster.py`, `yaml.py` or `submitit.py` in the submit directory never
stands in for the toolkit (issue 26), and a controller that dies at start-up is never silent.

Each planted module writes a marker file when it is imported (`import-<name>`) or run as a
program (`main-<name>`). The built-in trainer job and a `command: [python, train.py]` job both
complete, on the local executor, on the real test Slurm (submitit and a `cluster render`
script run with sbatch) and through the PBS path (Slurm's Torque-compatible qsub); the only
marker ever written is the command job's own `python train.py` (main-train).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from support.runs import FIRST_EPOCH_TIMEOUT, REPO, last_run, reference_sha, wait_until

PLANTED = ("train", "cluster", "yaml", "submitit")
# The `cluster` console script, as a user runs it (python -m cluster.cli would itself put the
# directory first on sys.path; that is Python's doing, not the toolkit's).
CLUSTER = str(Path(sys.executable).parent / "cluster")
TORQUE = ["--executor", "pbs", "--set", "scheduler.pbs_flavor=torque"]


def plant(directory: Path) -> Path:
    """The four shadowing modules in ``directory``; returns the markers' folder."""
    markers = directory / "markers"
    markers.mkdir()
    for name in PLANTED:
        (directory / f"{name}.py").write_text(textwrap.dedent(f"""\
            import os
            kind = "main" if __name__ == "__main__" else "import"
            open(os.path.join({str(markers)!r}, kind + "-{name}"), "a").write(str(os.getpid()) + "\\n")
            """))
    return markers


def run_cluster(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CLUSTER, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def specs(directory: Path) -> tuple[Path, Path]:
    """jobs/smoke.yaml copied beside the planted modules, and a command job running train.py."""
    smoke = directory / "smoke.yaml"
    shutil.copy(REPO / "jobs/smoke.yaml", smoke)
    command = directory / "mine.yaml"
    command.write_text(yaml.safe_dump({
        "name": "mine", "resources": {"queue": "cpu", "mem": "1G", "time": 5},
        "environment": {"tmpdir": str(directory / "tmp")}, "command": ["python3", "train.py"]}, sort_keys=False))
    return smoke, command


def markers_written(markers: Path) -> list[str]:
    return sorted(p.name for p in markers.iterdir())


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    markers = plant(tmp_path)
    smoke, command = specs(tmp_path)
    return tmp_path, markers, smoke, command


def _completes(workdir: Path, spec: Path, *args: str) -> dict:
    proc = run_cluster("submit", str(spec), *args, "--wait", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return last_run(workdir).read()


def _trainer_and_command_jobs(workdir: Path, markers: Path, smoke: Path, command: Path, *args: str) -> None:
    record = _completes(workdir, smoke, *args)
    assert record["state"] == "completed"
    summary = json.loads((last_run(workdir).path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", [])
    assert markers_written(markers) == [], "the built-in trainer job imported a planted module"
    record = _completes(workdir, command, *args)
    assert record["state"] == "completed"
    assert markers_written(markers) == ["main-train"], "only the command job's own python train.py may run"


def test_check_warns_of_each_shadowing_file(planted) -> None:
    workdir, markers, smoke, _ = planted
    proc = run_cluster("check", str(smoke), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert sorted(w.split()[1] for w in warnings) == sorted(f"{n}.py" for n in PLANTED), proc.stderr
    assert markers_written(markers) == []


def test_local_executor_imports_the_toolkit(planted) -> None:
    workdir, markers, smoke, command = planted
    _trainer_and_command_jobs(workdir, markers, smoke, command, "--executor", "local")


@pytest.mark.slurm
def test_slurm_imports_the_toolkit(planted) -> None:
    workdir, markers, smoke, command = planted
    _trainer_and_command_jobs(workdir, markers, smoke, command, "--executor", "slurm")


@pytest.mark.slurm
def test_pbs_path_imports_the_toolkit(planted) -> None:
    workdir, markers, smoke, command = planted
    _trainer_and_command_jobs(workdir, markers, smoke, command, *TORQUE)


@pytest.mark.slurm
def test_rendered_script_run_with_sbatch_imports_the_toolkit(planted) -> None:
    workdir, markers, smoke, command = planted
    for spec, expected in ((smoke, []), (command, ["main-train"])):
        script = workdir / f"{spec.stem}.sh"
        proc = run_cluster("render", str(spec), "--scheduler", "slurm", "--output", str(script),
                           "--set", f"environment.python={sys.executable}", cwd=workdir)
        assert proc.returncode == 0, proc.stderr
        run_dir = workdir / f"rendered-{spec.stem}"
        sbatch = subprocess.run(["sbatch", "--parsable", "--wait", f"--export=ALL,CLUSTER_RUN_DIR={run_dir}",
                                 str(script)], cwd=workdir, capture_output=True, text=True, timeout=600)
        assert sbatch.returncode == 0, sbatch.stdout + sbatch.stderr
        if spec is smoke:
            assert (run_dir / "summary.json").is_file(), sorted(p.name for p in run_dir.iterdir())
        assert markers_written(markers) == expected


def test_controller_crash_at_start_up_is_recorded(tmp_path: Path) -> None:
    """A local controller that cannot import submitit (broken on purpose, through a
    sitecustomize that only the controller's environment triggers) fails the run with the
    error as the reason; logs --err shows the controller's traceback."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""\
        import os, sys
        # Only the local controller has SUBMITIT_LOCAL_COMMAND without a task's LOCALID.
        if "SUBMITIT_LOCAL_COMMAND" in os.environ and "SUBMITIT_LOCAL_LOCALID" not in os.environ:
            sys.modules["submitit"] = None  # `import submitit` now raises ModuleNotFoundError
        """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([CLUSTER, "submit", str(REPO / "jobs/smoke.yaml"), "--executor", "local", "--wait"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failed" in proc.stdout and "ModuleNotFoundError" in proc.stdout, proc.stdout
    run = last_run(tmp_path)
    record = run.read()
    assert record["state"] == "failed" and "ModuleNotFoundError" in record["error"], record
    status = subprocess.run([CLUSTER, "status", str(run.path)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert "failed" in status.stdout and "ModuleNotFoundError" in status.stdout, status.stdout
    logs = subprocess.run([CLUSTER, "logs", str(run.path), "--err"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert logs.returncode == 0
    assert "controller.log" in logs.stdout and "Traceback (most recent call last)" in logs.stdout, logs.stdout


def test_crashed_controller_is_settled_by_status(tmp_path: Path) -> None:
    """A controller killed before it could record anything (SIGKILL): status fails the run in
    run.json, once, with the reason; nothing stays `pending` with nothing to run it."""
    proc = subprocess.run([CLUSTER, "submit", str(REPO / "jobs/smoke.yaml"), "--executor", "local",
                           "--set", "train.epochs=100000"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = last_run(tmp_path)
    pid = int(run.read()["jobs"][0]["job_id"])
    wait_until(lambda: run.read().get("state") == "running", FIRST_EPOCH_TIMEOUT, "the trainer to start")
    os.kill(pid, 9)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(),
               30, "the controller to die")
    # The trainer got SIGTERM from the dying controller (PDEATHSIG): it checkpoints and exits.
    status = subprocess.run([CLUSTER, "status", str(run.path), "--json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    row = json.loads(status.stdout)[0]
    assert row["state"] == "failed", row
    wait_until(lambda: run.read()["state"] == "failed", 60, "run.json to say failed")
    assert "cluster logs" in run.read()["error"]


def _interpreters() -> list[str]:
    """This Python and any other CPython >= 3.10 on the machine (3.10 has no -P)."""
    import glob

    found = {sys.executable}
    for pattern in ("/usr/bin/python3.1[0-9]", "/root/.pyenv/versions/3.1[0-9]*/bin/python3",
                    "/usr/local/bin/python3.1[0-9]"):
        found.update(glob.glob(pattern))
    return sorted(found)


@pytest.mark.parametrize("python", _interpreters())
def test_bootstrap_runs_the_installed_module_on_every_python(tmp_path: Path, python: str) -> None:
    """`python -m json.tool` in a directory holding json.py runs that file; the bootstrap the
    toolkit uses runs the standard library's module, with -m's argv and __main__."""
    from cluster.isolate import module_argv

    (tmp_path / "json.py").write_text("print('HIJACKED')\n")
    plain = subprocess.run([python, "-m", "json.tool"], input='{"a": 1}', cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert "HIJACKED" in plain.stdout  # the hazard is real on this interpreter
    safe = subprocess.run(module_argv(python, "json.tool", "--compact"), input='{"a": 1}', cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert safe.returncode == 0 and safe.stdout == '{"a":1}\n', safe.stdout + safe.stderr
