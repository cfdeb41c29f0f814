"""What state is each run in? One scheduler query per command kind for all runs together.

Sources, in order of trust:
1. the run's own record: the job writes ``completed`` (and ``summary.json``) itself;
2. the scheduler: Slurm's ``sacct`` for every job it knows, and ``squeue --start`` for why
   waiting jobs wait and when they should start, or, on clusters without accounting,
   ``scontrol show job`` (running, pending and recently ended jobs); PBS's
   ``qstat``; the local executor's controller process;
3. the run's record again when the scheduler has forgotten the job.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from cluster import backends
from cluster.backends import JobInfo
from cluster.backends.base import poll
from cluster.errors import ClusterError
from cluster.runs import TERMINAL_STATES, Run
from train.contract import METRICS_FILE, PROGRESS_FILE, RUN_JSON, SUMMARY_FILE, SWEEP_JSON, rundir
from train.contract.rundir import RunFileError

log = logging.getLogger("cluster")

@dataclass
class Row:
    """One line of ``cluster status``."""

    run_id: str
    name: str
    scheduler: str
    job_id: str | None
    state: str
    elapsed_seconds: int | None = None
    walltime_seconds: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    metric: float | None = None
    metric_name: str = "val_auc"
    requeues: int = 0
    path: str = ""
    diagnosis: str | None = None
    action: str | None = None
    scheduler_state: str = ""
    notes: list[str] = field(default_factory=list)
    """What happened to the run that its state does not say (a node failure it resumed after)."""
    wait_reason: str = ""
    """Why the scheduler has not started the waiting job (Slurm's ``Resources``, ``Priority``,
    ``Dependency``, ``BeginTime`` after a requeue); empty when not waiting or none given."""
    start_estimate: str = ""
    """The scheduler's estimate of when the waiting job starts (its ISO text); empty when none."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- rows


def _scheduler_info(records: list[tuple[Run, dict[str, Any]]]) -> dict[tuple[str, str], JobInfo]:
    """One query per backend for the current jobs of every run."""
    by_kind: dict[str, list[str]] = {}
    for run, record in records:
        job_id = run.current_job_id(record)
        if job_id:
            by_kind.setdefault(run.scheduler(record), []).append(job_id)
    info: dict[tuple[str, str], JobInfo] = {}
    for kind, ids in by_kind.items():
        try:
            found = backends.get(kind).query(ids, [r for _, r in records])
        except ClusterError as err:
            # No answer is no new information: the runs' own files decide, and we say so.
            log.warning("warning: %s; states of %s runs come from their run directories", err, kind)
            continue
        info.update({(kind, k): v for k, v in found.items()})
    return info


def read_run_metrics(run: Run) -> tuple[list[dict[str, Any]], int]:
    """(metrics.jsonl's records, how many lines were skipped as not JSON objects); none when
    missing. A RunFileError for a link, a FIFO, a directory or an oversized file."""
    try:
        raw = rundir.read_bytes(run.path, METRICS_FILE, rundir.MAX_METRICS_BYTES)
    except FileNotFoundError:
        return [], 0
    return rundir.metrics_records(raw)


def _progress_epoch(run: Run) -> int | None:
    """progress.json's completed epochs (None when missing); a RunFileError when malformed."""
    try:
        progress = rundir.read_object(run.path, PROGRESS_FILE)
    except FileNotFoundError:
        return None
    epoch = progress.get("epoch")
    if epoch is not None and not rundir.is_count(epoch):
        raise RunFileError(run.path / PROGRESS_FILE, f"epoch: must be a whole number >= 0 (is {str(epoch)[:40]!r})")
    return epoch


def has_summary(run: Run) -> bool:
    """summary.json exists and is a JSON object (the trainer wrote it on completion); a
    RunFileError when it is a link, a FIFO, not JSON or not an object."""
    try:
        rundir.read_object(run.path, SUMMARY_FILE)
    except FileNotFoundError:
        return False
    return True


