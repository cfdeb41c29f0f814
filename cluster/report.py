"""``cluster report``: what each run was allocated, what it used, and what work it redid, across
every attempt (requeues, walltime continuations, chain links, node failures).

Sources, for all the runs of one report together:

1. the scheduler's accounting, ONE query per backend (Slurm: ``sacct --duplicates``, every
   incarnation of a requeued job; PBS: ``qstat -x -f``): allocation, elapsed, queue wait,
   peak memory, CPU time;
2. the run's own records: ``run.json`` (every job and attempt, node failures), the trainer's
   ``attempts.jsonl`` (first step and stop of each attempt), ``metrics.jsonl``,
   ``progress.json`` and ``summary.json`` (steps, checkpoint hold-up). Without accounting, the
   times and the allocation come from these too (the spec's request x the attempt's own times),
   and the report says so (``source: run records``).

Steps redone by an attempt are the steps it trained past the checkpoint the next attempt resumed
from: zero after a checkpointed stop, the work since the last checkpoint after a node failure.

Right-sizing lines come from measured figures only (peak memory and CPU time from accounting,
elapsed times of a completed run); a run without them gets none. They are advice: nothing is
applied.

Library only: nothing here prints (``cluster/cli.py`` does).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster import backends
from cluster.backends import JobInfo, Usage
from cluster.errors import ClusterError
from cluster.runs import Run
from cluster.units import format_duration, format_memory, format_walltime, parse_memory
from train.contract import rundir
from train.contract import (METRICS_FILE, PROGRESS_FILE, SPEC_FILE, SUMMARY_FILE, SWEEP_JSON, parse_walltime,
                            read_attempt_events, read_metrics)

SLACK_SECONDS = 5
"""How far run.json's attempt start (written by the job) may lie from the scheduler's start of
the same incarnation (clocks read at different moments)."""

WALLTIME_REASONS = ("SIGUSR2", "deadline")
"""Stop reasons that mean the walltime was near (Slurm's early USR2, the trainer's own deadline)."""

MEASURED = "sacct"


@dataclass
class AttemptRow:
    """One attempt of a run: one incarnation of one job."""

    number: int
    """1-based, in the order the attempts started (run.json's ``attempts``); 0 for an incarnation
    the accounting knows but that never recorded an attempt (it died before its program started)."""
    job_id: str
    ended_by: str
    """How it ended: completed, walltime (the early warning; the job requeued itself), requeued
    (a requeue or preemption: SIGTERM), node-failure, chain-link (a new job continued it; with
    "walltime, " before it on the walltime warning), resumed (stopped or died; ``cluster
    resume`` went on), failed, cancelled, timeout, out-of-memory, running, waiting (the last
    attempt of a run waiting to start again), or the scheduler's own word for an incarnation
    that recorded no attempt."""
    submitted: str | None = None
    started: str | None = None
    ended: str | None = None
    queue_seconds: int | None = None
    elapsed_seconds: int | None = None
    node: str = ""
    cpus: int | None = None
    gpus: int | None = None
    mem_mb: int | None = None
    cpu_hours: float | None = None
    gpu_hours: float | None = None
    start_step: int | None = None
    end_step: int | None = None
    steps: int | None = None
    steps_redone: int | None = None
    first_step_seconds: float | None = None
    """From the attempt's start to its first optimizer step (setup, data, resume)."""
    peak_rss_mb: float | None = None
    cpu_efficiency: float | None = None
    """CPU time used over elapsed x allocated CPUs."""
    gpu_util_percent: float | None = None
    useful_hours: float | None = None
    """Allocated GPU-hours (CPU-hours for a CPU run) spent training steps that were kept."""
    scheduler_state: str = ""
    source: str = "run records"


@dataclass
class Totals:
    """Sums over attempts (of a run) or runs (of a sweep); None where no part had the figure."""

    attempts: int = 0
    elapsed_seconds: int | None = None
    queue_seconds: int | None = None
    cpu_hours: float | None = None
    gpu_hours: float | None = None
    steps: int | None = None
    steps_redone: int | None = None
    useful_hours: float | None = None
    unit: str = "CPU"
    """What useful_hours and useful_share count: GPU-hours when the run had GPUs, else CPU-hours."""
    useful_share: float | None = None


@dataclass
class RunReport:
    """The ledger of one run."""

    run_id: str
    name: str
    path: str
    scheduler: str
    state: str
    source: str
    """``sacct`` / ``qstat`` (the scheduler's accounting), or ``run records`` (none answered)."""
    attempts: list[AttemptRow] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    requested: dict[str, Any] = field(default_factory=dict)
    """The spec's request: mem_mb (per node), time_seconds, nodes, tasks_per_node, cpus_per_task,
    gpus_per_node."""
    checkpoint_seconds: float | None = None
    """Time the training loop was held up by checkpoints, over all attempts."""
    advice: list[str] = field(default_factory=list)
    sweep: str | None = None
    """The sweep directory the run is a task of."""


@dataclass
class Report:
    """A report: its runs, and per sweep the totals of its tasks."""

    runs: list[RunReport]
    sweeps: dict[str, Totals] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [asdict(r) for r in self.runs], "sweeps": {k: asdict(v) for k, v in self.sweeps.items()}}


