"""``cluster doctor``: is this login node ready to submit the spec's job?

Checks, each printed as ``ok``/``warn``/``FAIL`` with a one-line hint:
the scheduler's commands exist and answer (and the spec's partition/queue exists),
accounting (``sacct``) works, the runs directory is writable, the spec's modules
are known, the compute-node Python imports the toolkit (and torch, timed), and pip's temp
dir (environment.tmpdir, where ``cluster env`` installs torch) has room for a CUDA build.

``--probe`` submits a one-minute job with the spec's resources and module loads; it
reports hostname, ``module list``, ``CUDA_VISIBLE_DEVICES``, the torch version,
``torch.cuda.is_available()``, each GPU's name and memory and TMPDIR's free space,
and doctor prints that report. The report is written under the runs directory, so a
probe that comes back also shows that the compute node sees that directory.

Nothing here imports torch: the compute-node Python is run as a subprocess.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from cluster import backends
from cluster.backends import Backend, Check, JobOptions, modules_init, python_for, shell_path
from cluster.backends.base import poll
from cluster.errors import ClusterError, SchedulerError
from cluster.env import pip_temp_check
from cluster.spec import JobSpec, expand_path

PROBE_WAIT_SECONDS = 180
TOOLKIT_IMPORTS = "import train, cluster.job, submitit, yaml"


class Report:
    """Checks handed to ``echo`` as they are made (a slow one should not hide the ones before it)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.checks: list[Check] = []
        self.echo = echo

    def add(self, status: str, name: str, detail: str, hint: str = "") -> Check:
        return self.extend([Check(status, name, detail, hint)])[-1]

    def extend(self, checks: list[Check]) -> list[Check]:
        for check in checks:
            self.checks.append(check)
            self.echo(check.line())
        return checks


# ---------------------------------------------------------------- scheduler


def check_scheduler(report: Report, spec: JobSpec) -> Backend:
    """Which backend the spec's jobs would go to, reporting on it."""
    backend = backends.resolve(spec.scheduler.kind)
    if spec.scheduler.kind == "auto" and not backend.dialects:
        report.add("warn", "scheduler", "no Slurm or PBS answers here: jobs will use the local executor",
                   "on a cluster, load the scheduler's module; or set scheduler.kind: local to silence this")
        return backend
    report.extend(backend.doctor_checks(spec))
    return backend


# ---------------------------------------------------------------- files and python


def check_runs_dir(report: Report, spec: JobSpec) -> None:
    path = spec.runs_dir_path()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        report.add("FAIL", "runs dir", f"{existing} is not a directory", "set output.runs_dir to a directory")
        return
    try:  # os.access can be wrong on network filesystems: try a real file
        fd, tmp = tempfile.mkstemp(prefix=".cluster-doctor-", dir=existing)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        report.add("FAIL", "runs dir", f"{existing} is not writable ({err.strerror})",
                   "set output.runs_dir to a writable directory on a filesystem the compute nodes see")
        return
    detail = f"{path} writable" if existing == path else f"{path} will be created (in writable {existing})"
    report.add("ok", "runs dir", detail)