def _elapsed_from_record(record: dict[str, Any], state: str) -> int | None:
    """Seconds since the first attempt started (to its end for ended runs): local runs have no sacct."""
    import datetime as dt

    attempts = record.get("attempts") or []
    if not attempts:
        return None
    try:
        start = dt.datetime.fromisoformat(attempts[0]["started"])
        end_text = record.get("ended") if state in TERMINAL_STATES else None
        end = dt.datetime.fromisoformat(end_text) if end_text else dt.datetime.now().astimezone()
        return max(0, int((end - start).total_seconds()))
    except (KeyError, ValueError, TypeError, OverflowError):
        return None


def _forgotten_is_dead(record: dict[str, Any]) -> bool:
    try:
        return backends.get(record.get("scheduler", "local")).forgotten_job_is_dead
    except ClusterError:
        return False


def decide_state(record: dict[str, Any], job: JobInfo | None, run: Run) -> str:
    """Combine the run's own record with what the scheduler says."""
    own = record.get("state", "unknown")
    if own == "completed" or has_summary(run):
        return "completed"
    jobs = record.get("jobs") or []
    if own == "cancelled" or (jobs and jobs[-1].get("cancelled")):
        return "cancelled"
    if job is None or job.state == "unknown":
        # The scheduler has forgotten the job (or never answered): the run's files tell.
        if own in TERMINAL_STATES:
            return own
        return "failed" if own in ("running", "requeued") and _forgotten_is_dead(record) else own
    if job.state == "ended":  # a local controller that exited, a PBS job qstat calls finished
        return own if own in TERMINAL_STATES else "failed"
    if job.state == "pending" and (own == "requeued" or (record.get("requeues") or 0) > 0):
        return "requeued"
    if job.state == "completed" and own != "completed":
        # The job step exited 0 without finishing the training (stopped on a signal).
        return "requeued" if own == "requeued" else "failed"
    return job.state


def _valid_record(run: Run) -> dict[str, Any]:
    """The run's record, or an ``unreadable`` one: a broken run.json shows as one row, not a crash."""
    try:
        record = run.read()
        run.current_job_id(record)
        backends.get(run.scheduler(record))
        return record
    except ClusterError as err:
        message = str(err) if str(run.record_path) in str(err) else f"{run.record_path}: {err}"
        return {"state": "unknown", "error": message, "unreadable": True}


def _row(run: Run, record: dict[str, Any], info: dict[tuple[str, str], JobInfo], metric: str) -> Row:
    """The run's row; "unknown" with the file and what is wrong when one of its files is broken."""
    if not record.get("unreadable"):
        try:
            return _row_of(run, record, info, metric)
        except (ClusterError, RunFileError, OSError) as err:
            record = {"state": "unknown", "error": str(err), "unreadable": True, "name": record.get("name", "")}
    return Row(run_id=run.id, name=str(record.get("name") or ""), scheduler="-", job_id=None, state="unknown",
               path=str(run.path), diagnosis=f"unknown: {record['error']}", action="fix or remove that file")


def _row_of(run: Run, record: dict[str, Any], info: dict[tuple[str, str], JobInfo], metric: str) -> Row:
    kind = run.scheduler(record)
    job_id = run.current_job_id(record)
    job = info.get((kind, job_id)) if job_id else None
    state = decide_state(record, job, run)
    if job is not None and job.state == "ended" and record.get("state") not in TERMINAL_STATES \
            and backends.get(kind).settle_ended(job_id, run):
        # Nothing will run the job again: run.json now says so, with the reason.
        record = _valid_record(run)
        state = decide_state(record, job, run)
    records, skipped = read_run_metrics(run)
    metrics = records[-1] if records else None
    epoch = _progress_epoch(run)
    if metrics and rundir.is_count(metrics.get("epoch")) and (epoch is None or metrics["epoch"] >= epoch):
        epoch = metrics["epoch"]
    value = (metrics or {}).get(metric)
    row = Row(
        run_id=run.id, name=str(record.get("name", "")), scheduler=kind, job_id=job_id, state=state,
        elapsed_seconds=job.elapsed_seconds if job and job.elapsed_seconds is not None
        else _elapsed_from_record(record, state),
        walltime_seconds=_int(record.get("walltime_seconds")), epoch=epoch, epochs=_int(record.get("epochs")),
        metric=value if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
        metric_name=metric, requeues=_int(record.get("requeues")) or 0,
        path=str(run.path), scheduler_state=job.raw_state if job else "",
        notes=node_failure_notes(record),
    )
    if skipped:
        row.notes.append(f"{METRICS_FILE}: {skipped} line(s) skipped (not JSON objects with a whole-number epoch)")
    if job and state in ("pending", "requeued") and job.state in ("pending", "requeued"):
        row.wait_reason, row.start_estimate = job.reason, job.start_estimate
    if state not in ("completed", "running", "pending", "requeued"):
        from cluster.diagnose import diagnose

        row.diagnosis, row.action = diagnose(run, record, state, job)
        # Without cgroups Slurm calls a memory kill FAILED; the job's stderr says what it was.
        if state == "failed" and row.diagnosis == "out of memory":
            row.state = "out-of-memory"
    return row


