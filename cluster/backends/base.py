"""What every backend is: the Backend interface, the job facts a scheduler reports, and the
one way to run a scheduler command.

A backend answers, for one scheduler: is it here (:meth:`Backend.available`), the submitit
executor for a run (:meth:`Backend.executor`), the batch-script directives
(:meth:`Backend.directives` and friends, filled into the one template of
:mod:`cluster.backends.script`), the state of many jobs at once (:meth:`Backend.query`),
cancelling (:meth:`Backend.cancel`), what a job does after a checkpointed stop
(:meth:`Backend.continue_job`), and its ``cluster doctor`` checks. Facts about a scheduler are
class attributes, as in submitit (``prefix = "#SBATCH"``): callers never test a name.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from cluster.errors import ClusterError, SchedulerError

if TYPE_CHECKING:  # type names only: backends never import the spec loader at run time
    import subprocess

    import submitit

    from cluster.backends.accounting import Usage
    from cluster.backends.script import JobOptions
    from cluster.runs import Run
    from cluster.spec import JobSpec

COMMAND_TIMEOUT = 60.0
"""Seconds a scheduler command may take before it counts as not answering."""

T = TypeVar("T")


@dataclass
class JobInfo:
    """What the scheduler says about one job."""

    state: str
    raw_state: str = ""
    exit_code: str = ""
    elapsed_seconds: int | None = None
    reason: str = ""
    """Why the job is in its state: for a waiting job the scheduler's word (Slurm's
    ``Resources``, ``Priority``, ``Dependency``, ``BeginTime``); empty when it gives none."""
    start_estimate: str = ""
    """When the scheduler expects a waiting job to start, as its ISO text
    (``2026-12-02T16:06:01``, the scheduler's local time); empty when it has no estimate."""


@dataclass
class Check:
    """One line of a ``cluster doctor`` report."""

    status: str
    """ok | warn | FAIL"""
    name: str
    detail: str
    hint: str = ""

    def line(self) -> str:
        text = f"{self.status:<5} {self.name}: {self.detail}"
        return text + (f"\n      -> {self.hint}" if self.hint and self.status != "ok" else "")


def run_command(cmd: list[str], *, timeout: float = COMMAND_TIMEOUT, check: bool = True,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a scheduler command; on failure raise SchedulerError with its own stderr."""
    import subprocess  # here, not at the top: `cluster render` and `check` run no command

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise SchedulerError(cmd, 127, f"{cmd[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(cmd, 124, f"no answer within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise SchedulerError(cmd, proc.returncode, proc.stderr or proc.stdout)
    return proc


def answers(cmd: list[str], timeout: float = 10) -> bool:
    """True when the command exists and exits 0 within ``timeout``."""
    import subprocess

    if shutil.which(cmd[0]) is None:
        return False
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def poll(probe: Callable[[], T], done: Callable[[T], bool], *, interval: float,
         timeout: float | None = None) -> T:
    """Call ``probe`` every ``interval`` seconds until ``done(result)`` or ``timeout``; return the
    last result (the caller tells a timeout from ``done`` being false)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        result = probe()
        if done(result) or (deadline is not None and time.monotonic() >= deadline):
            return result
        time.sleep(interval)


JOB_ID = re.compile(r"[0-9]{1,20}(?:_[0-9]{1,10}|_\[[0-9,-]{0,40}\]|\[[0-9]{0,10}\])?"
                    r"(?:\.[A-Za-z0-9][A-Za-z0-9.-]{0,100})?", re.ASCII)
"""A job id as the built-in schedulers print it and run.json records it: Slurm's ``1234``,
``1234_5`` (an array task), ``1234_[0-3]``; PBS/Torque's ``1234``, ``1234[5]``, ``1234[]``, each
optionally with its ``.server`` (:mod:`cluster.backends.pbs.jobid`); the local executor's pid."""


class Backend:
    """One scheduler. Subclasses set the class attributes and override what they support."""

    kind: str = ""
    """The name in specs (``scheduler.kind``), ``--executor`` and ``run.json``."""
    dialects: tuple[str, ...] = ()
    """Script dialects ``cluster render --scheduler`` accepts for this backend (the first is
    the default); empty for a backend that renders no script of its own."""
    prefix: str = ""
    """Directive prefix of its batch scripts (``#SBATCH``)."""
    detect_order: int = 100
    """``scheduler.kind: auto`` tries backends by this order; the local backend comes last."""
    allocates_gpus: bool = True
    """The scheduler hands jobs their GPUs (not the local executor: a job there sees this
    machine's)."""
    has_modules: bool = True
    """Jobs run where the site's environment modules are (the local executor: this machine)."""
    forgotten_job_is_dead: bool = False
    """A job the scheduler no longer knows of cannot run again (the local controller)."""
    runs_arrays: bool = True
    """Sweeps go as one array job; otherwise one job trains the tasks in turn."""
    job_id_pattern: re.Pattern[str] = JOB_ID
    """The ids its submit command prints (full match): a job id read from run.json must have
    this form before it reaches a path (``logs/<id>_*``) or a command (``scancel <id>``)."""

    # --- presence
    def available(self) -> bool:
        """Its commands answer on this machine."""
        return False

    # --- scripts (pure: no I/O)
    def dialect(self, spec: JobSpec, name: str | None) -> str:
        """The dialect for ``name`` (one of :attr:`dialects`, or None for the spec's default)."""
        return name or self.dialects[0]

    def directives(self, spec: JobSpec, options: JobOptions, dialect: str) -> list[str]:
        raise ClusterError(f"the {self.kind} backend renders no batch script")

    def workdir_lines(self, dialect: str) -> list[str]:
        return []

    def requeue_lines(self, spec: JobSpec, dialect: str) -> list[str]:
        """The standalone script's answer to the trainer's ``EXIT_REQUEUE``."""
        return []

    # --- submission and state
    def executor(self, spec: JobSpec, run_dir: Path, *, array_parallelism: int | None = None) -> submitit.Executor:
        raise NotImplementedError

    def query(self, job_ids: list[str], records: list[dict[str, Any]]) -> dict[str, JobInfo]:
        """What the scheduler says about each job, in as few commands as possible."""
        raise NotImplementedError

    def accounting(self, job_ids: list[str], records: list[dict[str, Any]]) -> dict[str, list[Usage]] | None:
        """What the scheduler's accounting recorded of each job, every incarnation in order
        (``cluster report``), from one query for all; None where it keeps no accounting."""
        return None

    def max_array_size(self) -> int | None:
        """The most tasks one array job may have here (a sweep beyond it is split into several
        arrays); None when the scheduler states no limit."""
        return None

    def cancel(self, job_id: str, run: Run) -> bool | None:
        """Cancel the job; False when nothing was signalled (the job is not this run's), else
        True or None (the scheduler's command succeeded)."""
        raise NotImplementedError

    def settle_ended(self, job_id: str, run: Run) -> bool:
        """The job ``job_id`` has ended but the run's record still says it will run: record
        why it ended when this backend can tell (the local controller's log). True when
        run.json was changed. Nothing by default: a scheduler's accounting says it."""
        return False

    # --- inside the job
    def job_environment(self, spec: JobSpec) -> None:
        """What the batch script's prologue would have done, for backends that run no script."""

    def note_restart(self, run: Run, spec: JobSpec, job_id: str, resume: dict[str, Any] | None) -> None:
        """Rank 0, as an attempt starts: record what ended the job's previous incarnation when
        the scheduler restarted it by itself (a node failure), and end the job instead of
        training when that has happened more than the spec allows. Nothing by default."""

    def rendezvous_address(self, first_node: str) -> str:
        """The address rank 0's node is reached at, for torch's MASTER_ADDR.

        ``first_node`` is the allocation's first node name (rank 0 runs there); a backend whose
        node names need not resolve (Slurm's) asks the scheduler for the node's address."""
        return first_node

    def continue_job(self, env: Any, run: Run, spec: JobSpec, remaining: int,
                     say: Callable[[str], None]) -> str | None:
        """After a checkpointed stop: make the run go on (requeue, continuation job, restart).

        Returns the id of a new job when one was submitted (the caller records it); may exit
        the process. ``say`` writes a line to the job's log, before the process may be gone.
        """
        say(f"requeueing job {env.job_id}")
        env._requeue(remaining)  # submitit: the local controller's restart
        return None

    # --- cluster doctor
    def doctor_checks(self, spec: JobSpec) -> list[Check]:
        """The scheduler's own checks: its commands answer, the queue exists, accounting."""
        return []

    def probe_submit(self, script: Path) -> str:
        """Submit ``cluster doctor --probe``'s script; its job id."""
        raise ClusterError(f"the {self.kind} backend cannot run a probe job")

    def probe_state(self, job_id: str) -> str | None:
        """The scheduler's word for a live probe job, None once it has left the queue."""
        return None

    def inspect_hint(self, job_id: str) -> str:
        return ""


def submit_array(array_ex: submitit.Executor, delayed_submissions: list, job_class: type,
                 timeout_min: float, before_start: Callable[[list], None] | None = None) -> list:
    """Submit ``delayed_submissions`` as one array job of ``array_ex``; one submitit job per task.

    Every task's submission goes into ONE file, written under a temporary name before the
    array is submitted and renamed to ``<array>_tasks.pkl`` after; each task cuts its own
    ``<array>_<i>_submitted.pkl`` from it as it starts (:mod:`cluster.backends.array_task`,
    the array's entry point: ``array_ex.entry_module``), and waits for it until then. One
    file, not one per task: a sweep's cost on the login node is its files. ``before_start``
    gets the tasks' jobs between the submission and that rename: what it writes is there
    before any task can start.
    """
    import uuid

    from submitit.core import utils

    from cluster.backends.array_task import shared_pickle

    folder = utils.JobPaths.get_first_id_independent_folder(array_ex.folder)
    folder.mkdir(parents=True, exist_ok=True)
    for delayed in delayed_submissions:
        delayed.set_timeout(timeout_min, array_ex.max_num_timeout)
    tmp = folder / f".tmp-tasks-{uuid.uuid4().hex}.pkl"
    try:
        utils.cloudpickle_dump(list(delayed_submissions), tmp)
        array_ex.parameters["map_count"] = len(delayed_submissions)
        array_ex.entry_module = ARRAY_ENTRY
        first = array_ex._submit_command(array_ex._submitit_command_str)
        parent = str(first.job_id).split("_")[0]
        jobs = [job_class(folder=array_ex.folder, job_id=f"{parent}_{i}", tasks=list(range(first.num_tasks)))
                for i in range(len(delayed_submissions))]
        if before_start is not None:
            before_start(jobs)
        os.replace(tmp, shared_pickle(folder, parent))
    finally:
        tmp.unlink(missing_ok=True)
    return jobs


ARRAY_ENTRY = "cluster.backends.array_task"
"""The module an array's tasks start with (instead of submitit's ``submitit.core._submit``)."""

SUBMITIT_ENTRY = "submitit.core._submit"
"""submitit's entry point of a job: its single jobs' and continuation links' module."""


def carry_submission(folder: str | Path, job_key: str, new_key: str, script: Path) -> None:
    """A continuation job (PBS, a Slurm chain) reads the ending job's checkpointed submission:
    its pickle and script copied under the new job's id in submitit's ``folder`` (where the
    next link looks for them in turn)."""
    from submitit.core import utils

    old, new = utils.JobPaths(folder, job_id=job_key), utils.JobPaths(folder, job_id=new_key)
    shutil.copyfile(old.submitted_pickle, new.submitted_pickle)
    shutil.copyfile(script.resolve(), new.submission_file)


def pid_alive(pid: int) -> bool:
    """The process ``pid`` exists on this machine and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ids_of(job_ids: Iterable[str]) -> list[str]:
    """Distinct non-empty job ids, sorted (one scheduler query asks for each once)."""
    return sorted({str(j) for j in job_ids if j})