def check_modules(report: Report, spec: JobSpec) -> None:
    for name in spec.environment.modules:
        script = "\n".join(modules_init() + [f"module is-avail {shlex.quote(name)}"])
        try:
            ok = subprocess.run(["bash", "-c", script], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            report.add("ok", "module", f"{name} is available")
        else:
            report.add("warn", "module", f"{name} not found by `module is-avail` on this node",
                       "compute nodes may differ: check with --probe, or fix environment.modules")


def _timed(cmd: list[str], timeout: float = 120) -> tuple[int, str, float]:
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found", 0.0
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {timeout:.0f} s", float(timeout)
    output = (proc.stdout + proc.stderr).strip()
    return proc.returncode, output, time.perf_counter() - started


def check_python(report: Report, spec: JobSpec) -> None:
    python = expand_path(python_for(spec), strict=False)
    rc, out, seconds = _timed([python, "-c", f"{TOOLKIT_IMPORTS}; import sys; print(sys.version.split()[0])"])
    if rc != 0:
        last = out.splitlines()[-1] if out else f"exit {rc}"
        hint = (f"build environment.venv with: cluster env {spec.source}" if spec.environment.venv else
                "install the project in that environment (pip install -e .), or set environment.python")
        report.add("FAIL", "python", f"{python} cannot {TOOLKIT_IMPORTS!r}: {last}",
                   f"{hint}; if it exists only on compute nodes, check with --probe")
        return
    report.add("ok", "python", f"{python} (Python {out.splitlines()[-1]}) imports train, cluster, submitit, yaml"
               f" ({seconds:.1f} s)")
    rc, out, seconds = _timed([python, "-c", "import torch; print(torch.__version__)"])
    if rc != 0:
        last = out.splitlines()[-1] if out else f"exit {rc}"
        report.add("FAIL", "torch", f"import torch failed: {last}",
                   "install torch in that environment (or load its module in environment.modules)")
    else:
        report.add("ok", "torch", f"torch {out.splitlines()[-1]} imports in {seconds:.1f} s "
                   "(each job pays this once at start)")


# ---------------------------------------------------------------- probe


PROBE_PYTHON = r'''
import sys, time
started = time.perf_counter()
try:
    import torch
except Exception as err:
    print(f"torch: import failed: {type(err).__name__}: {err}")
else:
    print(f"torch version: {torch.__version__} (import {time.perf_counter() - started:.1f} s)")
    available = torch.cuda.is_available()
    print(f"cuda available: {available}")
    if available:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            print(f"gpu {i}: {props.name}, {props.total_memory / 2**30:.1f} GiB")
print(f"python: {sys.executable} {sys.version.split()[0]}")
try:
    import train, cluster.job, submitit, yaml
    print("toolkit imports: ok")
except Exception as err:
    print(f"toolkit imports: failed: {type(err).__name__}: {err}")
'''


def probe_lines(spec: JobSpec) -> list[str]:
    """The probe job's command: facts about the node, one ``key: value`` line each."""
    python = shell_path(spec.environment.python) if spec.environment.python else shlex.quote(sys.executable)
    return [
        "# --- cluster doctor --probe",
        *modules_init(),  # for `module list` even when the spec loads no modules
        'echo "hostname: $(hostname)"',
        'echo "job id: ${SLURM_JOB_ID:-${PBS_JOBID:-unknown}}"',
        'echo "CUDA_VISIBLE_DEVICES: ${CUDA_VISIBLE_DEVICES:-<unset>}"',
        'echo "module list:"',
        "if type module >/dev/null 2>&1; then module list 2>&1 | sed 's/^/    /';"
        " else echo '    (no module command)'; fi",
        'echo "TMPDIR: ${TMPDIR:-<unset>}"',
        'df -Ph "${TMPDIR:-/tmp}" | awk \'NR==2 {print "TMPDIR free: " $4 " of " $2}\'',
        f"{python} - <<'CLUSTER_DOCTOR_PROBE' 2>&1",
        PROBE_PYTHON.strip(),
        "CLUSTER_DOCTOR_PROBE",
        'echo "probe: done"',
    ]


def _probe_dir(spec: JobSpec) -> Path:
    root = spec.runs_dir_path() / ".doctor"
    path = root / f"probe-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    path.mkdir(parents=True)
    return path.resolve()


def _submit_probe(report: Report, spec: JobSpec, backend: Backend) -> tuple[str, Path] | None:
    """Render and submit the probe job; its id and output file (None when refused)."""
    from cluster.spec import apply_overrides

    probe_spec = apply_overrides(spec, {"resources.time": 1})
    folder = _probe_dir(spec)
    out, err = folder / "probe.out", folder / "probe.err"
    options = JobOptions(job_name=f"{spec.name}-probe", stdout=str(out), stderr=str(err),
                         early_signal=False, requeue=False)
    script = folder / "probe.sh"
    script.write_text(backends.render(probe_spec, backend.kind, command=probe_lines(probe_spec), options=options))
    try:
        job_id = backend.probe_submit(script)
    except SchedulerError as error:
        report.add("FAIL", "probe", f"submission refused: {error}",
                   f"the spec's resources do not fit this cluster; the script is {script}")
        return None
    report.echo(f"probe: job {job_id} submitted ({script}); waiting up to {PROBE_WAIT_SECONDS:.0f} s")
    return job_id, out


def _probe_output(report: Report, job_id: str, out: Path) -> str:
    """The probe's report, echoed (the file can lag the job's end on a network filesystem)."""
    text = poll(lambda: out.read_text(errors="replace") if out.exists() else "", lambda t: "probe: done" in t,
                interval=1, timeout=10)
    report.echo(f"probe report (job {job_id}, {out}):")
    for line in text.splitlines():
        report.echo(f"    {line}")
    err = out.with_suffix(".err")
    errors = err.read_text(errors="replace").strip() if err.exists() else ""
    if errors:
        report.echo(f"probe stderr ({err}):")
        for line in errors.splitlines()[-10:]:
            report.echo(f"    {line}")
    return text


def run_probe(report: Report, spec: JobSpec, backend: Backend, wait: float = PROBE_WAIT_SECONDS) -> None:
    """Submit the probe job, wait for it (bounded), report on what it saw."""
    if not backend.dialects:
        report.add("warn", "probe", "no scheduler: nothing to probe (jobs run here, as checked above)")
        return
    submitted = _submit_probe(report, spec, backend)
    if submitted is None:
        return
    job_id, out = submitted
    state = poll(lambda: backend.probe_state(job_id), lambda s: s is None, interval=2, timeout=wait)
    if state is not None:
        backend.cancel(job_id, None)
        report.add("FAIL", "probe", f"job {job_id} still '{state}' after {wait:.0f} s; cancelled it",
                   "the queue is busy or the resources cannot be met now; try again later, or check: "
                   + backend.inspect_hint(job_id))
        return
    text = _probe_output(report, job_id, out)
    if "probe: done" not in text:
        report.add("FAIL", "probe", f"job {job_id} ended without finishing its report",
                   f"see {out.with_suffix('.err')}: a module load or TMPDIR setup may have failed, or "
                   f"{out.parent} is not visible from the compute node")
    elif "torch version:" not in text:
        report.add("FAIL", "probe", "torch does not import on the compute node",
                   "install torch in environment.python's environment, or load its module")
    elif spec.resources.gpus_per_node and "cuda available: True" not in text:
        report.add("FAIL", "probe", f"{spec.resources.gpus_per_node} GPU(s) requested but torch sees none",
                   "load CUDA in environment.modules and install a CUDA build of torch")
    elif "toolkit imports: ok" not in text:
        report.add("FAIL", "probe", "the compute node cannot import the toolkit",
                   "install the project in environment.python's environment (pip install -e .)")
    else:
        report.add("ok", "probe", f"job {job_id} ran and reported")


# ---------------------------------------------------------------- command


def doctor(spec_path: str | None, overrides: list[str], probe: bool, echo: Callable[[str], None]) -> int:
    """Run the checks (and the probe job); 1 when any check failed."""
    from cluster.spec import load_spec, spec_from_dict

    if spec_path:
        spec = load_spec(spec_path, overrides)
    else:
        if overrides:
            raise ClusterError("--set needs a job spec (cluster doctor SPEC --set KEY=VALUE)")
        spec = spec_from_dict({"name": "doctor"}, source="<defaults>")
        echo("no job spec given: checking with default settings")
    report = Report(echo)
    backend = check_scheduler(report, spec)
    check_runs_dir(report, spec)
    if spec.environment.modules and backend.has_modules:
        check_modules(report, spec)
    check_python(report, spec)
    report.extend([pip_temp_check(spec)])  # cluster env installs torch through it
    if probe:
        run_probe(report, spec, backend)
    failed = [c for c in report.checks if c.status == "FAIL"]
    warned = [c for c in report.checks if c.status == "warn"]
    echo(f"doctor: {len(failed)} failed, {len(warned)} warnings, "
         f"{len(report.checks) - len(failed) - len(warned)} ok")
    return 1 if failed else 0