def node_failure_notes(record: dict[str, Any]) -> list[str]:
    """One line per node failure the run resumed after: "node n1 failed at step 812; resumed on n2"."""
    notes = []
    for failure in record.get("node_failures") or []:
        if not isinstance(failure, dict):
            continue
        step = failure.get("failed_at_step")
        line = f"node {failure.get('node', '?')} failed" + (f" at step {step}" if isinstance(step, int) else "")
        if failure.get("gave_up"):
            line += f"; not resumed: {failure['gave_up']}"
        elif failure.get("resumed_on"):
            line += f"; resumed on {failure['resumed_on']} from step {failure.get('resumed_from_step', 0)}"
        notes.append(line)
    return notes


def _number(value: Any) -> float:
    """A metric for an f-string's :.4f (NaN for a missing or non-numeric one)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rows_for(runs: list[Run], metric: str = "val_auc") -> list[Row]:
    """One refresh: read every run's files, ask each scheduler once."""
    records = [(run, _valid_record(run)) for run in runs]
    info = _scheduler_info([(r, rec) for r, rec in records if not rec.get("unreadable")])
    return [_row(run, record, info, metric) for run, record in records]


def discover_runs(refs: list[str], runs_dir: str | Path = "runs") -> list[Run]:
    """Runs named on the command line (a sweep directory stands for its tasks), or all under runs_dir."""
    from cluster.runs import find_run

    if not refs:
        root = Path(runs_dir)
        top = _run_dirs(root)
        found = _with_run_json(top) + _with_run_json([p for folder in top for p in _run_dirs(folder)])
        return [Run(p) for p in found]
    runs: list[Run] = []
    for ref in refs:
        path = Path(ref)
        if (path / SWEEP_JSON).is_file():
            runs += [Run(p) for p in _with_run_json(_run_dirs(path))]
        else:
            runs.append(find_run(ref, runs_dir))
    return runs


def _run_dirs(folder: Path) -> list[Path]:
    """The folders in ``folder``, sorted (none when it cannot be listed)."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def _with_run_json(folders: list[Path]) -> list[Path]:
    """Those that hold a run.json entry of any kind: a broken one (a FIFO, a dangling link)
    is still a run, shown as its own "unknown" row (a glob would skip a dangling link)."""
    return [p for p in folders if os.path.lexists(p / RUN_JSON)]


def wait_for(run: Run, echo: Callable[[str], None], interval: float = 2.0) -> Row:
    """Follow a run until it ends, echoing each new epoch line; return its final row."""
    seen = 0

    def refresh() -> Row:
        nonlocal seen
        row = rows_for([run])[0]
        for m in read_run_metrics(run)[0][seen:]:
            if row.epochs is None:  # a command job: its program chose what its lines hold
                values = [f"{k} {v:.4f}" for k, v in m.items() if k != "epoch" and isinstance(v, float)]
                echo("  ".join([f"epoch {m.get('epoch')}", *values]))
            else:
                echo(f"epoch {m.get('epoch')}/{row.epochs}  val_loss {_number(m.get('val_loss')):.4f}"
                     f"  val_auc {_number(m.get('val_auc')):.4f}")
            seen += 1
        return row

    return poll(refresh, lambda row: row.state in TERMINAL_STATES, interval=interval)
