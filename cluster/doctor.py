"""``cluster doctor``: is this login node ready to submit the spec's job?

Checks, each printed as ``ok``/``warn``/``FAIL`` with a one-line hint:
the scheduler's commands exist and answer (and the spec's partition/queue exists),
accounting (``sacct``) works, the runs directory is writable, the spec's modules
are known, and the compute-node Python imports the toolkit (and torch, timed).

``--probe`` submits a one-minute job with the spec's resources and module loads; it
reports hostname, ``module list``, ``CUDA_VISIBLE_DEVICES``, the torch version,
``torch.cuda.is_available()``, each GPU's name and memory and TMPDIR's free space,
and doctor prints that report. The report is written under the runs directory, so a
probe that comes back also shows that the compute node sees that directory.

Nothing here imports torch: the compute-node Python is run as a subprocess.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cluster import shell
from cluster.errors import ClusterError, SchedulerError
from cluster.spec import JobSpec

PROBE_WAIT_SECONDS = 180
TOOLKIT_IMPORTS = "import train, cluster.job, submitit, yaml"
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol")
PBS_COMMANDS = ("qsub", "qstat", "qdel")


@dataclass
class Check:
    """One line of the report."""

    status: str
    """ok | warn | FAIL"""
    name: str
    detail: str
    hint: str = ""

    def line(self) -> str:
        text = f"{self.status:<5} {self.name}: {self.detail}"
        return text + (f"\n      -> {self.hint}" if self.hint and self.status != "ok" else "")


class Report:
    """Checks printed as they are made (a slow one should not hide the ones before it)."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(self, status: str, name: str, detail: str, hint: str = "") -> Check:
        check = Check(status, name, detail, hint)
        self.checks.append(check)
        print(check.line(), flush=True)
        return check

    @property
    def failed(self) -> bool:
        return any(c.status == "FAIL" for c in self.checks)


# ---------------------------------------------------------------- scheduler


def _slurm_partitions() -> list[str]:
    proc = shell.run(["sinfo", "-h", "-o", "%P"], timeout=15)
    return [p.strip().rstrip("*") for p in proc.stdout.split() if p.strip()]


def check_scheduler(report: Report, spec: JobSpec) -> str:
    """Which scheduler the spec's jobs would go to (slurm | pbs | local), reporting on it."""
    wanted = spec.scheduler.kind
    if wanted == "local":
        report.add("ok", "scheduler", "scheduler.kind is local: jobs run on this machine (local executor)")
        return "local"
    slurm_present = [c for c in SLURM_COMMANDS if shutil.which(c)]
    pbs_present = [c for c in PBS_COMMANDS if shutil.which(c)]
    kind = wanted if wanted != "auto" else shell.detect_scheduler()
    if kind == "slurm":
        missing = [c for c in SLURM_COMMANDS if c not in slurm_present]
        if missing:
            report.add("FAIL", "scheduler", f"Slurm commands missing: {', '.join(missing)}",
                       "load the Slurm module or add its bin directory to PATH")
            return kind
        try:
            partitions = _slurm_partitions()
        except SchedulerError as err:
            report.add("FAIL", "scheduler", f"sinfo does not answer ({err})",
                       "is slurmctld up and SLURM_CONF right? try: sinfo")
            return kind
        report.add("ok", "scheduler", f"Slurm answers (partitions: {', '.join(partitions) or 'none'})")
        queue = spec.resources.queue
        if queue and queue not in partitions:
            report.add("FAIL", "partition", f"resources.queue {queue!r} is not a partition here",
                       f"use one of: {', '.join(partitions)}")
        elif queue:
            report.add("ok", "partition", f"{queue} exists")
        return kind
    if kind == "pbs":
        missing = [c for c in PBS_COMMANDS if c not in pbs_present]
        if missing:
            report.add("FAIL", "scheduler", f"PBS commands missing: {', '.join(missing)}",
                       "load the PBS module or add its bin directory to PATH")
        elif not shell.answers(["qstat", "-B"], timeout=15):
            report.add("FAIL", "scheduler", "qstat -B does not answer", "is the PBS server up? try: qstat -B")
        else:
            report.add("ok", "scheduler", f"PBS answers (qstat -B; flavour {spec.scheduler.pbs_flavor})")
        return kind
    report.add("warn", "scheduler", "no Slurm or PBS answers here: jobs will use the local executor",
               "on a cluster, load the scheduler's module; or set scheduler.kind: local to silence this")
    return "local"


def check_accounting(report: Report, kind: str, spec: JobSpec) -> None:
    if kind == "slurm":
        if not shutil.which("sacct"):
            report.add("warn", "accounting", "sacct not found",
                       "status falls back to scontrol, which forgets jobs minutes after they end")
            return
        try:
            shell.run(["sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID"], timeout=20)
        except SchedulerError as err:
            report.add("warn", "accounting", f"sacct does not work ({err})",
                       "status falls back to scontrol, which forgets jobs minutes after they end")
            return
        report.add("ok", "accounting", "sacct answers")
    elif kind == "pbs" and spec.scheduler.pbs_flavor == "pbspro":
        if shell.answers(["qstat", "-x"], timeout=15):
            report.add("ok", "accounting", "qstat -x answers (job history)")
        else:
            report.add("warn", "accounting", "qstat -x does not answer (no job history)",
                       "ended jobs vanish from qstat; status then relies on the run directories")


# ---------------------------------------------------------------- files and python


def check_runs_dir(report: Report, runs_dir: str) -> None:
    path = Path(os.path.expandvars(runs_dir)).expanduser()
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
    from cluster.render.common import modules_init

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


