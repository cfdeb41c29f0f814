"""PBS Pro and Torque job states -> submitit's state names and the project's states.

submitit's watcher speaks Slurm's words ("PENDING", "RUNNING", "COMPLETED", ...);
``InfoWatcher.is_done`` treats everything outside its "incomplete" list as
finished. The project's normalised states are ``NORMAL_STATES``.

A finished job (PBS Pro ``F``/``X``, Torque ``C``) is judged by its exit status:

* PBS Pro (OpenPBS ``src/include/job.h``): negative values are set by PBS itself,
  e.g. ``-29`` JOB_EXEC_KILL_WALLTIME, ``-27``/``-26`` memory/vmem limit;
  ``256 + n`` means PBS killed the job with signal ``n`` (``271`` = SIGTERM, also
  what ``qdel`` and, in versions before the ``-2x`` codes, a walltime kill give).
* Torque (Adaptive Computing "Job Exit Status", 6.x): ``-10`` memory limit,
  ``-11`` walltime, ``-12`` CPU time (before 6.x, ``-10`` was any resource
  limit); ``271`` for a running job that was deleted.

A signal kill (``>= 256``) is told apart as "timeout" when the job used at
least its requested walltime, else "cancelled".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cluster.runs import ALL_STATES
from cluster.units import parse_duration_text as walltime_seconds

__all__ = [
    "Flavor",
    "JobStatus",
    "NORMAL_STATES",
    "status_from_attributes",
    "walltime_seconds",
]

Flavor = Literal["pbspro", "torque"]

#: The project's normalised states (one vocabulary, defined with the run records).
NORMAL_STATES = ALL_STATES


@dataclass(frozen=True)
class JobStatus:
    """What one qstat record says about a job."""

    letter: str
    """The scheduler's ``job_state`` letter as printed (``R``, ``F``, ``C``, ...)."""
    submitit_state: str
    """submitit's (Slurm-like) state name: ``RUNNING``, ``COMPLETED``, ``FINISHED``, ..."""
    state: str
    """The project's normalised state, one of ``NORMAL_STATES``."""
    exit_status: int | None = None
    """The job's exit status when it has finished and the scheduler reports one."""
    reason: str = ""
    """A short explanation (hold, exit code meaning, the scheduler's comment)."""


# (submitit state, normalised state, reason) for the letters that need no exit status.
_ACTIVE: dict[str, tuple[str, str, str]] = {
    "Q": ("PENDING", "pending", "queued"),
    "H": ("PENDING", "pending", "held"),
    "W": ("PENDING", "pending", "waiting for its start time"),
    "T": ("PENDING", "pending", "in transit"),
    "R": ("RUNNING", "running", ""),
    "E": ("COMPLETING", "running", "exiting"),
    # Suspended jobs will resume: not done for the watcher, "pending" like Slurm's
    # SUSPENDED in cluster.status.
    "S": ("SUSPENDED", "pending", "suspended"),
    "U": ("SUSPENDED", "pending", "suspended (workstation busy)"),
    "B": ("RUNNING", "running", "array job begun"),
    "M": ("UNKNOWN", "unknown", "moved to another server"),
}

_PBSPRO_CODES: dict[int, tuple[str, str, str]] = {
    -24: ("FAILED", "failed", "killed: ncpus (burst) limit exceeded"),
    -25: ("FAILED", "failed", "killed: ncpus (sum) limit exceeded"),
    -26: ("OUT_OF_MEMORY", "out-of-memory", "killed: vmem limit exceeded"),
    -27: ("OUT_OF_MEMORY", "out-of-memory", "killed: mem limit exceeded"),
    -28: ("FAILED", "failed", "killed: cput limit exceeded"),
    -29: ("TIMEOUT", "timeout", "killed: walltime limit exceeded"),
    -14: ("NODE_FAIL", "node-fail", "a sister node failed"),
    -20: ("NODE_FAIL", "node-fail", "lost contact with the mother superior node"),
}

