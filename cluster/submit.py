"""Submit, resume and cancel runs through submitit (Slurm, PBS, or the local executor).

The submitting process never imports torch: the job's callable (:class:`cluster.job.TrainJob`)
imports the trainer only on the compute node. A command job (``command:`` in the spec) runs
:class:`cluster.job.CommandJob` instead, with the same run directory and bookkeeping.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Any, Iterator

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

SUBMIT_ERRORS = (FailedSubmissionError, FailedJobError)
"""What submitit raises when the scheduler refuses a job (its text carries the scheduler's output)."""

from cluster import backends
from cluster.errors import ClusterError, SchedulerError
from cluster.job import job_for
from cluster.runs import TERMINAL_STATES, Run, new_run_dir, now_iso, write_atomic
from cluster.spec import JobSpec
from train.contract import CHECKPOINT_DIR, LOGS_DIR, SPEC_FILE, rundir
from train.contract.rundir import RunFileError


def resolve_executor(spec: JobSpec, requested: str | None) -> str:
    """The backend kind: the command line's choice, else the spec's, ``auto`` detected."""
    return backends.resolve(requested or spec.scheduler.kind).kind


def make_executor(kind: str, spec: JobSpec, run_dir: Path, **kwargs: Any) -> submitit.Executor:
    return backends.get(kind).executor(spec, run_dir, **kwargs)


def _scheduler_message(err: Exception) -> str:
    """The scheduler's own words from submitit's error (its text carries the command's output)."""
    text = str(err)
    for marker in ("sbatch: error:", "qsub:", "qsub: "):
        lines = [l.strip() for l in text.splitlines() if marker in l]
        if lines:
            return " ".join(dict.fromkeys(lines))
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else text


@contextlib.contextmanager
def scheduler_refusals(what: str = "job") -> Iterator[None]:
    """Submit inside this: a refusal becomes one ClusterError with the scheduler's own words.

    submitit also echoes the scheduler's stderr before raising; that is kept out, since the
    text travels in the exception and the CLI shows it as one line.
    """
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    except SUBMIT_ERRORS as err:
        raise ClusterError(f"the scheduler refused the {what}: {_scheduler_message(err)}") from None


def prepare_run(spec: JobSpec, kind: str, run_dir: Path | None = None,
                extra: dict[str, Any] | None = None) -> Run:
    """Create the run directory with the resolved spec and a fresh run.json (plus ``extra`` keys)."""
    run = Run(run_dir or new_run_dir(spec.runs_dir_path(), spec.name))
    write_atomic(run.spec_path, spec.to_yaml())
    (run.path / CHECKPOINT_DIR).mkdir(exist_ok=True)
    run.logs_dir.mkdir(exist_ok=True)
    run.update(lambda record: record.update(new_record(spec, kind, run.id, extra)))
    return run


def new_record(spec: JobSpec, kind: str, run_id: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new run's run.json: nothing submitted yet (``state: submitting``), plus ``extra`` keys."""
    record: dict[str, Any] = {
        "run_id": run_id, "name": spec.name, "scheduler": kind, "pbs_flavor": spec.scheduler.pbs_flavor,
        "created": now_iso(), "state": "submitting", "jobs": [], "attempts": [], "requeues": 0,
        "max_requeues": spec.scheduler.max_requeues, "walltime_seconds": spec.resources.time_seconds,
        "epochs": None if spec.command else spec.train.epochs, "spec": SPEC_FILE,
    }
    if spec.command:
        record.update(kind="command", command=spec.argv())
    record.update(extra or {})
    return record


def _copy_script(job: submitit.Job, run: Run) -> None:
    source = Path(job.paths.submission_file)
    if source.exists():  # replaces a submitted.sh link, never writes through it
        write_atomic(run.script_path, rundir.read_bytes(source.parent, source.name, rundir.MAX_TEXT_BYTES * 16))


def submit(spec: JobSpec, executor: str | None = None) -> tuple[Run, str]:
    """Submit one run; return it and its job id. A refused submission leaves no run directory."""
    kind = resolve_executor(spec, executor)
    run_dir = new_run_dir(spec.runs_dir_path(), spec.name)
    try:
        run = prepare_run(spec, kind, run_dir)
        with scheduler_refusals():
            job = make_executor(kind, spec, run.path).submit(job_for(spec, str(run.path)))
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    _copy_script(job, run)
    run.add_job(job.job_id, "submit")
    return run, job.job_id


def check_run_files(run: Run) -> dict[str, Any]:
    """run.json, and every other file and folder a job of the run reads, checked before anything
    starts: run.json's fields, spec.yaml, checkpoints/ and logs/ real (no links), sidecars,
    metrics, progress and summary well-formed. run.json's record, or a one-line error."""
    from cluster.status import rows_for

    record = run.read()
    try:
        rundir.read_bytes(run.path, SPEC_FILE, rundir.MAX_TEXT_BYTES)
        rundir.check_layout(run.path)
        if run.logs_base != run.path:  # a sweep task's logs are in the sweep's logs/
            with contextlib.suppress(FileNotFoundError):
                rundir.check_dir(run.logs_base, LOGS_DIR)
    except FileNotFoundError as err:
        raise ClusterError(f"{run.path / SPEC_FILE}: missing ({err.strerror})") from None
    except RunFileError as err:
        raise ClusterError(str(err)) from None
    row = rows_for([run])[0]
    if row.diagnosis and row.diagnosis.startswith("unknown: "):
        raise ClusterError(row.diagnosis[len("unknown: "):])
    return record


def resume(run: Run) -> str:
    """Continue a dead run from its newest valid checkpoint, as a new job in the same directory."""
    from cluster.spec import load_spec
    from cluster.status import rows_for

    record = check_run_files(run)  # before anything starts: a broken run.json is refused here
    row = rows_for([run])[0]
    if row.state in ("pending", "running", "requeued"):
        raise ClusterError(f"{run.path}: still {row.state} as job {row.job_id}; cancel it first "
                           f"(cluster cancel {run.path})")
    if row.state == "completed":
        raise ClusterError(f"{run.path}: already completed; nothing to resume")
    spec = load_spec(run.spec_path)
    with scheduler_refusals():
        job = make_executor(run.scheduler(record), spec, run.path).submit(job_for(spec, str(run.path)))
    _copy_script(job, run)
    run.add_job(job.job_id, "resume")
    return job.job_id


def cancel(run: Run) -> str:
    """Cancel the run's live job; say what was signalled ("cancelled job N", or why nothing was).

    Needs a valid run.json (its job id goes into a command); another broken file of the run
    does not stop a cancel.
    """
    from cluster.status import rows_for

    record = run.read()
    try:
        backend = backends.get(run.scheduler(record))
    except ClusterError as err:
        raise ClusterError(f"{run.record_path}: scheduler: {err}") from None
    job_id = run.current_job_id(record)
    row = rows_for([run])[0]
    # A row made "unknown" by another broken file (metrics, summary): the record's own state decides.
    state = record.get("state") if (row.diagnosis or "").startswith("unknown: ") else row.state
    if state in TERMINAL_STATES or not job_id:
        return "nothing live to cancel"
    if backend.cancel(job_id, run) is False:
        return f"nothing signalled: job {job_id} is not running as this run's job (ended, or its id was reused)"

    def cancelled(record: dict[str, Any]) -> None:
        # Marked on the job itself: an attempt starting at this moment must not undo it.
        record["jobs"][-1]["cancelled"] = now_iso()
        record.update(state="cancelled", ended=now_iso())

    run.update(cancelled)
    return f"cancelled job {job_id}"


__all__ = ["submit", "resume", "cancel", "resolve_executor", "SchedulerError"]