# ---------------------------------------------------------------- reading the run's own records


def _time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.astimezone() if value.tzinfo is None else value


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _from_epoch(seconds: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds).astimezone() if isinstance(seconds, (int, float)) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json(run: Run, name: str) -> dict[str, Any]:
    """A JSON object of the run directory, read through its one reading layer (no link followed,
    no FIFO waited on); {} when missing or broken: a report is a best account, never a crash."""
    try:
        return rundir.read_object(run.path, name)
    except (OSError, ValueError, rundir.RunFileError):
        return {}


def _top_level_section(text: str, key: str) -> str:
    """The lines of YAML ``text`` that make up its top-level ``key`` (its line and the indented or
    blank lines after it); all of ``text`` when no line starts with ``key:``."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if line.startswith(f"{key}:"):
            end = start + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][:1] in (" ", "\t", "#")):
                end += 1
            return "\n".join(lines[start:end]) + "\n"
    return text


def requested(run: Run) -> dict[str, Any]:
    """What the run's resolved spec asked for (spec.yaml's ``resources``); {} when unreadable."""
    from cluster.pyyaml import yaml

    try:
        # Only the resources section, with libyaml's loader where PyYAML has it: a report over
        # many runs reads one spec each, and the whole spec costs ~5 ms a run to build.
        text = _top_level_section(rundir.read_text(run.path, SPEC_FILE), "resources")
        spec = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except (OSError, ValueError, yaml.YAMLError, rundir.RunFileError):
        return {}
    res = spec.get("resources") if isinstance(spec, dict) else None
    if not isinstance(res, dict):
        return {}
    out: dict[str, Any] = {k: _int(res.get(k)) for k in ("nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node")}
    for key, parse, name in (("mem", parse_memory, "mem_mb"), ("time", parse_walltime, "time_seconds")):
        try:
            out[name] = parse(res[key]) if res.get(key) else None
        except (ValueError, TypeError):
            out[name] = None
    return out


def _last_step(run: Run) -> int | None:
    """The furthest global step the run's files record (summary, metrics, progress)."""
    steps = [_int(_json(run, SUMMARY_FILE).get("global_step")), _int(_json(run, PROGRESS_FILE).get("global_step"))]
    try:
        metrics = read_metrics(run.path)
    except (OSError, rundir.RunFileError):
        metrics = []
    if metrics:
        steps.append(_int(metrics[-1].get("global_step")))
    known = [s for s in steps if s is not None]
    return max(known) if known else None


# ---------------------------------------------------------------- matching accounting to attempts


