"""The ``cluster`` command: a thin layer that parses, calls the library, and reports.

Library errors become one line on stderr and an exit status (2 for bad specs,
1 for scheduler and run errors); only this module prints. Nothing here imports
torch: the login node must answer at once.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

from cluster.errors import ClusterError, SpecError
from train.contract import SUMMARY_FILE
from train.contract.errors import RunFileError

# What a command has imported by now lives until it exits: frozen, it is left out of the cyclic
# garbage collector's walks, which the command's own imports set off again and again (about a
# tenth of `cluster render`'s time). Objects made from here on are collected as usual.
gc.freeze()

if TYPE_CHECKING:
    from cluster.report import Report, Totals
    from cluster.status import Row

EXAMPLES = {
    "check": "cluster check jobs/seed_convnet.yaml --set train.epochs=5",
    "render": "cluster render jobs/seed_convnet.yaml --scheduler pbs --set scheduler.pbs_flavor=torque",
    "submit": "cluster submit jobs/smoke.yaml --executor local --wait",
    "status": "cluster status --json",
    "logs": "cluster logs runs/smoke-20261127-101500-ab12 --err --tail 50",
    "collect": "cluster collect runs/smoke-* --to results/",
    "resume": "cluster resume runs/seed-convnet-20261127-101500-ab12",
    "cancel": "cluster cancel runs/seed-convnet-20261127-101500-ab12",
    "doctor": "cluster doctor jobs/seed_convnet.yaml --probe",
    "report": "cluster report runs/seed-convnet-20261127-101500-ab12 --json",
    "env": "cluster env jobs/seed_convnet.yaml --set environment.venv=$HOME/venvs/seed --on-queue",
}


def _write_atomic(path: Path, text: str) -> None:
    """Write all of ``text`` or nothing (see :func:`train.contract.write_atomic`)."""
    from train.contract import write_atomic

    if path.is_dir():
        raise ClusterError(f"cannot write {path}: is a directory (give a file name)")
    try:
        write_atomic(path, text)
    except OSError as err:
        raise ClusterError(f"cannot write {path}: {err.strerror or err}") from None


# ---------------------------------------------------------------- commands


def echo(line: str = "") -> None:
    """The library's progress and report lines go to stdout through this."""
    print(line, flush=True)


