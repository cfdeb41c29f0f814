"""Slurm's accounting for ``cluster report``: one ``sacct --duplicates`` call for many jobs.

``--duplicates`` because a requeued job keeps its id and Slurm resets its Submit time: without
it sacct shows only the last incarnation and every earlier one is invisible. Job rows carry the
allocation (``AllocTRES``, ``CPUTimeRAW`` = elapsed x CPUs); the ``.batch`` and step rows that
follow each job row carry what its processes used (``TotalCPU``, ``MaxRSS``, ``TRESUsageInAve``).
Slurm 22.05 has no ``Restarts`` field: incarnations are told apart by their order.
"""

from __future__ import annotations

from cluster.backends.accounting import Usage, local_time
from cluster.backends.base import ids_of, run_command
from cluster.errors import SchedulerError
from cluster.units import parse_duration_text

FIELDS = ("JobID", "State", "Submit", "Start", "End", "ElapsedRaw", "AllocTRES", "CPUTimeRAW", "TotalCPU", "MaxRSS",
          "NodeList", "TRESUsageInAve")

_MB = {"": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}


def _megabytes(text: str) -> float | None:
    """``12088K``, ``200M``, ``1.5G`` (Slurm's memory figures; a bare number is bytes) in MiB."""
    text = text.strip()
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    number = text[:-1] if unit else text
    try:
        return float(number) * _MB[unit] if unit in _MB else None
    except ValueError:
        return None


def _seconds(text: str) -> float | None:
    """``TotalCPU``'s ``[D-][HH:]MM:SS[.mmm]`` in seconds, fraction kept (short jobs use milliseconds)."""
    whole, _, fraction = text.strip().partition(".")
    seconds = parse_duration_text(whole) if whole else None
    if seconds is None:
        return None
    return seconds + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)


def _tres(text: str) -> dict[str, str]:
    """``cpu=4,gres/gpu=1,mem=200M,node=1`` as a dict."""
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def parse_sacct_duplicates(text: str) -> dict[str, list[Usage]]:
    """``sacct -D -n -P -o <FIELDS>`` output: {job id: its incarnations, in order}.

    Step rows (``7.batch``, ``7.0``, ``7_3.extern``) belong to the job row above them with
    their job id: sacct lists each incarnation's steps right after it."""
    jobs: dict[str, list[Usage]] = {}
    current: dict[str, Usage] = {}
    used_cpu: dict[int, float] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < len(FIELDS):
            continue
        row = dict(zip(FIELDS, fields))
        job_id, _, step = row["JobID"].partition(".")
        if not step:
            tres = _tres(row["AllocTRES"])
            mem = _megabytes(tres.get("mem", ""))
            usage = Usage(job_id=job_id, state=row["State"].split()[0] if row["State"].strip() else "",
                          submitted=local_time(row["Submit"]), started=local_time(row["Start"]),
                          ended=local_time(row["End"]), elapsed_seconds=_int(row["ElapsedRaw"]),
                          cpus=_int(tres.get("cpu")), gpus=_int(tres.get("gres/gpu")) or 0 if tres else None,
                          mem_mb=int(mem) if mem is not None else None, nodes=row["NodeList"],
                          cpu_seconds_allocated=_int(row["CPUTimeRAW"]),
                          cpu_seconds_used=_seconds(row["TotalCPU"]) or None)  # 0: nothing recorded
            jobs.setdefault(job_id, []).append(usage)
            current[job_id] = usage
            continue
        usage = current.get(job_id)
        if usage is None:
            continue
        # The job row's own TotalCPU is the sum of its steps where sacct fills it: the steps decide.
        cpu = _seconds(row["TotalCPU"])
        # A step killed with its node (NODE_FAIL) records no usage at all: no MaxRSS, TotalCPU 0.
        if cpu is not None and (cpu > 0 or row["MaxRSS"].strip()):
            used_cpu[id(usage)] = used_cpu.get(id(usage), 0.0) + cpu
            usage.cpu_seconds_used = used_cpu[id(usage)]
        rss = _megabytes(row["MaxRSS"]) if row["MaxRSS"].strip() else None
        if rss is not None:
            usage.peak_rss_mb = max(usage.peak_rss_mb or 0.0, rss)
        util = _tres(row["TRESUsageInAve"]).get("gres/gpuutil")
        if util is not None:
            try:
                usage.gpu_util_percent = max(usage.gpu_util_percent or 0.0, float(util))
            except ValueError:
                pass
    return jobs


def sacct_usage(job_ids: list[str]) -> dict[str, list[Usage]] | None:
    """Every incarnation of every job in ``job_ids``, from ONE ``sacct`` call; None where the
    cluster keeps no accounting (sacct disabled or absent)."""
    ids = ids_of(job_ids)
    if not ids:
        return {}
    try:
        proc = run_command(["sacct", "-D", "-n", "-P", "-j", ",".join(ids), "-o", ",".join(FIELDS)], timeout=60)
    except SchedulerError as err:
        if "accounting storage is disabled" in err.stderr.lower() or err.returncode == 127:
            return None
        raise
    return parse_sacct_duplicates(proc.stdout)
