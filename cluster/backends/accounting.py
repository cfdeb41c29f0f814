"""What a scheduler's accounting says one job incarnation was given and used (``cluster report``).

A requeued Slurm job keeps its id, so one job id may have several incarnations: each is one
:class:`Usage`, in the order the scheduler started them. The backends fill these from their
own records (Slurm's ``sacct --duplicates``, PBS's ``qstat -x -f``); the report turns them
into hours and shares.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass
class Usage:
    """One incarnation of a job as the scheduler's accounting records it. Every figure is None
    where the scheduler does not record it."""

    job_id: str
    state: str = ""
    """The scheduler's own word for how it ended (``REQUEUED``, ``NODE_FAIL``, ``COMPLETED``)."""
    normal_state: str = "unknown"
    """``state`` in the project's words (``cluster.backends.JobInfo.state``)."""
    submitted: dt.datetime | None = None
    """When this incarnation was queued (Slurm resets it at each requeue)."""
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    elapsed_seconds: int | None = None
    cpus: int | None = None
    """CPUs allocated (all nodes together)."""
    gpus: int | None = None
    """GPUs allocated (all nodes together; Slurm's ``gres/gpu`` of AllocTRES)."""
    mem_mb: int | None = None
    """Memory allocated (all nodes together)."""
    nodes: str = ""
    """The node list it ran on."""
    cpu_seconds_allocated: int | None = None
    """Elapsed x CPUs (Slurm's CPUTimeRAW)."""
    cpu_seconds_used: float | None = None
    """CPU time its processes used (Slurm's TotalCPU of the steps, PBS's cput)."""
    peak_rss_mb: float | None = None
    """The largest resident set of one task (Slurm's MaxRSS over the steps, PBS's mem)."""
    gpu_util_percent: float | None = None
    """Mean GPU utilisation, where the site records it (Slurm's ``gres/gpuutil`` TRES)."""


def local_time(text: str) -> dt.datetime | None:
    """A scheduler's timestamp (``2026-12-06T20:39:12``, local time without a zone), aware;
    None for ``Unknown``, ``None`` and anything else that is not a time."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value.astimezone() if value.tzinfo is None else value
