"""``cluster env``: build or update the job's virtualenv the way the seed does it.

The seed's first step on a cluster is ``export TMPDIR=$HOME/tmp`` before ``pip install
torch``: ``/tmp`` on login and compute nodes is too small for a CUDA build of torch, and pip
unpacks and builds under ``TMPDIR``. This module does that step for ``environment.venv``:
``python -m venv`` when the venv does not exist yet, then one ``pip install`` of this project
and ``environment.requirements`` / ``requirements_file``, with ``TMPDIR`` and
``PIP_CACHE_DIR`` under the spec's private ``environment.tmpdir``. It runs here (the login
node) or, with ``--on-queue``, as a job on the spec's queue after its ``module load``s, so
that pip picks the CUDA build for the GPU node's drivers and modules.

This project is installed *editable* (``pip install -e``): submitit pickles
:class:`cluster.job.TrainJob` on the login node and unpickles it in the job, so the job must
import the very code the login node runs; an editable install follows the checkout, where a
copy would drift from it after the next ``git pull``.

Nothing here imports torch (pip and the venv's Python run as subprocesses).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from cluster.isolate import code_argv, module_argv
from cluster.errors import ClusterError
from cluster.spec import JobSpec, expand_path
from train.contract import rundir

if TYPE_CHECKING:
    from cluster.backends import Check

TORCH_TEMP_BYTES = 5 * 2**30
"""Free space pip's temp dir should have for a CUDA build of torch. torch 2.5.1's Linux wheel
is about 0.9 GB and its nvidia-*-cu12 and triton wheels about 2.1 GB more (the file sizes PyPI
lists for that release): about 3 GB that pip downloads and unpacks under TMPDIR before it
installs them (and, without a cache of its own, the cache goes there too). 5 GiB leaves room
for the build of this project and a later torch."""

ENV_JOB_MINUTES = 60
"""Walltime of the ``--on-queue`` job (a torch install takes minutes, not hours)."""
PIP_LOG = "cluster-env-pip.log"
"""pip's own debug log, kept in the venv: it names every temporary directory pip made."""
TOOLKIT_IMPORTS = "import train, cluster.job, submitit, yaml"


def project_dir() -> Path:
    """The directory that holds the ``cluster`` package (a source checkout with pyproject.toml)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise ClusterError(f"{root} holds the cluster package but no pyproject.toml: cluster env installs the "
                           "project from a source checkout (git clone it, pip install -e it, run cluster from it)")
    return root


def venv_path(spec: JobSpec) -> Path:
    """``environment.venv`` expanded here; a ClusterError when the spec has none."""
    if not spec.environment.venv:
        raise ClusterError(f"{spec.source}: environment.venv is not set (add e.g. venv: $HOME/venvs/{spec.name} "
                           "under environment:)")
    return Path(expand_path(spec.environment.venv, key="environment.venv", file=spec.source))


def venv_problem(venv: Path) -> str | None:
    """Why ``venv`` cannot run a job (None: it can): the test the job script makes, here."""
    if not (venv / "pyvenv.cfg").is_file():
        return f"{venv} is not a virtualenv (no pyvenv.cfg)"
    try:
        proc = subprocess.run([str(venv / "bin" / "python"), "-c", ""], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{venv}/bin/python does not run ({getattr(err, 'strerror', None) or type(err).__name__})"
    if proc.returncode != 0:
        return f"{venv}/bin/python does not run (exit {proc.returncode})"
    return None


def check_venv(spec: JobSpec) -> None:
    """A one-line ClusterError when the spec's venv cannot run a job on this machine."""
    problem = venv_problem(venv_path(spec))
    if problem:
        raise ClusterError(f"environment.venv: {problem}; build it with: cluster env {spec.source}")


def pip_environment(spec: JobSpec) -> dict[str, str]:
    """The environment pip runs in: ``TMPDIR`` and ``PIP_CACHE_DIR`` under the spec's tmpdir
    (created if missing), so that nothing large lands in the node's small ``/tmp``."""
    env = dict(os.environ)
    tmpdir = spec.tmpdir_path()
    if tmpdir is not None:
        try:
            tmpdir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ClusterError(f"cannot create environment.tmpdir {tmpdir} ({err.strerror})") from None
        env["TMPDIR"] = str(tmpdir)
        env["PIP_CACHE_DIR"] = str(tmpdir / "pip-cache")
    env.pop("PYTHONHOME", None)
    env.pop("PIP_REQUIRE_VIRTUALENV", None)
    return env