def shadow_warnings() -> None:
    """One line per file in the submit directory named like a module the job imports."""
    from cluster.isolate import shadowing_files

    for path in shadowing_files(Path.cwd()):
        print(f"warning: {path.name} in the submit directory has the name of a module the job imports "
              f"({path.stem}); the job does not import it, but `python -m {path.stem}` typed here would",
              file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    from cluster.spec import load_spec

    spec = load_spec(args.spec, args.set)
    shadow_warnings()
    sys.stdout.write(spec.to_yaml())
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from cluster.backends import render
    from cluster.spec import load_spec

    spec = load_spec(args.spec, args.set)
    text = render(spec, args.scheduler)
    if args.output:
        _write_atomic(Path(args.output), text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def local_gpu_note(spec, kind: str) -> str | None:
    """The local executor allocates no GPUs: a spec that asks for some is told so at submit
    (the job's log then says on which device it trains; torch is not imported here)."""
    from cluster import backends

    gpus = spec.resources.gpus_per_node
    if backends.get(kind).allocates_gpus or not gpus or spec.command or spec.train.device == "cpu":
        return None
    return (f"warning: resources.gpus_per_node is {gpus}, but the local executor allocates no GPUs: the job uses "
            f"this machine's own, and trains on the CPU when torch sees none (its log says which)")


def cmd_submit(args: argparse.Namespace) -> int:
    from cluster.spec import load_spec
    from cluster.status import wait_for
    from cluster.submit import submit

    spec = load_spec(args.spec, args.set)
    shadow_warnings()
    if args.sweep or spec.sweep:
        return _submit_sweep(spec, args)
    run, job_id = submit(spec, args.executor)
    print(f"run {run.id}: submitted to {run.scheduler()} as job {job_id}")
    print(f"  run directory: {run.path}")
    print(f"  logs: cluster logs {run.path}   (files in {run.logs_dir})")
    note = local_gpu_note(spec, run.scheduler())
    if note:
        print(note, file=sys.stderr)
    if not args.wait:
        return 0
    row = wait_for(run, echo)
    print(f"run {run.id}: {row.state}" + (f" ({row.diagnosis}; {row.action})" if row.diagnosis else ""))
    if row.state == "completed":
        from cluster.runs import printable
        from train.contract import rundir

        try:  # a command job's program writes what it likes, or nothing
            summary = rundir.read_object(run.path, SUMMARY_FILE)
        except (OSError, rundir.RunFileError):
            summary = {}
        if "weights_sha256" in summary:
            print(f"  weights_sha256 {printable(summary['weights_sha256'])}")
        return 0
    return 1


def _submit_sweep(spec, args: argparse.Namespace) -> int:
    from cluster.sweep import submit_sweep, wait_for_sweep

    sweep = submit_sweep(spec, args.sweep, args.executor)
    print(f"sweep {sweep.path.name}: {len(sweep.runs)} tasks submitted to {sweep.kind} as array job {sweep.job_id}")
    print(f"  sweep directory: {sweep.path}")
    print(f"  status: cluster status {sweep.path}   collect: cluster collect {sweep.path}")
    if not args.wait:
        return 0
    rows = wait_for_sweep(sweep)
    for row in rows:
        print(f"  {row.run_id}: {row.state}")
    return 0 if all(r.state == "completed" for r in rows) else 1


def cmd_resume(args: argparse.Namespace) -> int:
    from cluster.runs import find_run, printable
    from cluster.status import wait_for
    from cluster.submit import resume

    run = find_run(args.run)
    job_id = resume(run)
    print(f"run {printable(run.id)}: resumed as job {job_id}")
    if not args.wait:
        return 0
    row = wait_for(run, echo)
    print(f"run {run.id}: {row.state}")
    return 0 if row.state == "completed" else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    from cluster.status import discover_runs
    from cluster.submit import cancel

    from cluster.runs import printable

    for run in discover_runs(args.runs):
        print(f"run {printable(run.id)}: {cancel(run)}")
    return 0


def status_lines(rows: list) -> list[str]:
    """``cluster status``'s table, then one line per diagnosed run."""
    from cluster.units import format_duration, format_table

    from cluster.runs import printable as p

    table = [["RUN", "NAME", "SCHED", "JOB", "STATE", "ELAPSED/WALL", "EPOCH", "METRIC", "REQ"]]
    for r in rows:
        metric = f"{r.metric_name}={r.metric:.4f}" if isinstance(r.metric, (int, float)) else "-"
        epoch = f"{r.epoch or 0}/{r.epochs}" if r.epochs else (str(r.epoch) if r.epoch is not None else "-")
        # Every cell comes from a run directory or a scheduler: escaped, so none starts a fake row.
        table.append([p(c) for c in (r.run_id, r.name, r.scheduler, r.job_id or "-", r.state,
                      f"{format_duration(r.elapsed_seconds)}/{format_duration(r.walltime_seconds)}",
                      epoch, metric, str(r.requeues))])
    return (format_table(table) + [p(line) for r in rows if (line := waiting_line(r))]
            + [p(f"{r.run_id}: {note}") for r in rows for note in r.notes]
            + [p(f"{r.run_id}: {r.diagnosis} -> {r.action}") for r in rows if r.diagnosis])


def waiting_line(row: Row) -> str:
    """Why a waiting run's job has not started and when the scheduler expects it to:
    "smoke-...: pending (Resources), start estimate 2026-12-02T16:06:01"; '' when it says neither."""
    if not (row.wait_reason or row.start_estimate):
        return ""
    line = f"{row.run_id}: {'requeued, ' if row.state == 'requeued' else ''}pending"
    line += f" ({row.wait_reason})" if row.wait_reason else ""
    return line + (f", start estimate {row.start_estimate}" if row.start_estimate else "")


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from cluster.runs import TERMINAL_STATES
    from cluster.status import discover_runs, rows_for

    runs = discover_runs(args.runs, args.runs_dir)
    while True:
        rows = rows_for(runs)
        if args.json:
            print(json.dumps([r.to_dict() for r in rows], indent=2))
        else:
            print("\n".join(status_lines(rows)))
        if not args.watch or all(r.state in TERMINAL_STATES for r in rows):
            return 0
        time.sleep(args.interval)
        if not args.json:
            print()


def cmd_logs(args: argparse.Namespace) -> int:
    from cluster.logs import show_logs
    from cluster.runs import find_run

    return show_logs(find_run(args.run), sys.stdout, err=args.err, follow=args.follow, tail=args.tail)


def cmd_collect(args: argparse.Namespace) -> int:
    from cluster.collect import collect

    return collect(args.runs, args.to, echo, metric=args.metric)


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report_lines(report: Report) -> list[str]:
    """``cluster report`` as text: per run a table of its attempts, its totals and right-sizing
    lines; per sweep its totals."""
    from cluster.units import format_duration, format_memory, format_table

    def total_line(t: Totals) -> str:
        useful = f", useful {t.useful_share:.0%} of {t.unit}-hours" if t.useful_share is not None else ""
        redone = f" ({t.steps_redone} redone)" if t.steps_redone is not None else ""
        return (f"{t.attempts} attempt{'s' if t.attempts != 1 else ''}, elapsed {format_duration(t.elapsed_seconds)}, "
                f"queued {format_duration(t.queue_seconds)}, {_hours(t.cpu_hours)} CPU-h, {_hours(t.gpu_hours)} GPU-h, "
                f"{t.steps if t.steps is not None else '-'} steps{redone}{useful}")

    lines: list[str] = []
    for run in report.runs:
        lines.append(f"run {run.run_id} ({run.state}; {run.scheduler}; source: {run.source})")
        table = [["#", "job", "ended by", "started", "queued", "elapsed", "node", "CPUs", "GPUs", "mem", "CPU-h",
                  "GPU-h", "steps", "redone", "to 1st step", "peak RSS", "CPU eff"]]
        for a in run.attempts:
            table.append([str(a.number or '-'), a.job_id, a.ended_by, (a.started or "-")[:19], format_duration(a.queue_seconds),
                          format_duration(a.elapsed_seconds), a.node or "-", "-" if a.cpus is None else str(a.cpus),
                          "-" if a.gpus is None else str(a.gpus), format_memory(a.mem_mb) if a.mem_mb else "-",
                          _hours(a.cpu_hours), _hours(a.gpu_hours), "-" if a.steps is None else str(a.steps),
                          "-" if a.steps_redone is None else str(a.steps_redone),
                          "-" if a.first_step_seconds is None else f"{a.first_step_seconds:.1f} s",
                          "-" if a.peak_rss_mb is None else f"{a.peak_rss_mb:.0f}M",
                          "-" if a.cpu_efficiency is None else f"{a.cpu_efficiency:.0%}"])
        lines += ["  " + line for line in format_table(table)] if run.attempts else ["  no attempt has started"]
        hold = f"; checkpoints held the loop {run.checkpoint_seconds:.1f} s" if run.checkpoint_seconds is not None else ""
        lines.append(f"  total: {total_line(run.totals)}{hold}")
        if run.source == "run records" and run.attempts:
            lines.append("  (no scheduler accounting for this run: times from the run's own records, "
                         "allocation = the spec's request, nothing measured)")
        lines += [f"  right-sizing: {advice}" for advice in run.advice]
    for path, totals in report.sweeps.items():
        tasks = sum(1 for r in report.runs if r.sweep == path)
        lines.append(f"sweep {path} ({tasks} runs): {total_line(totals)}")
    return lines


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from cluster.report import build_report
    from cluster.status import discover_runs

    report = build_report(discover_runs(args.runs, args.runs_dir))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report_lines(report)) if report.runs else "no runs")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from cluster import env
    from cluster.spec import load_spec

    spec = load_spec(args.spec, args.set)
    if args.on_queue:
        return env.on_queue(spec, echo, python=args.python)
    return env.build(spec, echo, python=args.python)


