"""``cluster doctor``: is this login node ready to submit the spec's job?

Checks, each printed as ``ok``/``warn``/``FAIL`` with a one-line hint:
the scheduler's commands exist and answer (and the spec's partition/queue exists),
accounting (``sacct``) works, the runs directory is writable, the spec's modules
are known, the compute-node Python imports the toolkit (and torch, timed), and pip's temp
dir (environment.tmpdir, where ``cluster env`` installs torch) has room for a CUDA build.

``--probe`` submits a one-minute job with the spec's resources and module loads; it
reports hostname, ``module list`` and TMPDIR's free space, and from every task (under
``srun`` on Slurm, with the task's own GPU binding) the torch version and its CUDA build,
``torch.cuda.is_available()``, the arch list, cuDNN and NCCL versions, the visible GPUs
(name, capability, memory) and whether a matrix product and a convolution ran on each;
doctor prints that report and compares it with the spec (GPUs requested, seen, working).
The report is written under the runs directory, so a
probe that comes back also shows that the compute node sees that directory.

Nothing here imports torch: the compute-node Python is run as a subprocess.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from cluster import backends
from cluster.backends import Backend, Check, JobOptions, modules_init, python_for, shell_path
from cluster.isolate import SAFE_PATH, code_argv
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


def check_right_sizing(report: Report, spec: JobSpec) -> None:
    """What the spec's latest measured earlier run says of its requests (``cluster report``'s
    right-sizing lines); nothing when no earlier run has measurements."""
    from cluster.report import advice_for_spec

    run_id, lines = advice_for_spec(spec.name, spec.runs_dir_path())
    if run_id is None:
        return
    if not lines:
        report.add("ok", "right-sizing", f"the requests fit what run {run_id} was measured to use")
    for line in lines:
        report.add("warn", "right-sizing", f"{line} (measured in run {run_id})",
                   f"advice only, never applied: edit the spec; details: cluster report {run_id}")


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
    rc, out, seconds = _timed(code_argv(python, f"{TOOLKIT_IMPORTS}; import sys; print(sys.version.split()[0])"))
    if rc != 0:
        last = out.splitlines()[-1] if out else f"exit {rc}"
        hint = (f"build environment.venv with: cluster env {spec.source}" if spec.environment.venv else
                "install the project in that environment (pip install -e .), or set environment.python")
        report.add("FAIL", "python", f"{python} cannot {TOOLKIT_IMPORTS!r}: {last}",
                   f"{hint}; if it exists only on compute nodes, check with --probe")
        return
    report.add("ok", "python", f"{python} (Python {out.splitlines()[-1]}) imports train, cluster, submitit, yaml"
               f" ({seconds:.1f} s)")
    rc, out, seconds = _timed(code_argv(python, "import torch; print(torch.__version__)"))
    if rc != 0:
        last = out.splitlines()[-1] if out else f"exit {rc}"
        report.add("FAIL", "torch", f"import torch failed: {last}",
                   "install torch in that environment (or load its module in environment.modules)")
    else:
        report.add("ok", "torch", f"torch {out.splitlines()[-1]} imports in {seconds:.1f} s "
                   "(each job pays this once at start)")


# ---------------------------------------------------------------- probe


PROBE_PYTHON = r"""
import os, sys, time
task = os.environ.get("SLURM_PROCID", os.environ.get("PMI_RANK", "0"))

def say(line):
    print(f"task {task}: {line}", flush=True)

say(f"host: {os.uname().nodename}, CUDA_VISIBLE_DEVICES: {os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}")
started = time.perf_counter()
try:
    import torch
except Exception as err:
    say(f"torch: import failed: {type(err).__name__}: {err}")
