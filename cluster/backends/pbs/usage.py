"""PBS's accounting for ``cluster report``: ``qstat -x -f`` of finished jobs (PBS Pro keeps them
in its job history; Torque's ``qstat -f`` only until ``keep_completed`` runs out).

A PBS job runs once per id (a continuation is a new job), so each id has one incarnation.
``Resource_List`` is what was asked and given, ``resources_used`` what was used; times are
``ctime``/``qtime`` (queued), ``stime`` (started) and ``mtime`` (last change: the end, for a
finished job).
"""

from __future__ import annotations

import datetime as dt

from cluster.backends.accounting import Usage
from cluster.backends.base import ids_of, run_command
from cluster.backends.pbs.jobid import PBSOutputError
from cluster.backends.pbs.qstat import parse_qstat_json, parse_qstat_text, qstat_command
from cluster.errors import SchedulerError
from cluster.units import parse_duration_text

_KB = {"b": 1 / 1024, "kb": 1.0, "mb": 1024.0, "gb": 1024.0 ** 2, "tb": 1024.0 ** 3}


def _mb(text: str | None) -> float | None:
    """PBS memory (``2314520kb``, ``16gb``) in MiB."""
    if not text:
        return None
    text = text.strip().lower()
    for unit in ("kb", "mb", "gb", "tb", "b"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * _KB[unit] / 1024
    return float(text) / (1024 * 1024) if text.isdigit() else None


def _time(text: str | None) -> dt.datetime | None:
    """PBS's ``Wed Nov 27 07:00:12 2024`` (the server's local time), aware."""
    try:
        return dt.datetime.strptime((text or "").strip(), "%a %b %d %H:%M:%S %Y").astimezone()
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def usage_from_attributes(job_id: str, attrs: dict[str, str]) -> Usage:
    """One job's :class:`Usage` from its ``qstat -f`` attributes (flattened: ``resources_used.mem``)."""
    elapsed = parse_duration_text(attrs.get("resources_used.walltime"))
    cpus = _int(attrs.get("Resource_List.ncpus"))
    used_cpu = parse_duration_text(attrs.get("resources_used.cput"))
    mem = _mb(attrs.get("Resource_List.mem"))
    started = _time(attrs.get("stime"))
    finished = attrs.get("job_state") in ("F", "C", "X")
    letter = attrs.get("job_state", "")
    normal = "ended" if finished else {"R": "running", "E": "running", "Q": "pending", "H": "pending",
                                       "W": "pending"}.get(letter, "unknown")
    return Usage(job_id=job_id, state=letter, normal_state=normal, submitted=_time(attrs.get("qtime") or attrs.get("ctime")),
                 started=started, ended=_time(attrs.get("obittime") or attrs.get("mtime")) if finished else None,
                 elapsed_seconds=elapsed, cpus=cpus, gpus=_int(attrs.get("Resource_List.ngpus")) or 0,
                 mem_mb=int(mem) if mem is not None else None, nodes=attrs.get("exec_host", ""),
                 cpu_seconds_allocated=cpus * elapsed if cpus is not None and elapsed is not None else None,
                 cpu_seconds_used=float(used_cpu) if used_cpu is not None else None,
                 peak_rss_mb=_mb(attrs.get("resources_used.mem")))


def parse_usage(text: str, flavor: str) -> dict[str, list[Usage]]:
    """``qstat -x -f -F json`` (PBS Pro) or ``qstat -f`` text (Torque) as {job id: [its one Usage]}."""
    jobs = parse_qstat_json(text) if flavor == "pbspro" else parse_qstat_text(text)
    return {job_id: [usage_from_attributes(job_id, attrs)] for job_id, attrs in jobs.items()}


def pbs_usage(job_ids: list[str], flavor: str) -> dict[str, list[Usage]] | None:
    """Every job of ``job_ids`` that qstat still keeps, from one ``qstat`` call; None when qstat
    cannot be run (the run's own records then tell)."""
    ids = ids_of(job_ids)
    if not ids:
        return {}
    try:
        # Exits non-zero when some ids left its history; it still prints the others.
        proc = run_command(qstat_command(flavor, ids), timeout=60, check=False)
    except SchedulerError:
        return None
    try:
        return parse_usage(proc.stdout, flavor)
    except PBSOutputError:
        return None