def _incarnation(usages: list[Usage], started: dt.datetime | None, taken: set[int]) -> Usage | None:
    """The incarnation of a job that this attempt ran in: the latest one that had started when
    the attempt did (and had not ended before it)."""
    if started is None:
        return None
    slack = dt.timedelta(seconds=SLACK_SECONDS)
    fits = [u for u in usages if id(u) not in taken and u.started and u.started <= started + slack
            and (u.ended is None or u.ended >= started - slack)]
    return max(fits, key=lambda u: u.started) if fits else None  # type: ignore[arg-type, return-value]


def _node_failure(record: dict[str, Any], attempt: dict[str, Any], following: dict[str, Any] | None) -> dict | None:
    """The node failure after which ``following`` resumed ``attempt`` (same job), if any."""
    if following is None or following.get("job_id") != attempt.get("job_id"):
        return None
    begin, end = _time(attempt.get("started")), _time(following.get("started"))
    for failure in record.get("node_failures") or []:
        if not isinstance(failure, dict) or failure.get("job_id") != attempt.get("job_id"):
            continue
        when = _time(failure.get("detected"))
        if begin and end and when and begin <= when <= end + dt.timedelta(seconds=SLACK_SECONDS):
            return failure
    return None


def _ended_by(record: dict[str, Any], state: str, attempt: dict[str, Any], following: dict[str, Any] | None,
              stop: dict[str, Any] | None, failure: dict | None, usage: Usage | None) -> str:
    if failure is not None or (usage is not None and usage.state == "NODE_FAIL"):
        return "node-failure"
    if following is None:  # the run's last attempt: the run's state says
        if state in ("pending", "requeued"):
            return "waiting"
        return {"node-fail": "node-failure"}.get(state, state)
    reason = (stop or {}).get("reason")
    if following.get("job_id") == attempt.get("job_id"):  # the same job again: Slurm requeued it
        return "walltime" if reason in WALLTIME_REASONS else "requeued"
    jobs = {j.get("job_id"): j for j in record.get("jobs") or [] if isinstance(j, dict)}
    if (jobs.get(following.get("job_id")) or {}).get("reason") == "resume":
        return "resumed"  # stopped (or died), and `cluster resume` went on
    # A new job continued it: a dependency-chain link or a PBS continuation, on the walltime
    # warning or after a requeue the site refused.
    return "walltime, chain-link" if reason in WALLTIME_REASONS else "chain-link"


# ---------------------------------------------------------------- one run


def _hours(units: int | None, seconds: int | None) -> float | None:
    return units * seconds / 3600 if units is not None and seconds is not None else None


def _from_accounting(row: AttemptRow, usage: Usage, source: str) -> None:
    """Times, allocation and usage of the attempt from its incarnation in the accounting."""
    row.source = source
    row.scheduler_state = usage.state
    row.submitted, row.ended = _iso(usage.submitted), _iso(usage.ended)
    row.started = _iso(usage.started) or row.started
    if usage.started and usage.submitted:
        row.queue_seconds = max(0, int((usage.started - usage.submitted).total_seconds()))
    row.elapsed_seconds = usage.elapsed_seconds
    row.node = usage.nodes or row.node
    row.cpus, row.gpus, row.mem_mb = usage.cpus, usage.gpus, usage.mem_mb
    row.cpu_hours = (usage.cpu_seconds_allocated / 3600 if usage.cpu_seconds_allocated is not None
                     else _hours(usage.cpus, usage.elapsed_seconds))
    row.gpu_hours = _hours(usage.gpus, usage.elapsed_seconds)
    row.peak_rss_mb = round(usage.peak_rss_mb, 1) if usage.peak_rss_mb is not None else None
    if usage.cpu_seconds_used is not None and usage.cpu_seconds_allocated:
        row.cpu_efficiency = round(usage.cpu_seconds_used / usage.cpu_seconds_allocated, 3)
    row.gpu_util_percent = usage.gpu_util_percent