def requirements_path(spec: JobSpec) -> Path | None:
    """``environment.requirements_file`` expanded here and checked: a readable regular file
    (not a FIFO, a device such as /dev/zero, or a directory); None when the spec has none."""
    if not spec.environment.requirements_file:
        return None
    path = Path(expand_path(spec.environment.requirements_file, key="environment.requirements_file",
                            file=spec.source))
    where = f"{spec.source}: environment.requirements_file: {path}"
    try:
        info = path.stat()
    except OSError as err:
        raise ClusterError(f"{where}: {err.strerror or 'cannot be read'}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ClusterError(f"{where} is {rundir.kind_of(info.st_mode)}, not a file of requirements")
    if not os.access(path, os.R_OK):
        raise ClusterError(f"{where} cannot be read (permission denied)")
    return path


def pip_command(spec: JobSpec, venv: Path) -> list[str]:
    """``VENV/bin/python -m pip install --log ... -e PROJECT REQUIREMENTS... [-r FILE]``."""
    # Not `python -m pip`: a pip.py in the current directory would run instead (cluster.isolate).
    cmd = module_argv(str(venv / "bin" / "python"), "pip", "install", "--log", str(venv / PIP_LOG),
                      "-e", str(project_dir()), *spec.environment.requirements)
    path = requirements_path(spec)
    if path is not None:
        cmd += ["-r", str(path)]
    return cmd


def _check_creatable(path: Path | None, key: str) -> None:
    """``path`` is a directory, or can be made one: its nearest existing ancestor is a
    writable directory (checked before anything is created)."""
    if path is None:
        return
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing == path and path.is_dir():
        return
    if not existing.is_dir():
        raise ClusterError(f"cannot create {key} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ClusterError(f"cannot create {key} {path}: {existing} is not writable")


def _remove_new_venv(venv: Path) -> None:
    """Undo a venv this command began and could not finish (nothing half-made stays)."""
    shutil.rmtree(venv, ignore_errors=True)


def _stream(cmd: list[str], env: dict[str, str], echo: Callable[[str], None], prefix: str) -> tuple[int, str]:
    """Run ``cmd``, echoing each output line as it comes; (exit status, last non-empty line)."""
    last = ""
    with subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                echo(f"{prefix}{line}")
                last = line
    return proc.returncode, last


def build(spec: JobSpec, echo: Callable[[str], None], python: str | None = None) -> int:
    """Create (when missing) and update ``environment.venv``; 0 when the venv imports the toolkit."""
    # Every input is checked before the first file is made: a refusal leaves nothing behind.
    venv = venv_path(spec)
    cmd = pip_command(spec, venv)  # the project and environment.requirements_file
    base = python or sys.executable
    existing = (venv / "pyvenv.cfg").is_file()
    if existing:
        problem = venv_problem(venv)
        if problem:  # python -m venv keeps an existing bin/python link, even a dangling one
            raise ClusterError(f"environment.venv: {problem}, so it cannot be updated (its base Python is gone "
                               f"or broken); remove {venv} and run cluster env again")
    elif os.path.lexists(venv) and (not venv.is_dir() or venv.is_symlink() or any(venv.iterdir())):
        raise ClusterError(f"environment.venv: {venv} exists and is not a virtualenv (no pyvenv.cfg); "
                           "remove it or choose another path")
    else:
        if shutil.which(base) is None:
            raise ClusterError(f"--python {base}: no such program")
        _check_creatable(venv, "environment.venv")
    _check_creatable(spec.tmpdir_path(), "environment.tmpdir")

    env = pip_environment(spec)
    if spec.tmpdir_path() is not None:
        echo(f"pip temp: TMPDIR={env['TMPDIR']}, PIP_CACHE_DIR={env['PIP_CACHE_DIR']} (environment.tmpdir)")
    else:
        echo(f"pip temp: {tempfile.gettempdir()} (environment.tmpdir is null: pip uses the default)")
    if existing:
        echo(f"venv: updating {venv}")
    else:
        created = not os.path.lexists(venv)
        echo(f"venv: creating {venv} with {base} -m venv")
        try:
            status, last = _stream(module_argv(base, "venv", str(venv)), env, echo, "  venv: ")
        except BaseException:
            if created:
                _remove_new_venv(venv)
            raise
        if status != 0:
            if created:
                _remove_new_venv(venv)
            raise ClusterError(f"{base} -m venv {venv} failed (exit {status}): {last or 'no output'}")
    echo(f"pip: {shlex.join(cmd)}")
    status, last = _stream(cmd, env, echo, "  pip: ")
    if status != 0:
        raise ClusterError(f"pip install failed (exit {status}): {last or 'no output'}; pip's log: {venv / PIP_LOG}")
    proc = subprocess.run(code_argv(str(venv / "bin" / "python"), f"{TOOLKIT_IMPORTS}; import sys; print(sys.prefix)"),
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        raise ClusterError(f"{venv}/bin/python cannot {TOOLKIT_IMPORTS!r}: {lines[-1] if lines else proc.returncode}")
    echo(f"venv: ready: {venv} (jobs with environment.venv run {venv}/bin/python; pip's log: {venv / PIP_LOG})")
    return 0


# ---------------------------------------------------------------- --on-queue


def env_job_lines(spec_file: Path, python: str | None) -> list[str]:
    """The ``--on-queue`` job's command: this same ``cluster env``, on the node, after the prologue."""
    cmd = module_argv(sys.executable, "cluster.cli", "env", str(spec_file), *(["--python", python] if python else []))
    return [
        "# --- cluster env --on-queue: build the venv on the node, after its module loads",
        shlex.join(cmd),
        "status=$?",
        'echo "cluster env: job exit $status"',
        'exit "$status"',
    ]


def _job_spec(spec: JobSpec) -> JobSpec:
    """The env job's spec: one task on one node of the spec's queue, no venv to activate yet (it
    is what the job builds), a requirements file named absolutely (the job may start elsewhere)."""
    from cluster.spec import apply_overrides

    changes: dict[str, object] = {"environment.venv": None, "resources.nodes": 1, "resources.tasks_per_node": 1,
                                  "resources.time": ENV_JOB_MINUTES}
    return apply_overrides(spec, changes)


def on_queue(spec: JobSpec, echo: Callable[[str], None], python: str | None = None,
             poll_seconds: float = 2.0) -> int:
    """Run :func:`build` as a job on the spec's queue, wait for it, echo its output; its exit status."""
    from cluster import backends
    from cluster.backends import JobOptions
    from cluster.backends.base import poll
    from cluster.errors import SchedulerError
    from cluster.spec import apply_overrides

    backend = backends.resolve(spec.scheduler.kind)
    if not backend.dialects:
        raise ClusterError("--on-queue needs a scheduler (none answers here, or scheduler.kind is local); "
                           "run cluster env without it to build the venv on this machine")
    venv_path(spec)
    requirements = requirements_path(spec)  # checked before the job's folder is made
    if requirements is not None:  # the job may start in another directory
        spec = apply_overrides(spec, {"environment.requirements_file": str(requirements.resolve())})
    folder = spec.runs_dir_path() / ".env" / f"env-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
    folder.mkdir(parents=True)
    folder = folder.resolve()
    spec_file = folder / "spec.yaml"
    spec_file.write_text(spec.to_yaml())
    out, err = folder / "env.out", folder / "env.err"
    options = JobOptions(job_name=f"{spec.name}-env", stdout=str(out), stderr=str(err),
                         early_signal=False, requeue=False)
    script = folder / "env.sh"
    script.write_text(backends.render(_job_spec(spec), backend.kind, command=env_job_lines(spec_file, python),
                                      options=options))
    try:
        job_id = backend.probe_submit(script)
    except SchedulerError as error:
        raise ClusterError(f"the scheduler refused the env job: {error} (the script is {script})") from None
    echo(f"env job {job_id} submitted to {backend.kind} ({script}); waiting for it to end")
    poll(lambda: backend.probe_state(job_id), lambda s: s is None, interval=poll_seconds)
    text = poll(lambda: out.read_text(errors="replace") if out.exists() else "",
                lambda t: "cluster env: job exit" in t, interval=1, timeout=10)
    for line in text.splitlines():
        echo(f"  job: {line}")
    errors = err.read_text(errors="replace").strip().splitlines() if err.exists() else []
    status = next((int(l.rsplit(" ", 1)[1]) for l in reversed(text.splitlines())
                   if l.startswith("cluster env: job exit ") and l.rsplit(" ", 1)[1].isdigit()), None)
    if status != 0:
        echo(f"env job {job_id} stderr ({err}):")
        for line in errors[-10:]:
            echo(f"  job: {line}")
        raise ClusterError(f"env job {job_id} failed" + (f" (exit {status})" if status is not None else
                           " before cluster env ran (a module load or TMPDIR setup?)") + f"; see {err}")
    echo(f"env job {job_id}: done ({out})")
    return 0


# ---------------------------------------------------------------- cluster doctor


def pip_temp_check(spec: JobSpec) -> Check:
    """``cluster doctor``'s line on the free space of pip's temp dir (the spec's tmpdir)."""
    from cluster.backends import Check

    tmpdir = spec.tmpdir_path()
    where = tmpdir if tmpdir is not None else Path(tempfile.gettempdir())
    existing = where
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        stats = os.statvfs(existing)
    except OSError as err:
        return Check("warn", "pip temp", f"cannot measure free space of {where} ({err.strerror})",
                     "set environment.tmpdir to a directory on a large filesystem (e.g. $HOME/tmp)")
    free = stats.f_bavail * stats.f_frsize
    need = TORCH_TEMP_BYTES
    what = f"{where}" + ("" if existing == where else f" (to be created, in {existing})")
    source = "environment.tmpdir" if tmpdir is not None else "default temp dir: environment.tmpdir is null"
    detail = f"{what} [{source}] has {free / 2**30:.1f} GiB free; a CUDA torch install needs about {need / 2**30:.0f} GiB"
    if free >= need:
        return Check("ok", "pip temp", detail)
    return Check("warn", "pip temp", detail,
                 "set environment.tmpdir to a directory on a larger filesystem (the seed uses $HOME/tmp; "
                 "a scratch or work filesystem is better), then cluster env SPEC")