def compute_python(spec: JobSpec) -> str:
    """The interpreter the jobs run: ``environment.python``, else the one running ``cluster``."""
    return spec.environment.python or sys.executable


def check_python(report: Report, spec: JobSpec) -> None:
    python = os.path.expandvars(compute_python(spec))
    rc, out, seconds = _timed([python, "-c", f"{TOOLKIT_IMPORTS}; import sys; print(sys.version.split()[0])"])
    if rc != 0:
        last = out.splitlines()[-1] if out else f"exit {rc}"
        report.add("FAIL", "python", f"{python} cannot {TOOLKIT_IMPORTS!r}: {last}",
                   "install the project in that environment (pip install -e .), or set environment.python; "
                   "if it exists only on compute nodes, check with --probe")
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
    from cluster.render.common import modules_init, shell_path

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


def _probe_dir(runs_dir: str) -> Path:
    root = Path(os.path.expandvars(runs_dir)).expanduser() / ".doctor"
    path = root / f"probe-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    path.mkdir(parents=True)
    return path.resolve()


def _submit(kind: str, script: Path) -> str:
    if kind == "slurm":
        return shell.run(["sbatch", "--parsable", str(script)], timeout=60).stdout.strip().split(";")[0]
    return shell.run(["qsub", str(script)], timeout=60).stdout.strip()


def _job_state(kind: str, job_id: str) -> str | None:
    """The scheduler's state word for a live job, or None once the job has left the queue."""
    if kind == "slurm":
        proc = shell.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], timeout=20, check=False)
        text = proc.stdout.strip()
        return text or None
    proc = shell.run(["qstat", "-f", job_id], timeout=20, check=False)
    match = re.search(r"job_state = (\w)", proc.stdout)
    if proc.returncode != 0 or not match or match.group(1) in ("C", "F"):
        return None
    return match.group(1)


def _cancel(kind: str, job_id: str) -> None:
    shell.run(["scancel" if kind == "slurm" else "qdel", job_id], timeout=20, check=False)


def run_probe(report: Report, spec: JobSpec, kind: str, wait: float = PROBE_WAIT_SECONDS) -> None:
    """Submit the probe job, wait for it (bounded), print its report."""
    from cluster.render import JobOptions, render
    from cluster.spec import apply_overrides

    if kind == "local":
        report.add("warn", "probe", "no scheduler: nothing to probe (jobs run here, as checked above)")
        return
    probe_spec = apply_overrides(spec, {"resources.time": 1})
    folder = _probe_dir(spec.output.runs_dir)
    out, err = folder / "probe.out", folder / "probe.err"
    options = JobOptions(job_name=f"{spec.name}-probe", stdout=str(out), stderr=str(err),
                         early_signal=False, requeue=False)
    script = folder / "probe.sh"
    script.write_text(render(probe_spec, kind, command=probe_lines(probe_spec), options=options))
    try:
        job_id = _submit(kind, script)
    except SchedulerError as error:
        report.add("FAIL", "probe", f"submission refused: {error}",
                   f"the spec's resources do not fit this cluster; the script is {script}")
        return
    print(f"probe: job {job_id} submitted ({script}); waiting up to {wait:.0f} s", flush=True)
    deadline = time.monotonic() + wait
    state = _job_state(kind, job_id)
    while state is not None and time.monotonic() < deadline:
        time.sleep(2)
        state = _job_state(kind, job_id)
    if state is not None:
        _cancel(kind, job_id)
        report.add("FAIL", "probe", f"job {job_id} still '{state}' after {wait:.0f} s; cancelled it",
                   "the queue is busy or the resources cannot be met now; try again later, or check: "
                   + (f"squeue -j {job_id}" if kind == "slurm" else f"qstat -f {job_id}"))
        return
    # The output file can lag the job's end on a network filesystem.
    text = ""
    for _ in range(10):
        text = out.read_text(errors="replace") if out.exists() else ""
        if "probe: done" in text:
            break
        time.sleep(1)
    print(f"probe report (job {job_id}, {out}):")
    for line in text.splitlines():
        print(f"    {line}")
    errors = err.read_text(errors="replace").strip() if err.exists() else ""
    if errors:
        print(f"probe stderr ({err}):")
        for line in errors.splitlines()[-10:]:
            print(f"    {line}")
    if "probe: done" not in text:
        report.add("FAIL", "probe", f"job {job_id} ended without finishing its report",
                   f"see {err}: a module load or TMPDIR setup may have failed, or {out.parent} is not "
                   "visible from the compute node")
        return
    if "torch version:" not in text:
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


def doctor(spec_path: str | None, overrides: list[str], probe: bool) -> int:
    """Run the checks (and the probe job); 1 when any check failed."""
    from cluster.spec import load_spec, spec_from_dict

    if spec_path:
        spec = load_spec(spec_path, overrides)
    else:
        if overrides:
            raise ClusterError("--set needs a job spec (cluster doctor SPEC --set KEY=VALUE)")
        spec = spec_from_dict({"name": "doctor"}, source="<defaults>")
        print("no job spec given: checking with default settings")
    report = Report()
    kind = check_scheduler(report, spec)
    check_accounting(report, kind, spec)
    check_runs_dir(report, spec.output.runs_dir)
    if spec.environment.modules and kind != "local":
        check_modules(report, spec)
    check_python(report, spec)
    if probe:
        run_probe(report, spec, kind)
    failed = [c for c in report.checks if c.status == "FAIL"]
    warned = [c for c in report.checks if c.status == "warn"]
    print(f"doctor: {len(failed)} failed, {len(warned)} warnings, "
          f"{len(report.checks) - len(failed) - len(warned)} ok")
    return 1 if failed else 0