def _from_records(row: AttemptRow, req: dict[str, Any], record: dict[str, Any], state: str,
                  stop: dict[str, Any] | None, following: dict[str, Any] | None,
                  job_submitted: dt.datetime | None) -> None:
    """Without accounting: the spec's request over the attempt's own start and end (its stop
    event, or the run's end for the last attempt); the queue wait of a job's first attempt."""
    started = _time(row.started)
    end = _from_epoch((stop or {}).get("time"))
    if end is None and following is None and state not in ("running", "pending", "requeued"):
        end = _time(record.get("ended"))
    row.ended = _iso(end)
    if job_submitted and started:
        row.submitted = _iso(job_submitted)
        row.queue_seconds = max(0, int((started - job_submitted).total_seconds()))
    if started and end:
        row.elapsed_seconds = max(0, int((end - started).total_seconds()))
    if req:
        nodes = req.get("nodes") or 1
        row.cpus = nodes * (req.get("tasks_per_node") or 1) * (req.get("cpus_per_task") or 1)
        row.gpus = nodes * (req.get("gpus_per_node") or 0)
        row.mem_mb = nodes * req["mem_mb"] if req.get("mem_mb") else None
    row.cpu_hours, row.gpu_hours = _hours(row.cpus, row.elapsed_seconds), _hours(row.gpus, row.elapsed_seconds)


def run_report(run: Run, record: dict[str, Any], state: str, usages: dict[str, list[Usage]] | None,
               source: str) -> RunReport:
    """The ledger of one run from its records and (when not None) the accounting of its jobs."""
    req = requested(run)
    attempts = [a for a in record.get("attempts") or [] if isinstance(a, dict) and isinstance(a.get("job_id"), str)]
    try:
        events = read_attempt_events(run.path)
    except (OSError, rundir.RunFileError):  # a link or FIFO in its place: no events, no wait
        events = []
    first = {e.get("attempt"): e for e in events if e.get("event") == "first_step"}
    stops = {e.get("attempt"): e for e in events if e.get("event") == "stop"}
    submitted = {j.get("job_id"): _time(j.get("submitted")) for j in record.get("jobs") or [] if isinstance(j, dict)}
    last_step = _last_step(run)
    taken: set[int] = set()
    rows: list[AttemptRow] = []
    for index, attempt in enumerate(attempts):
        number = index + 1
        following = attempts[index + 1] if index + 1 < len(attempts) else None
        started = _time(attempt.get("started"))
        usage = _incarnation((usages or {}).get(attempt["job_id"], []), started, taken) if usages is not None else None
        if usage is not None:
            taken.add(id(usage))
        stop = stops.get(number)
        failure = _node_failure(record, attempt, following)
        row = AttemptRow(number=number, job_id=attempt["job_id"],
                         ended_by=_ended_by(record, state, attempt, following, stop, failure, usage),
                         started=_iso(started), node=str(attempt.get("host") or ""),
                         start_step=_int(attempt.get("resumed_from_step")) or 0)
        # Steps: where it stopped (its stop event), where the node failure caught it (progress
        # record), or where the next attempt resumed; the last attempt: the run's furthest step.
        if failure is not None:
            row.end_step = _int(failure.get("failed_at_step"))
        elif stop is not None:
            row.end_step = _int(stop.get("global_step"))
        elif following is not None:
            row.end_step = _int(following.get("resumed_from_step"))
        else:
            row.end_step = last_step
        if row.end_step is not None:
            row.steps = max(0, row.end_step - row.start_step)
            if following is not None:
                resumed = _int(following.get("resumed_from_step")) or 0
                row.steps_redone = max(0, row.end_step - resumed)
            elif state == "completed" or row.ended_by == "running":
                row.steps_redone = 0
        first_step = _from_epoch((first.get(number) or {}).get("time"))
        if first_step and started:
            row.first_step_seconds = round((first_step - started).total_seconds(), 1)
        if usage is not None:
            _from_accounting(row, usage, source)
        else:
            first_of_job = not any(a["job_id"] == attempt["job_id"] for a in attempts[:index])
            _from_records(row, req, record, state, stop, following, submitted.get(attempt["job_id"]) if first_of_job
                          else None)
        rows.append(row)
    rows += _unrecorded(record, usages, taken, source)
    _add_useful(rows, first, attempts)
    report = RunReport(run_id=run.id, name=str(record.get("name", "")), path=str(run.path),
                       scheduler=str(record.get("scheduler", "local")), state=state,
                       source=source if any(r.source == source for r in rows) else "run records",
                       attempts=rows, requested=req, totals=totals(rows))
    hold = _json(run, SUMMARY_FILE).get("checkpoint_seconds")
    if not isinstance(hold, (int, float)) and stops:
        hold = stops[max(stops, key=lambda k: k or 0)].get("checkpoint_seconds")
    report.checkpoint_seconds = round(hold, 2) if isinstance(hold, (int, float)) else None
    if (run.path.parent / SWEEP_JSON).is_file():
        report.sweep = str(run.path.parent)
    report.advice = right_sizing(report)
    return report