_TORQUE_CODES: dict[int, tuple[str, str, str]] = {
    -10: ("OUT_OF_MEMORY", "out-of-memory", "killed: memory limit exceeded"),
    -11: ("TIMEOUT", "timeout", "killed: walltime limit exceeded"),
    -12: ("FAILED", "failed", "killed: CPU time limit exceeded"),
}


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None and str(value).strip() else None
    except ValueError:
        return None


def _used_its_walltime(attrs: Mapping[str, str]) -> bool:
    used = walltime_seconds(attrs.get("resources_used.walltime"))
    limit = walltime_seconds(attrs.get("Resource_List.walltime"))
    return used is not None and limit is not None and limit > 0 and used >= limit


def _finished(flavor: Flavor, letter: str, exit_status: int | None, attrs: Mapping[str, str]) -> JobStatus:
    comment = attrs.get("comment", "")
    if exit_status is None:
        if "delete" in comment.lower():
            return JobStatus(letter, "CANCELLED", "cancelled", None, comment)
        # Slurm's Torque wrapper prints C for every ended job and no exit status:
        # the job is over, its outcome is in its result file.
        return JobStatus(letter, "FINISHED", "unknown", None, comment or "finished, exit status not reported")
    if exit_status == 0:
        return JobStatus(letter, "COMPLETED", "completed", 0, comment)
    if flavor == "torque" and exit_status == -10 and _used_its_walltime(attrs):
        # Before Torque 6, -10 meant "some resource limit", walltime included.
        return JobStatus(letter, "TIMEOUT", "timeout", exit_status, "killed: resource limit, at its walltime")
    codes = _PBSPRO_CODES if flavor == "pbspro" else _TORQUE_CODES
    if exit_status in codes:
        submitit_state, state, reason = codes[exit_status]
        return JobStatus(letter, submitit_state, state, exit_status, reason)
    if exit_status >= 256:
        signal = exit_status - 256
        if signal in (9, 15):  # what a walltime kill and qdel both send
            if _used_its_walltime(attrs):
                reason = f"killed by signal {signal} at its walltime"
                return JobStatus(letter, "TIMEOUT", "timeout", exit_status, reason)
            reason = f"killed by signal {signal} (qdel)"
            return JobStatus(letter, "CANCELLED", "cancelled", exit_status, reason)
        return JobStatus(letter, "FAILED", "failed", exit_status, f"killed by signal {signal}")
    if exit_status < 0:
        reason = f"the scheduler could not run it (exit status {exit_status})"
        return JobStatus(letter, "FAILED", "failed", exit_status, reason)
    if exit_status > 128:
        return JobStatus(letter, "FAILED", "failed", exit_status, f"a process was killed by signal {exit_status - 128}")
    return JobStatus(letter, "FAILED", "failed", exit_status, f"exit status {exit_status}")


def status_from_attributes(flavor: Flavor, attrs: Mapping[str, str]) -> JobStatus:
    """Map one job's qstat attributes (flattened: ``Resource_List.walltime``) to a JobStatus.

    PBS Pro reports ``Exit_status``, Torque ``exit_status``; either is accepted.
    """
    letter = (attrs.get("job_state") or "").strip().upper()[:1]
    if letter in ("F", "X", "C"):
        raw_exit = attrs.get("Exit_status", attrs.get("exit_status"))
        return _finished(flavor, letter, _int_or_none(raw_exit), attrs)
    if letter == "Q" and (_int_or_none(attrs.get("run_count")) or 0) > 0:
        return JobStatus(letter, "REQUEUED", "requeued", None, "queued again after running")
    if letter in _ACTIVE:
        submitit_state, state, reason = _ACTIVE[letter]
        comment = attrs.get("comment", "")
        if letter in ("Q", "H", "W") and comment:
            reason = f"{reason}: {comment}"
        return JobStatus(letter, submitit_state, state, None, reason)
    return JobStatus(letter, "UNKNOWN", "unknown", None, f"unknown job_state {attrs.get('job_state')!r}")
