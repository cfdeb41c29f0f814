"""The commands behind ``cluster submit/status/logs/collect/resume/cancel/doctor``.

Each returns an exit status; errors are raised as ClusterError for the CLI to report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from cluster.errors import ClusterError


def _fmt_duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def cmd_submit(args: argparse.Namespace) -> int:
    from cluster.spec import load_spec
    from cluster.status import wait_for
    from cluster.submit import submit

    spec = load_spec(args.spec, args.set)
    if args.sweep or spec.sweep:
        from cluster.sweep import submit_sweep

        return submit_sweep(spec, args)
    run, job_id = submit(spec, args.executor)
    record = run.read()
    print(f"run {run.id}: submitted to {record['scheduler']} as job {job_id}")
    print(f"  run directory: {run.path}")
    print(f"  logs: cluster logs {run.path}   (files in {run.logs_dir})")
    if not args.wait:
        return 0
    row = wait_for(run)
    print(f"run {run.id}: {row.state}" + (f" ({row.diagnosis}; {row.action})" if row.diagnosis else ""))
    if row.state == "completed":
        summary = json.loads((run.path / "summary.json").read_text())
        print(f"  weights_sha256 {summary.get('weights_sha256')}")
        return 0
    return 1


def cmd_resume(args: argparse.Namespace) -> int:
    from cluster.runs import find_run
    from cluster.status import wait_for
    from cluster.submit import resume

    run = find_run(args.run)
    job_id = resume(run)
    print(f"run {run.id}: resumed as job {job_id}")
    if not args.wait:
        return 0
    row = wait_for(run)
    print(f"run {run.id}: {row.state}")
    return 0 if row.state == "completed" else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    from cluster.status import discover_runs
    from cluster.submit import cancel

    for run in discover_runs(args.runs):
        job_id = cancel(run)
        print(f"run {run.id}: " + (f"cancelled job {job_id}" if job_id else "nothing live to cancel"))
    return 0


def print_rows(rows: list, out=sys.stdout) -> None:
    header = ("RUN", "NAME", "SCHED", "JOB", "STATE", "ELAPSED/WALL", "EPOCH", "METRIC", "REQ")
    table = [header]
    for r in rows:
        metric = f"{r.metric_name}={r.metric:.4f}" if isinstance(r.metric, (int, float)) else "-"
        epoch = f"{r.epoch or 0}/{r.epochs}" if r.epochs else "-"
        table.append((r.run_id, r.name, r.scheduler, r.job_id or "-", r.state,
                      f"{_fmt_duration(r.elapsed_seconds)}/{_fmt_duration(r.walltime_seconds)}",
                      epoch, metric, str(r.requeues)))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
    for r in rows:
        if r.diagnosis:
            print(f"{r.run_id}: {r.diagnosis} -> {r.action}", file=out)


def cmd_status(args: argparse.Namespace) -> int:
    from cluster.runs import TERMINAL_STATES
    from cluster.status import discover_runs, rows_for

    runs = discover_runs(args.runs, args.runs_dir)
    while True:
        rows = rows_for(runs)
        if args.json:
            print(json.dumps([r.to_dict() for r in rows], indent=2))
        else:
            print_rows(rows)
        if not args.watch or all(r.state in TERMINAL_STATES for r in rows):
            return 0
        time.sleep(args.interval)
        if not args.json:
            print()


def cmd_logs(args: argparse.Namespace) -> int:
    from cluster.logs import show_logs
    from cluster.runs import find_run

    return show_logs(find_run(args.run), err=args.err, follow=args.follow, tail=args.tail)


def cmd_collect(args: argparse.Namespace) -> int:
    from cluster.collect import collect

    return collect(args.runs, args.to, metric=args.metric)


def cmd_doctor(args: argparse.Namespace) -> int:
    from cluster.doctor import doctor

    return doctor(args.spec, args.set, probe=args.probe)


__all__ = ["cmd_submit", "cmd_resume", "cmd_cancel", "cmd_status", "cmd_logs", "cmd_collect", "cmd_doctor",
           "ClusterError"]