def cmd_doctor(args: argparse.Namespace) -> int:
    from cluster.doctor import doctor

    return doctor(args.spec, args.set, probe=args.probe, echo=echo)


def _one_line(text: str) -> str:
    """Escape newlines and other control characters, so that a message stays one line."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in str(text))


def _remote(args: argparse.Namespace) -> int | None:
    """The one seam to remote hosts: a command with ``--host``, or on a remote run's local
    record, runs on the remote login node (:mod:`cluster.remote`); None: run it here."""
    if getattr(args, "host", None) is None and args.command not in FOLLOW_RECORDS:
        return None  # submit and env go remote only with --host: the remote modules stay unimported
    from cluster.remote.commands import dispatch

    def show_rows(rows: list, as_json: bool) -> None:
        import json

        print(json.dumps([r.to_dict() for r in rows], indent=2) if as_json else "\n".join(status_lines(rows)),
              flush=True)

    return dispatch(args, echo, sys.stdout, show_rows)


# ---------------------------------------------------------------- parser


REMOTE_COMMANDS = ("submit", "status", "logs", "cancel", "resume", "collect", "env")
"""The commands that take ``--host``."""

FOLLOW_RECORDS = ("status", "logs", "cancel", "resume", "collect")
"""The commands that also follow a remote run's local record without ``--host``."""