def _unrecorded(record: dict[str, Any], usages: dict[str, list[Usage]] | None, taken: set[int],
                source: str) -> list[AttemptRow]:
    """Incarnations the accounting knows that never recorded an attempt (the job died, or was
    requeued, before its program started): their allocation counts too. Numbered 0."""
    rows = []
    ids = dict.fromkeys(j.get("job_id") for j in record.get("jobs") or [] if isinstance(j, dict))
    for job_id in ids:
        for usage in (usages or {}).get(str(job_id), []):
            if id(usage) in taken or usage.started is None:
                continue
            rows.append(AttemptRow(number=0, job_id=str(job_id), ended_by=usage.state.lower() or "unknown",
                                   submitted=_iso(usage.submitted), started=_iso(usage.started), ended=_iso(usage.ended),
                                   queue_seconds=(max(0, int((usage.started - usage.submitted).total_seconds()))
                                                  if usage.submitted else None),
                                   elapsed_seconds=usage.elapsed_seconds, node=usage.nodes, cpus=usage.cpus,
                                   gpus=usage.gpus, mem_mb=usage.mem_mb,
                                   cpu_hours=(usage.cpu_seconds_allocated / 3600
                                              if usage.cpu_seconds_allocated is not None else None),
                                   gpu_hours=_hours(usage.gpus, usage.elapsed_seconds), steps=0,
                                   peak_rss_mb=usage.peak_rss_mb, scheduler_state=usage.state, source=source))
    return rows


def _add_useful(rows: list[AttemptRow], first: dict[Any, dict], attempts: list[dict[str, Any]]) -> None:
    """Useful hours of each attempt: its allocated hours x the share of its time spent training
    steps that were kept (setup before the first step and redone steps are not useful)."""
    for row in rows:
        hours = row.gpu_hours if row.gpus else row.cpu_hours
        if hours is None or not row.elapsed_seconds or row.steps is None:
            continue
        training = 1.0
        if row.first_step_seconds is not None:
            training = max(0.0, 1.0 - row.first_step_seconds / row.elapsed_seconds)
        kept = 1.0 if not row.steps else (row.steps - (row.steps_redone or 0)) / row.steps
        row.useful_hours = hours * training * kept


def _sum(values: list[Any]) -> Any:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def totals(rows: list[AttemptRow]) -> Totals:
    """The totals of a run's attempts."""
    gpu = any(r.gpus for r in rows)
    out = Totals(attempts=len(rows), elapsed_seconds=_sum([r.elapsed_seconds for r in rows]),
                 queue_seconds=_sum([r.queue_seconds for r in rows]), cpu_hours=_sum([r.cpu_hours for r in rows]),
                 gpu_hours=_sum([r.gpu_hours for r in rows]), steps=_sum([r.steps for r in rows]),
                 steps_redone=_sum([r.steps_redone for r in rows]), useful_hours=_sum([r.useful_hours for r in rows]),
                 unit="GPU" if gpu else "CPU")
    allocated = out.gpu_hours if gpu else out.cpu_hours
    if out.useful_hours is not None and allocated:
        out.useful_share = round(out.useful_hours / allocated, 3)
    return out


