"""What state is each run in? One scheduler query per command kind for all runs together.

Sources, in order of trust:
1. the run's own record: the job writes ``completed`` (and ``summary.json``) itself;
2. the scheduler: Slurm's ``sacct`` for every job it knows, or, on clusters without
   accounting, ``scontrol show job`` (running, pending and recently ended jobs); PBS's
   ``qstat``; the local executor's controller process;
3. the run's record again when the scheduler has forgotten the job.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cluster import shell
from cluster.backends import JobInfo
from cluster.errors import SchedulerError
from cluster.runs import TERMINAL_STATES, Run

SLURM_STATES = {
    "PENDING": "pending", "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running",
    "RESIZING": "running", "SUSPENDED": "pending", "STOPPED": "pending",
    "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued", "REQUEUE_FED": "requeued", "PREEMPTED": "requeued",
    "COMPLETED": "completed", "FAILED": "failed", "TIMEOUT": "timeout", "DEADLINE": "timeout",
    "CANCELLED": "cancelled", "OUT_OF_MEMORY": "out-of-memory", "NODE_FAIL": "node-fail", "BOOT_FAIL": "node-fail",
}


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- Slurm


def _seconds(text: str) -> int | None:
    """Slurm's ``[D-]HH:MM:SS`` / ``MM:SS`` elapsed times."""
    text = text.strip()
    if not text or text in ("UNLIMITED", "INVALID", "Partition_Limit"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(float(p)) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return ((days * 24 + h) * 60 + m) * 60 + s


def _slurm_state(raw: str) -> str:
    word = raw.split()[0].rstrip("+") if raw.strip() else ""
    return SLURM_STATES.get(word, "unknown")


def slurm_jobs(job_ids: Iterable[str]) -> dict[str, JobInfo]:
    """One ``sacct`` call; without accounting, one ``scontrol show job`` call instead."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    try:
        proc = shell.run(["sacct", "-X", "-n", "-P", "-j", ",".join(ids),
                          "-o", "JobID,State,ExitCode,ElapsedRaw,Reason"], timeout=30)
        return _parse_sacct(proc.stdout)
    except SchedulerError as err:
        if "accounting storage is disabled" not in err.stderr.lower() and err.returncode != 127:
            raise
    proc = shell.run(["scontrol", "show", "job", "-o"], timeout=30)
    return {k: v for k, v in _parse_scontrol(proc.stdout).items() if k.split("_")[0] in ids or k in ids}


def _parse_sacct(text: str) -> dict[str, JobInfo]:
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5:
            continue
        job_id, raw, exit_code, elapsed, reason = fields[:5]
        jobs[job_id] = JobInfo(state=_slurm_state(raw), raw_state=raw, exit_code=exit_code,
                               elapsed_seconds=int(elapsed) if elapsed.isdigit() else None, reason=reason)
    return jobs


def _parse_scontrol(text: str) -> dict[str, JobInfo]:
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobId" not in fields:
            continue
        job_id = fields["JobId"]
        if fields.get("ArrayJobId") and fields.get("ArrayTaskId", "").isdigit():
            job_id = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
        raw = fields.get("JobState", "")
        jobs[job_id] = JobInfo(state=_slurm_state(raw), raw_state=raw, exit_code=fields.get("ExitCode", ""),
                               elapsed_seconds=_seconds(fields.get("RunTime", "")), reason=fields.get("Reason", ""))
    return jobs


# ---------------------------------------------------------------- local


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def local_jobs(job_ids: Iterable[str]) -> dict[str, JobInfo]:
    return {j: JobInfo(state="running" if j.isdigit() and _pid_alive(int(j)) else "ended") for j in job_ids}


# ---------------------------------------------------------------- rows


def _scheduler_info(records: list[tuple[Run, dict[str, Any]]]) -> dict[tuple[str, str], JobInfo]:
    by_kind: dict[str, list[str]] = {}
    for run, record in records:
        job_id = run.current_job_id(record)
        if job_id:
            by_kind.setdefault(record.get("scheduler", "local"), []).append(job_id)
    info: dict[tuple[str, str], JobInfo] = {}
    for kind, ids in by_kind.items():
        try:
            found = _query(kind, ids, records)
        except SchedulerError as err:
            # No answer is no new information: the runs' own files decide, and we say so.
            print(f"warning: {err}; states of {kind} runs come from their run directories", file=sys.stderr)
            continue
        info.update({(kind, k): v for k, v in found.items()})
    return info


def _query(kind: str, ids: list[str], records: list[tuple[Run, dict[str, Any]]]) -> dict[str, JobInfo]:
    if kind == "slurm":
        return slurm_jobs(ids)
    if kind == "pbs":
        from cluster.pbs.status import pbs_jobs

        flavor = next((r.get("pbs_flavor", "pbspro") for _, r in records if r.get("scheduler") == "pbs"), "pbspro")
        return pbs_jobs(ids, flavor)
    return local_jobs(ids)


def _last_metrics(run: Run) -> dict[str, Any] | None:
    path = run.path / "metrics.jsonl"
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def _progress_epoch(run: Run) -> int | None:
    try:
        progress = json.loads((run.path / "progress.json").read_text())
        return int(progress.get("epoch"))
    except (OSError, ValueError, TypeError):
        return None


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
    except (KeyError, ValueError):
        return None
    return max(0, int((end - start).total_seconds()))


def decide_state(record: dict[str, Any], job: JobInfo | None, run: Run) -> str:
    """Combine the run's own record with what the scheduler says."""
    own = record.get("state", "unknown")
    if own == "completed" or (run.path / "summary.json").exists():
        return "completed"
    jobs = record.get("jobs") or []
    if own == "cancelled" or (jobs and jobs[-1].get("cancelled")):
        return "cancelled"
    if job is None or job.state == "unknown":
        # The scheduler has forgotten the job (or never answered): the run's files tell.
        if own in TERMINAL_STATES:
            return own
        return "failed" if own in ("running", "requeued") and record.get("scheduler") == "local" else own
    if job.state == "ended":  # a local controller that exited, a PBS job qstat calls finished
        return own if own in TERMINAL_STATES else "failed"
    if job.state == "pending" and record.get("requeues", 0) > 0:
        return "requeued"
    if job.state == "completed" and own != "completed":
        # The job step exited 0 without finishing the training (stopped on a signal).
        return "requeued" if own == "requeued" else "failed"
    return job.state


def rows_for(runs: list[Run], metric: str = "val_auc") -> list[Row]:
    """One refresh: read every run's files, ask each scheduler once."""
    records = []
    for run in runs:
        try:
            records.append((run, run.read()))
        except Exception:  # noqa: BLE001 - a broken run.json shows as unknown, not a crash
            records.append((run, {"state": "unknown"}))
    info = _scheduler_info(records)
    rows = []
    for run, record in records:
        kind = record.get("scheduler", "local")
        job_id = run.current_job_id(record) if record.get("jobs") else None
        job = info.get((kind, job_id)) if job_id else None
        state = decide_state(record, job, run)
        metrics = _last_metrics(run)
        epoch = _progress_epoch(run)
        if metrics and (epoch is None or metrics.get("epoch", 0) >= epoch):
            epoch = metrics.get("epoch")
        rows.append(Row(
            run_id=run.id, name=record.get("name", ""), scheduler=kind, job_id=job_id, state=state,
            elapsed_seconds=job.elapsed_seconds if job and job.elapsed_seconds is not None
            else _elapsed_from_record(record, state),
            walltime_seconds=record.get("walltime_seconds"), epoch=epoch, epochs=record.get("epochs"),
            metric=(metrics or {}).get(metric), metric_name=metric, requeues=record.get("requeues", 0),
            path=str(run.path), scheduler_state=job.raw_state if job else "",
        ))
        if state not in ("completed", "running", "pending", "requeued"):
            from cluster.diagnose import diagnose

            rows[-1].diagnosis, rows[-1].action = diagnose(run, record, state, job)
            # Without cgroups Slurm calls a memory kill FAILED; the job's stderr says what it was.
            if state == "failed" and rows[-1].diagnosis == "out of memory":
                rows[-1].state = "out-of-memory"
    return rows


def discover_runs(refs: list[str], runs_dir: str | Path = "runs") -> list[Run]:
    """Runs named on the command line (a sweep directory stands for its tasks), or all under runs_dir."""
    from cluster.runs import find_run

    if not refs:
        root = Path(runs_dir)
        found = sorted(p.parent for p in root.glob("*/run.json")) + sorted(p.parent for p in root.glob("*/*/run.json"))
        return [Run(p) for p in found]
    runs: list[Run] = []
    for ref in refs:
        path = Path(ref)
        if (path / "sweep.json").is_file():
            runs += [Run(p.parent) for p in sorted(path.glob("*/run.json"))]
        else:
            runs.append(find_run(ref, runs_dir))
    return runs


def wait_for(run: Run, poll: float = 2.0, echo=print) -> Row:
    """Follow a run until it ends, echoing each new epoch line; return its final row."""
    seen = 0
    while True:
        row = rows_for([run])[0]
        path = run.path / "metrics.jsonl"
        if path.exists():
            lines = path.read_text().splitlines()
            for line in lines[seen:]:
                try:
                    m = json.loads(line)
                except ValueError:
                    break
                echo(f"epoch {m.get('epoch')}/{row.epochs}  val_loss {m.get('val_loss', float('nan')):.4f}"
                     f"  val_auc {m.get('val_auc', float('nan')):.4f}")
                seen += 1
        if row.state in TERMINAL_STATES:
            return row
        time.sleep(poll)