def _add_host_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", default=None, metavar="NAME",
        help="run it on this login node over ssh: a name from ~/.config/cluster-train/hosts.yaml, "
             "a ~/.ssh/config Host, or [user@]host[:port] (see README: From your laptop)")


def _add_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="job spec YAML file (e.g. jobs/seed_convnet.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec key, e.g. --set resources.time=00:30:00 (repeatable)")


def _add_env_args(parser: argparse.ArgumentParser) -> None:
    _add_spec_args(parser)
    parser.add_argument("--on-queue", action="store_true",
                        help="build it in a job on the spec's queue, after its module loads (CUDA matches the "
                             "GPU node); wait for the job and print its output")
    parser.add_argument("--python", default=None, metavar="PY",
                        help="the Python a new venv is created with (default: the one running cluster; "
                             "with --on-queue, e.g. python3 from the spec's modules)")


def _count(text: str) -> int:
    """A whole number >= 0 (argparse reports the ValueError as one usage line)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_count.__name__ = "count (a whole number >= 0)"


def _seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    value = float(text)
    if not (0 < value < float("inf")):
        raise ValueError(text)
    return value


_seconds.__name__ = "seconds (a number > 0)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {_one_line(message)} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``, looked up only when asked (importlib.metadata costs ~40 ms per start)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("cluster-train")
        except PackageNotFoundError:
            text = "unknown (not installed)"
        sys.stdout.write(f"cluster-train {text}\n")
        parser.exit(0)


# ---------------------------------------------------------------- one builder per command
# Each adds its command's arguments to ``p``; COMMANDS below lists them. A new option is a line
# in its builder; a new command is a builder, a cmd_ function and a line in COMMANDS.


def _check_args(p: argparse.ArgumentParser) -> None:
    _add_spec_args(p)


def _render_args(p: argparse.ArgumentParser) -> None:
    from cluster import backends  # here, not at the top: the commands without --scheduler never load it

    _add_spec_args(p)
    p.add_argument("--scheduler", choices=backends.script_names(), default=None,
                   help="default: the spec's scheduler.kind (pbs uses scheduler.pbs_flavor; auto/local: slurm)")
    p.add_argument("-o", "--output", help="write the script to this file instead of stdout")


def _submit_args(p: argparse.ArgumentParser) -> None:
    from cluster import backends

    _add_spec_args(p)
    p.add_argument("--executor", choices=["auto", *backends.kinds()], default=None,
                   help="default: the spec's scheduler.kind")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="sweep a key over values as one array job (repeatable: a grid)")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends; exit 1 if it failed")


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", help="run or sweep directories (default: all under ./runs)")
    p.add_argument("--runs-dir", default="runs", help="where to look for runs (default: runs)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--watch", action="store_true", help="refresh until every run has ended")
    p.add_argument("--interval", type=_seconds, default=10.0, help="seconds between --watch refreshes")


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (or run id under ./runs)")
    p.add_argument("--err", action="store_true", help="stderr instead of stdout")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing as the log grows")
    p.add_argument("--tail", type=_count, default=None, metavar="N", help="only the last N lines (0: none)")


def _collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run or sweep directories")
    p.add_argument("--to", default="results", help="destination folder (default: results)")
    p.add_argument("--metric", default="val_auc", help="metric that sorts the comparison table")


def _resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (or run id under ./runs)")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", help="run or sweep directories (default: all under ./runs)")
    p.add_argument("--runs-dir", default="runs", help="where to look for runs (default: runs)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _cancel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run or sweep directories")


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="job spec to check against")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--probe", action="store_true", help="submit a one-minute probe job and print its report")


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]] = {
    "check": ("validate a job spec and print it fully resolved (YAML)", cmd_check, _check_args),
    "render": ("print or write the batch script for a scheduler", cmd_render, _render_args),
    "submit": ("submit a job (Slurm, PBS or the local executor) and print its run and job id", cmd_submit,
               _submit_args),
    "status": ("one row per run: state, job id, epoch, metric, requeues", cmd_status, _status_args),
    "report": ("per run and attempt: CPU/GPU-hours, steps redone, peak memory; right-sizing", cmd_report,
               _report_args),
    "logs": ("print a run's stdout (or stderr) across all its attempts", cmd_logs, _logs_args),
    "collect": ("copy checkpoints, metrics, logs and a curves plot of runs into one place", cmd_collect,
                _collect_args),
    "resume": ("continue a run that died from its last valid checkpoint, as a new job", cmd_resume, _resume_args),
    "cancel": ("cancel a run's live job", cmd_cancel, _cancel_args),
    "env": ("create or update environment.venv: pip install this project and environment.requirements, "
            "with TMPDIR and pip's cache under environment.tmpdir", cmd_env, _add_env_args),
    "doctor": ("check the login node (scheduler, accounting, runs dir, compute Python)", cmd_doctor, _doctor_args),
}
"""Every sub-command, in help order: name -> (help, function, builder of its arguments)."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``cluster`` parser. With ``command`` (a known sub-command) only that sub-command's
    parser is built: each command pays for its own arguments, not for every command's."""
    parser = _Parser(
        prog="cluster",
        description="Describe a PyTorch training job once in YAML; render, submit, watch and collect it "
                    "on Slurm, PBS Pro, Torque or locally.",
        epilog="examples:\n  " + "\n  ".join(EXAMPLES[name] for name in ("check", "render", "submit", "status"))
               + "\n\nEach command has its own --help, e.g. cluster render --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [command] if command in COMMANDS else COMMANDS:
        help_text, func, add_arguments = COMMANDS[name]
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"example:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        add_arguments(p)
        if name in REMOTE_COMMANDS:
            _add_host_option(p)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names: its first word that is not an option (the top level
    has no option that takes a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    # The library reports warnings through logging ("cluster"): with no handler configured,
    # logging's last resort prints each as one line (the message alone) on stderr. Nothing is
    # configured here, so that a command that warns of nothing never imports logging.
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    try:
        remote = _remote(args)
        return remote if remote is not None else args.func(args)
    except SpecError as err:
        # already "FILE: dotted.key: what is wrong (what is allowed)"; a key may hold a newline
        print(_one_line(err), file=sys.stderr)
        return err.exit_code
    except (ClusterError, RunFileError) as err:
        # RunFileError: a file of a run directory that is a link, a FIFO, too large or malformed
        print(f"cluster {args.command}: {_one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"cluster {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as err:
        # Disk full, a read-only or missing directory, a name too long: the path and why.
        where = f"{err.filename}: " if err.filename else ""
        print(f"cluster {args.command}: {_one_line(where + (err.strerror or str(err)))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
