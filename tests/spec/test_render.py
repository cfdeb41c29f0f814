"""Rendered batch scripts: golden files per job x scheduler, directive rules, and the script run by bash.

The golden files under ``tests/spec/golden/`` are the reviewed output of ``cluster render``;
regenerate them with ``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/spec/test_render.py``
and read the diff before committing it. No scheduler is needed: the prologue and the
run section are executed by bash with ``module`` and ``python`` replaced by small fakes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cluster.isolate import JOB_BOOTSTRAP
from cluster.cli import main
from cluster.backends import render, render_script
from cluster.backends.script import JobOptions
from cluster.backends.script import EXIT_SETUP_FAILED
from train.contract import EXIT_REQUEUE
from cluster.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
JOBS = sorted((REPO / "jobs").glob("*.yaml"))  # complete jobs; jobs/sites/ holds partial site defaults
SCHEDULERS = ("slurm", "pbspro", "torque")
UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")
BASH = shutil.which("bash")

# Variants of the seed job that exercise what the job files do not: several nodes, an account,
# each Slurm GPU flag, skipped and extra directives, env, setup, a python and a runs_dir with $VARs.
VARIANTS = {
    "multinode": ("jobs/seed_convnet.yaml", [
        "resources.nodes=2", "resources.tasks_per_node=2", "resources.gpus_per_node=4",
        "resources.account=proj-1", "scheduler.slurm_gpu_flag=gpus",
        "scheduler.extra_directives=[--constraint=a100]", "scheduler.skip_directives=[mem, --requeue]",
        "environment.env={OMP_NUM_THREADS: 4, DATA: '${SCRATCH}/data'}",
        "environment.setup=[source venv/bin/activate]", "environment.python=~/venv/bin/python",
        "output.runs_dir=${SCRATCH}/runs",
    ]),
    "cpu-only": ("jobs/smoke.yaml", [
        "environment.tmpdir=null", "resources.mem=500M", "resources.time=90",
        "scheduler.skip_directives=[time, walltime]",
    ]),
}
OPTIONS = JobOptions(job_name="smoke-sweep", array="0-3", stdout="runs/sweep/job.out", stderr="runs/sweep/job.err",
                     dependency="1234", signal_batch_shell=False, requeue=False,
                     extra_env=(("CLUSTER_RUN_DIR", "runs/sweep dir"),))


def golden_cases() -> list:
    cases = [pytest.param(job.stem, scheduler, id=f"{job.stem}.{scheduler}") for job in JOBS for scheduler in SCHEDULERS]
    cases += [pytest.param(f"variant-{name}", scheduler, id=f"variant-{name}.{scheduler}")
              for name in [*VARIANTS, "options"] for scheduler in SCHEDULERS]
    return cases


def rendered(case: str, scheduler: str, capsys) -> str:
    """The script for one golden case, through the CLI where the CLI can express it."""
    if case == "variant-options":  # per-submission options exist only in the API the submit path uses
        return render(load_spec(REPO / "jobs/smoke.yaml"), scheduler, options=OPTIONS)
    if case.startswith("variant-"):
        path, sets = VARIANTS[case.removeprefix("variant-")]
    else:
        path, sets = f"jobs/{case}.yaml", []
    args = ["render", str(REPO / path), "--scheduler", scheduler]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


@pytest.mark.parametrize("case, scheduler", golden_cases())
def test_golden(case, scheduler, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the embedded spec has no paths that depend on it, but be sure
    text = rendered(case, scheduler, capsys)
    path = GOLDEN / f"{case}.{scheduler}.sh"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{path.name} differs: review, then UPDATE_GOLDEN=1"


def test_no_stale_golden_files():
    expected = {f"{p.values[0]}.{p.values[1]}.sh" for p in golden_cases()}
    assert {p.name for p in GOLDEN.glob("*.sh")} == expected


def test_default_scheduler_follows_the_spec(capsys):
    assert main(["render", str(REPO / "jobs/seed_convnet.yaml")]) == 0  # kind: auto -> a Slurm script
    assert capsys.readouterr().out == (GOLDEN / "seed_convnet.slurm.sh").read_text()
    assert main(["render", str(REPO / "jobs/seed_convnet_pbspro.yaml")]) == 0  # kind: pbs, flavor pbspro
    assert capsys.readouterr().out == (GOLDEN / "seed_convnet_pbspro.pbspro.sh").read_text()
    assert main(["render", str(REPO / "jobs/seed_convnet.yaml"), "--scheduler", "pbs",
                 "--set", "scheduler.pbs_flavor=torque"]) == 0
    assert directives(capsys.readouterr().out) == directives((GOLDEN / "seed_convnet.torque.sh").read_text())


def test_render_writes_the_file(tmp_path, capsys):
    out = tmp_path / "scripts" / "job.sh"
    assert main(["render", str(REPO / "jobs/smoke.yaml"), "--scheduler", "torque", "-o", str(out)]) == 0
    assert capsys.readouterr() == ("", f"wrote {out}\n")
    assert out.read_text() == (GOLDEN / "smoke.torque.sh").read_text()


# ---------------------------------------------------------------- directive rules


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("#SBATCH", "#PBS"))]


def all_scripts() -> list:
    return [pytest.param(p, id=p.stem) for p in sorted(GOLDEN.glob("*.sh"))]


@pytest.mark.parametrize("path", all_scripts())
def test_one_directive_family_per_script(path):
    lines = directives(path.read_text())
    scheduler = path.suffixes[-2].lstrip(".")
    assert lines, "a script without directives"
    if scheduler == "slurm":
        assert all(line.startswith("#SBATCH --") for line in lines)
    else:
        assert all(line.startswith("#PBS -") for line in lines)
        resource_lines = [line for line in lines if line.startswith("#PBS -l ")]
        if scheduler == "pbspro":  # one chunk spec; Torque's nodes/ppn never appear
            assert any(line.startswith("#PBS -l select=") for line in resource_lines)
            assert not any("nodes=" in line or "ppn=" in line or "-l mem=" in line for line in resource_lines)
            assert not any(line.startswith("#PBS -t ") for line in lines)
        else:  # Torque: nodes=N:ppn=C[:gpus=G]; PBS Pro's select/ngpus/place never appear
            assert any(line.startswith("#PBS -l nodes=") for line in resource_lines)
            assert not any("select=" in line or "ngpus=" in line or "place=" in line for line in resource_lines)
            assert not any(line.startswith("#PBS -J ") for line in lines)
    # directives come before the first command, or the scheduler ignores them
    text = path.read_text().splitlines()
    first_command = next(i for i, line in enumerate(text) if line and not line.startswith("#"))
    assert all(text.index(line) < first_command for line in lines)


def test_resources_per_scheduler():
    spec = load_spec(REPO / "jobs/seed_convnet.yaml", ["resources.nodes=2", "resources.tasks_per_node=2",
                                                       "resources.gpus_per_node=4", "resources.mem=500M"])
    slurm = directives(render(spec, "slurm"))
    assert "#SBATCH --nodes=2" in slurm and "#SBATCH --ntasks-per-node=2" in slurm
    assert "#SBATCH --cpus-per-task=4" in slurm and "#SBATCH --mem=500M" in slurm
    assert "#PBS -l select=2:ncpus=8:ngpus=4:mem=500mb:mpiprocs=2" in directives(render(spec, "pbspro"))
    assert "#PBS -l place=scatter" in directives(render(spec, "pbspro"))
    torque = directives(render(spec, "torque"))
    assert "#PBS -l nodes=2:ppn=8:gpus=4" in torque
    assert "#PBS -l mem=1000mb" in torque  # Torque's mem is for the whole job: 2 nodes x 500M


@pytest.mark.parametrize("flag, nodes, line", [
    ("gres", 2, "#SBATCH --gres=gpu:4"),
    ("gpus", 1, "#SBATCH --gpus=4"),
    # On several nodes a job-wide --gpus=8 may be split 5+3: the per-node count instead.
    ("gpus", 2, "#SBATCH --gpus-per-node=4"),
    ("gpus-per-node", 2, "#SBATCH --gpus-per-node=4"),
])
def test_slurm_gpu_flag(flag, nodes, line):
    spec = load_spec(REPO / "jobs/seed_convnet.yaml",
                     [f"resources.nodes={nodes}", "resources.gpus_per_node=4", f"scheduler.slurm_gpu_flag={flag}"])
    gpu_lines = [d for d in directives(render(spec, "slurm")) if "gpu" in d.split("=")[0] or "gres" in d]
    assert gpu_lines == [line]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_no_gpu_directive_without_gpus(scheduler):
    text = "\n".join(directives(render(load_spec(REPO / "jobs/smoke.yaml"), scheduler)))
    assert "gpu" not in text.replace("#PBS -q cpu", "")


@pytest.mark.parametrize("scheduler, skip, gone", [
    ("slurm", "--time", "#SBATCH --time="),
    ("slurm", "signal", "#SBATCH --signal="),
    ("slurm", "partition", "#SBATCH --partition="),
    ("pbspro", "walltime", "#PBS -l walltime="),
    ("pbspro", "-q", "#PBS -q "),
    ("torque", "mem", "#PBS -l mem="),
    ("torque", "-l walltime", "#PBS -l walltime="),
])
def test_skip_and_extra_directives(scheduler, skip, gone):
    base = load_spec(REPO / "jobs/seed_convnet.yaml")
    assert any(line.startswith(gone) for line in directives(render(base, scheduler)))
    spec = load_spec(REPO / "jobs/seed_convnet.yaml", [f"scheduler.skip_directives=[{skip}]",
                                                       "scheduler.extra_directives=['-l feature=a100', --x=1]"])
    lines = directives(render(spec, scheduler))
    assert not any(line.startswith(gone) for line in lines)
    prefix = "#SBATCH" if scheduler == "slurm" else "#PBS"
    assert lines[-2:] == [f"{prefix} -l feature=a100", f"{prefix} --x=1"]  # raw, last, in order
    assert len(lines) == len(directives(render(base, scheduler))) - 1 + 2


def test_the_submit_path_gets_the_same_directives_and_prologue():
    spec = load_spec(REPO / "jobs/seed_convnet.yaml")
    standalone = render_script(spec, "slurm")
    submitted = render_script(spec, "slurm", command=["srun", "python3", "-m", "train"])
    assert submitted.directives == standalone.directives
    assert submitted.prologue == standalone.prologue
    assert submitted.command == ["srun", "python3", "-m", "train"] and submitted.epilogue == []


# ---------------------------------------------------------------- bash


needs_bash = pytest.mark.skipif(BASH is None, reason="bash not installed")


@needs_bash
@pytest.mark.parametrize("path", all_scripts())
def test_bash_accepts_every_script(path):
    proc = subprocess.run([BASH, "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


FAKE_MODULE_FAILS = 'module() { echo "ERROR: Unable to locate a modulefile for \'$2\'" >&2; return 1; }\n'
FAKE_MODULE_OK = 'module() { echo "module $*" >> "$HOME/module.log"; }\n'


def run_script(tmp_path: Path, text: str, module_function: str, python_status: int = 0,
               ) -> tuple[subprocess.CompletedProcess, Path]:
    """Run a rendered script with ``module`` as a shell function and $HOME in ``tmp_path``."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    script = tmp_path / "job.sh"
    # The function goes after the directives, as a site's profile would have defined it.
    script.write_text("\n".join([lines[0], module_function] + lines[1:]) + "\n")
    run_dir = tmp_path / "run"
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CLUSTER_RUN_DIR": str(run_dir),
           "FAKE_STATUS": str(python_status)}
    proc = subprocess.run([BASH, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    return proc, home


def fake_python(tmp_path: Path) -> Path:
    """A stand-in for the compute node's python: records its arguments, exits with $FAKE_STATUS."""
    path = tmp_path / "bin" / "python"
    path.parent.mkdir(exist_ok=True)
    path.write_text('#!/bin/sh\necho "$@" > "$HOME/python.args"\nexit "$FAKE_STATUS"\n')
    path.chmod(0o755)
    return path


@needs_bash
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_failed_module_load_stops_the_job(tmp_path, scheduler):
    spec = load_spec(REPO / "jobs/seed_convnet.yaml",
                     ["environment.modules=[gcc/12, cuda/11.1]", f"environment.python={fake_python(tmp_path)}"])
    proc, home = run_script(tmp_path, render(spec, scheduler), FAKE_MODULE_FAILS)
    assert proc.returncode == EXIT_SETUP_FAILED == 3
    assert proc.stderr.splitlines() == [
        "ERROR: Unable to locate a modulefile for 'gcc/12'",
        "cluster-train: 'module load gcc/12' failed; stopping before training (fix environment.modules)",
    ]
    assert not (home / "python.args").exists(), "training started although a module did not load"
    assert not (tmp_path / "run").exists()


@needs_bash
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_script_runs_setup_then_training(tmp_path, scheduler):
    spec = load_spec(REPO / "jobs/seed_convnet.yaml", [
        "environment.modules=[gcc/12, cuda/11.1]", "environment.tmpdir=$HOME/scratch/tmp",
        f"environment.python={fake_python(tmp_path)}", "environment.env={DATA: $HOME/data}",
        "environment.setup=['echo \"setup sees TMPDIR=$TMPDIR DATA=$DATA\" > \"$HOME/setup.log\"']",
    ])
    proc, home = run_script(tmp_path, render(spec, scheduler), FAKE_MODULE_OK)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (home / "scratch" / "tmp").is_dir(), "TMPDIR was not created"
    assert (home / "module.log").read_text() == "module load gcc/12\nmodule load cuda/11.1\n"
    assert (home / "setup.log").read_text() == f"setup sees TMPDIR={home}/scratch/tmp DATA={home}/data\n"
    run_dir = tmp_path / "run"
    assert (home / "python.args").read_text() == f"-c {JOB_BOOTSTRAP} train --config {run_dir}/spec.yaml --run-dir {run_dir}\n"
    # the resolved spec travels inside the script and loads back to the same spec
    assert (run_dir / "spec.yaml").read_text() == spec.to_yaml()
    assert load_spec(run_dir / "spec.yaml").to_yaml() == spec.to_yaml()


@needs_bash
def test_uncreatable_tmpdir_stops_the_job(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "file").write_text("not a directory")
    spec = load_spec(REPO / "jobs/smoke.yaml", ["environment.tmpdir=$HOME/file/tmp",
                                                f"environment.python={fake_python(tmp_path)}"])
    proc, home = run_script(tmp_path, render(spec, "pbspro"), FAKE_MODULE_OK)
    assert proc.returncode == EXIT_SETUP_FAILED
    assert proc.stderr.splitlines()[-1] == (
        f"cluster-train: cannot create TMPDIR={home}/file/tmp (fix environment.tmpdir)")
    assert not (home / "python.args").exists()


@needs_bash
@pytest.mark.parametrize("scheduler", ["pbspro", "torque"])
def test_pbs_script_says_how_to_continue(tmp_path, scheduler):
    spec = load_spec(REPO / "jobs/smoke.yaml", [f"environment.python={fake_python(tmp_path)}"])
    proc, _ = run_script(tmp_path, render(spec, scheduler), FAKE_MODULE_OK, python_status=EXIT_REQUEUE)
    assert proc.returncode == EXIT_REQUEUE
    run_dir = tmp_path / "run"
    assert proc.stderr == ("cluster-train: checkpointed before the walltime; continue with: "
                           f"qsub -v CLUSTER_RUN_DIR={run_dir} <this script>, or: cluster resume {run_dir}\n")