def sweep_totals(reports: list[RunReport]) -> Totals:
    """The totals of a sweep's runs."""
    parts = [r.totals for r in reports]
    gpu = any(t.unit == "GPU" for t in parts)
    out = Totals(attempts=sum(t.attempts for t in parts), elapsed_seconds=_sum([t.elapsed_seconds for t in parts]),
                 queue_seconds=_sum([t.queue_seconds for t in parts]), cpu_hours=_sum([t.cpu_hours for t in parts]),
                 gpu_hours=_sum([t.gpu_hours for t in parts]), steps=_sum([t.steps for t in parts]),
                 steps_redone=_sum([t.steps_redone for t in parts]), useful_hours=_sum([t.useful_hours for t in parts]),
                 unit="GPU" if gpu else "CPU")
    allocated = out.gpu_hours if gpu else out.cpu_hours
    if out.useful_hours is not None and allocated:
        out.useful_share = round(out.useful_hours / allocated, 3)
    return out


# ---------------------------------------------------------------- right-sizing


MEMORY_HEADROOM = 2.0
"""A suggested memory request is at least this many times the measured peak (a larger batch or
dataset, a different node's allocator)."""

TIME_HEADROOM = 1.5
"""A suggested walltime is this many times the measured need, rounded up to 5 minutes."""

FAR_ABOVE = 2.0
"""A request is worth a line when it is at least this many times the suggestion."""


def _nice_memory(mb: float) -> int:
    """The smallest whole number of GiB, a power of two, that holds ``mb`` (at least 1G)."""
    gib = 1
    while gib * 1024 < mb:
        gib *= 2
    return gib * 1024


def right_sizing(report: RunReport) -> list[str]:
    """One line per request far above what the run was measured to use; none without measurements.

    Memory: the accounting's peak resident set (per task, so x tasks per node, against the
    per-node request). Walltime: a completed run's longest attempt and whole elapsed time.
    CPUs: CPU time used over elapsed, per task, from the accounting."""
    lines: list[str] = []
    req, measured = report.requested, [a for a in report.attempts if a.source != "run records"]
    tasks = req.get("tasks_per_node") or 1
    peaks = [a.peak_rss_mb for a in measured if a.peak_rss_mb]
    if peaks and req.get("mem_mb"):
        peak_node = max(peaks) * tasks
        suggestion = _nice_memory(peak_node * MEMORY_HEADROOM)
        if req["mem_mb"] >= FAR_ABOVE * suggestion:
            lines.append(f"asked mem {format_memory(req['mem_mb'])}, peak {peak_node / 1024:.2f} GB per node: "
                         f"`resources.mem: {format_memory(suggestion)}` would do")
    elapsed = [a.elapsed_seconds for a in measured if a.elapsed_seconds is not None]
    if report.state == "completed" and elapsed and req.get("time_seconds"):
        longest, whole = max(elapsed), sum(elapsed)
        suggestion = max(600, math.ceil(longest * TIME_HEADROOM / 300) * 300)
        if req["time_seconds"] >= FAR_ABOVE * suggestion:
            lines.append(f"walltime {format_walltime(req['time_seconds'])}, longest attempt {format_duration(longest)}"
                         f" (the whole run {format_duration(whole)}): `resources.time: \"{format_walltime(suggestion)}\"`"
                         " would do")
    busy = [a for a in measured if a.cpu_efficiency is not None and a.elapsed_seconds and a.cpus]
    per_task_cpus = req.get("cpus_per_task")
    if busy and per_task_cpus:
        seconds = sum(a.elapsed_seconds or 0 for a in busy)
        share = sum((a.cpu_efficiency or 0) * (a.elapsed_seconds or 0) for a in busy) / seconds
        used = share * per_task_cpus  # CPUs busy per task on average
        suggestion = max(1, math.ceil(used * 1.25))
        if per_task_cpus >= FAR_ABOVE * suggestion:
            lines.append(f"cpus_per_task {per_task_cpus}, {used:.1f} busy on average (CPU efficiency "
                         f"{share:.0%}): `resources.cpus_per_task: {suggestion}` would do")
    return lines


