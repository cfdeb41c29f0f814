"""The ``cluster`` command: a thin layer that parses, calls the library, and reports.

Library errors become one line on stderr and an exit status (2 for bad specs,
1 for scheduler and run errors); only this module prints. Nothing here imports
torch: the login node must answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from cluster.errors import ClusterError, SpecError

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


def cmd_check(args: argparse.Namespace) -> int:
    from cluster.spec import load_spec

    spec = load_spec(args.spec, args.set)
    sys.stdout.write(spec.to_yaml())
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from cluster.render import render
    from cluster.spec import load_spec

    spec = load_spec(args.spec, args.set)
    text = render(spec, args.scheduler)
    if args.output:
        _write_atomic(Path(args.output), text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _one_line(text: str) -> str:
    """Escape newlines and other control characters, so that a message stays one line."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in str(text))


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """Import a command's module only when it runs (keeps `check`/`render` start-up small)."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


# ---------------------------------------------------------------- parser


def _add_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="job spec YAML file (e.g. jobs/seed_convnet.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec key, e.g. --set resources.time=00:30:00 (repeatable)")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cluster",
        description="Describe a PyTorch training job once in YAML; render, submit, watch and collect it "
                    "on Slurm, PBS Pro, Torque or locally.",
        epilog="examples:\n  " + "\n  ".join(EXAMPLES[name] for name in ("check", "render", "submit", "status"))
               + "\n\nEach command has its own --help, e.g. cluster render --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"example:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("check", "validate a job spec and print it fully resolved (YAML)", cmd_check)
    _add_spec_args(p)

    p = add("render", "print or write the batch script for a scheduler", cmd_render)
    _add_spec_args(p)
    p.add_argument("--scheduler", choices=["slurm", "pbs", "pbspro", "torque"], default=None,
                   help="default: the spec's scheduler.kind (pbs uses scheduler.pbs_flavor; auto/local: slurm)")
    p.add_argument("-o", "--output", help="write the script to this file instead of stdout")

    p = add("submit", "submit a job (Slurm, PBS or the local executor) and print its run and job id",
            _lazy("cluster.commands", "cmd_submit"))
    _add_spec_args(p)
    p.add_argument("--executor", choices=["auto", "slurm", "pbs", "local"], default=None,
                   help="default: the spec's scheduler.kind")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="sweep a key over values as one array job (repeatable: a grid)")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends; exit 1 if it failed")

    p = add("status", "one row per run: state, job id, epoch, metric, requeues",
            _lazy("cluster.commands", "cmd_status"))
    p.add_argument("runs", nargs="*", help="run or sweep directories (default: all under ./runs)")
    p.add_argument("--runs-dir", default="runs", help="where to look for runs (default: runs)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--watch", action="store_true", help="refresh until every run has ended")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between --watch refreshes")

    p = add("logs", "print a run's stdout (or stderr) across all its attempts",
            _lazy("cluster.commands", "cmd_logs"))
    p.add_argument("run", help="run directory (or run id under ./runs)")
    p.add_argument("--err", action="store_true", help="stderr instead of stdout")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing as the log grows")
    p.add_argument("--tail", type=int, default=None, metavar="N", help="only the last N lines")

    p = add("collect", "copy checkpoints, metrics, logs and a curves plot of runs into one place",
            _lazy("cluster.commands", "cmd_collect"))
    p.add_argument("runs", nargs="+", help="run or sweep directories")
    p.add_argument("--to", default="results", help="destination folder (default: results)")
    p.add_argument("--metric", default="val_auc", help="metric that sorts the comparison table")

    p = add("resume", "continue a run that died from its last valid checkpoint, as a new job",
            _lazy("cluster.commands", "cmd_resume"))
    p.add_argument("run", help="run directory (or run id under ./runs)")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")

    p = add("cancel", "cancel a run's live job", _lazy("cluster.commands", "cmd_cancel"))
    p.add_argument("runs", nargs="+", help="run or sweep directories")

    p = add("doctor", "check the login node (scheduler, accounting, runs dir, compute Python)",
            _lazy("cluster.commands", "cmd_doctor"))
    p.add_argument("spec", nargs="?", help="job spec to check against")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--probe", action="store_true", help="submit a one-minute probe job and print its report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as err:
        # already "FILE: dotted.key: what is wrong (what is allowed)"; a key may hold a newline
        print(_one_line(err), file=sys.stderr)
        return err.exit_code
    except ClusterError as err:
        print(f"cluster {args.command}: {_one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"cluster {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