else:
    say(f"torch version: {torch.__version__} (import {time.perf_counter() - started:.1f} s)")
    say(f"torch cuda build: {torch.version.cuda or 'none (a CPU-only build)'}")
    available = torch.cuda.is_available()
    say(f"cuda available: {available}")
    if available:
        say(f"arch list: {' '.join(torch.cuda.get_arch_list())}")
        say(f"cudnn: {torch.backends.cudnn.version()}, nccl: {'.'.join(map(str, torch.cuda.nccl.version()))}")
        count = torch.cuda.device_count()
        say(f"visible gpus: {count}")
        for i in range(count):
            props = torch.cuda.get_device_properties(i)
            try:  # a matrix product (cuBLAS) and a convolution (cuDNN) on this GPU, checked
                x = torch.ones(64, 64, device=f"cuda:{i}")
                conv = torch.nn.functional.conv2d(torch.ones(1, 1, 8, 8, device=x.device),
                                                  torch.ones(1, 1, 3, 3, device=x.device))
                ok = (x @ x).sum().item() == 64 ** 3 and conv.sum().item() == 36 * 9
                kernel = "ok" if ok else "FAILED: wrong result"
            except Exception as err:
                kernel = f"FAILED: {type(err).__name__}: {str(err).strip().splitlines()[0]}"
            say(f"gpu {i}: {props.name}, capability {props.major}.{props.minor}, "
                f"{props.total_memory / 2**30:.1f} GiB, kernel: {kernel}")
    else:
        say("visible gpus: 0 (no usable CUDA: training would run on the CPU)")
say(f"python: {sys.executable} {sys.version.split()[0]}")
try:
    import train, cluster.job, submitit, yaml
    say("toolkit imports: ok")
except Exception as err:
    say(f"toolkit imports: failed: {type(err).__name__}: {err}")
"""
"""Run by every task of the probe job (under srun on Slurm, so that each task sees the GPUs
its binding gives it): facts about the task, one ``task N: key: value`` line each. The
kernel check runs a matrix product and a convolution on each visible GPU, so a wheel without
kernels for the GPU's architecture ("no kernel image") or a broken cuDNN fails here."""


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
        # The submit directory off sys.path: a user's train.py there must not stand in for ours.
        f"probe_code={shlex.quote(SAFE_PATH + chr(10) + PROBE_PYTHON.strip())}",
        # Every task under srun (its own GPU binding); one process where there is no srun.
        'if [ -n "${SLURM_JOB_ID:-}" ] && command -v srun >/dev/null 2>&1; then',
        f'    srun --kill-on-bad-exit=0 {python} -c "$probe_code" 2>&1',
        "else",
        f'    {python} -c "$probe_code" 2>&1',
        "fi",
        'echo "probe: done"',
    ]


def probe_verdict(spec: JobSpec, text: str) -> tuple[str, str, str]:
    """(status, detail, hint) of a finished probe report (``text``, all tasks' lines)."""
    gpus = spec.resources.gpus_per_node
    lines = text.splitlines()
    failed_kernels = [line.strip() for line in lines if "kernel: FAILED" in line]
    if "torch version:" not in text:
        return ("FAIL", "torch does not import on the compute node",
                "install torch in environment.python's environment, or load its module")
    if failed_kernels:
        return ("FAIL", f"a CUDA kernel failed: {failed_kernels[0]}",
                "a wheel without kernels for this GPU (compare the capability with the arch list), or a broken "
                "CUDA/cuDNN: install a torch build for this GPU")
    if gpus and "cuda available: True" not in text:
        why = " (torch is a CPU-only build)" if "none (a CPU-only build)" in text else ""
        return ("FAIL", f"{gpus} GPU(s) requested but torch sees none{why}",
                "load CUDA in environment.modules and install a CUDA build of torch")
    counts = [int(n) for n in re.findall(r"task \d+: visible gpus: (\d+)", text)]
    odd = sorted({c for c in counts if c not in (1, gpus)})
    if gpus and odd:
        return ("FAIL", f"a task sees {odd[0]} GPU(s), but the spec asks for {gpus} per node",
                "each task must see either all of the node's GPUs or one of its own: check the site's GPU binding")
    if "toolkit imports: ok" not in text or "toolkit imports: failed" in text:
        return ("FAIL", "the compute node cannot import the toolkit",
                "install the project in environment.python's environment (pip install -e .)")
    tasks = len(re.findall(r"task \d+: toolkit imports: ok", text))
    if gpus:
        return "ok", f"{tasks} task(s) ran a CUDA kernel on each of their GPUs and reported", ""
    return "ok", f"{tasks} task(s) ran and reported (no GPUs requested)", ""


def _probe_dir(spec: JobSpec) -> Path:
    root = spec.runs_dir_path() / ".doctor"
    path = root / f"probe-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
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
        return
    status, detail, hint = probe_verdict(spec, text)
    report.add(status, "probe", f"job {job_id}: {detail}" if status == "ok" else detail, hint)


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
    if spec_path:
        check_right_sizing(report, spec)
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