# ---------------------------------------------------------------- many runs


def _accounting(records: list[tuple[Run, dict[str, Any]]]) -> dict[str, tuple[dict[str, list[Usage]] | None, str]]:
    """One accounting query per backend for every job of every run: {kind: (usages or None, source)}."""
    by_kind: dict[str, list[str]] = {}
    for run, record in records:
        ids = [a.get("job_id") for a in record.get("attempts") or [] if isinstance(a, dict)]
        ids += [j.get("job_id") for j in record.get("jobs") or [] if isinstance(j, dict)]
        by_kind.setdefault(str(record.get("scheduler", "local")), []).extend(i for i in ids if isinstance(i, str))
    out: dict[str, tuple[dict[str, list[Usage]] | None, str]] = {}
    for kind, ids in by_kind.items():
        try:
            backend = backends.get(kind)
            usages = backend.accounting(ids, [r for _, r in records])
        except ClusterError:
            usages = None  # no answer: the runs' own records tell, marked as such
        out[kind] = (usages, {"slurm": MEASURED, "pbs": "qstat"}.get(kind, kind))
    return out


def _state(run: Run, record: dict[str, Any], usages: dict[str, list[Usage]] | None) -> str:
    """The run's state as ``cluster status`` decides it, from the accounting already fetched
    (its current job's latest incarnation): no second scheduler query."""
    from cluster.status import decide_state

    job_id = (record.get("jobs") or [{}])[-1].get("job_id") if record.get("jobs") else None
    latest = (usages or {}).get(job_id or "", [])
    job = JobInfo(state=latest[-1].normal_state, raw_state=latest[-1].state) if latest else None
    return decide_state(record, job, run)


def build_report(runs: list[Run]) -> Report:
    """The report of ``runs``: their records and one accounting query per backend (which also
    gives the states: no other scheduler query)."""
    records = []
    for run in runs:
        try:
            records.append((run, run.read()))
        except ClusterError:
            continue  # an unreadable run.json: `cluster status` shows it; a ledger has nothing to add
    accounting = _accounting(records)
    reports = []
    for run, record in records:
        usages, source = accounting.get(str(record.get("scheduler", "local")), (None, "run records"))
        reports.append(run_report(run, record, _state(run, record, usages), usages, source))
    sweeps: dict[str, list[RunReport]] = {}
    for report in reports:
        if report.sweep:
            sweeps.setdefault(report.sweep, []).append(report)
    return Report(runs=reports, sweeps={path: sweep_totals(parts) for path, parts in sweeps.items()})


def advice_for_spec(name: str, runs_dir: str | Path) -> tuple[str | None, list[str]]:
    """Right-sizing from the latest earlier run named ``name`` under ``runs_dir`` that has
    measurements (for ``cluster doctor SPEC``): (its run id, its lines); (None, []) when none."""
    from cluster.status import discover_runs

    root = Path(runs_dir).expanduser()
    if not root.is_dir():
        return None, []
    mine = []
    for run in discover_runs([], root):
        try:
            if run.read().get("name") == name:
                mine.append(run)
        except ClusterError:
            continue
    if not mine:
        return None, []
    mine.sort(key=lambda r: r.record_path.stat().st_mtime, reverse=True)
    for report in build_report(mine[:20]).runs:  # the latest few: one accounting query for all
        if any(a.source != "run records" for a in report.attempts) and report.state == "completed":
            return report.run_id, report.advice
    return None, []
