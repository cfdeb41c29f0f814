"""`python -m train --config SPEC --run-dir DIR`: train as a job spec says, resumably.

Exit status: 0 completed; 75 (`EXIT_REQUEUE`) stopped early by SIGUSR2/SIGTERM or the
walltime deadline, with a checkpoint to resume from (run the same command again); 2 a
mistake in the spec, the data file, an incompatible resume, or a checkpoint that would
unpickle code, or another trainer already at work in the run directory (`RunLocked`: at
most one trainer per run directory; this one wrote nothing) -- one line on stderr; 1 any
other error.

Example:
    python -m train --config jobs/smoke.yaml --run-dir runs/smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from train.contract import DEADLINE_ENV, EXIT_REQUEUE, RunLocked, SpecError, parse_walltime
from train.contract.rundir import RunFileError, read_regular

if TYPE_CHECKING:
    from train.contract.config import TrainConfig

SCHEDULER_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID")


def load_config(path: str) -> tuple[TrainConfig, float | None]:
    """The spec's train section, and its walltime in seconds if it has one.

    Reads a resolved spec (what ``cluster check SPEC`` prints, or a run's ``spec.yaml``):
    ``extends`` and ``--set`` are the ``cluster`` command's business, not the trainer's.
    """
    import yaml

    from train.contract.config import TrainConfig

    try:
        doc = yaml.safe_load(read_regular(path, 2**20))  # a FIFO or /dev/zero is refused, never waited on
    except RunFileError as err:
        raise SpecError("", err.problem) from None
    except OSError as err:
        raise SpecError("", f"cannot read the spec ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise SpecError("", f"not valid YAML ({str(err).splitlines()[0]})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SpecError("", "a job spec must be a mapping of keys to values")
    if doc.get("extends"):
        raise SpecError("extends", "python -m train reads a resolved spec: run `cluster check SPEC > resolved.yaml` "
                                   "and pass that")
    resources = doc.get("resources") or {}
    walltime = None
    if isinstance(resources, dict) and resources.get("time") is not None:
        try:
            walltime = parse_walltime(resources["time"])
        except ValueError as err:
            raise SpecError("resources.time", str(err) or "must be HH:MM:SS, D-HH:MM:SS, or minutes") from None
    return TrainConfig.from_dict(doc.get("train")), walltime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train the model of a job spec's train: section in a run directory; resume from its newest checkpoint if any.",
        epilog="example: python -m train --config jobs/smoke.yaml --run-dir runs/smoke",
    )
    parser.add_argument("--config", required=True, help="job spec YAML (its train: section is used)")
    parser.add_argument("--run-dir", required=True, help="directory for metrics, checkpoints and the summary")
    args = parser.parse_args(argv)
    started = time.time()

    try:
        config, walltime = load_config(args.config)
    except SpecError as err:
        print(err.with_file(args.config), file=sys.stderr)
        return 2

    # Imported only now: torch takes seconds to import, and a spec error should not wait.
    from train.checkpoint import IncompatibleCheckpoint, UnsafeCheckpoint
    from train.data import DataError
    from train.trainer import Trainer

    deadline = None
    if not os.environ.get(DEADLINE_ENV) and walltime and any(v in os.environ for v in SCHEDULER_JOB_VARIABLES):
        # Inside a scheduler job whose script did not export the deadline: the walltime
        # counts from about now (the process starts right after the job does).
        deadline = started + walltime
    trainer = Trainer(config, Path(args.run_dir), deadline=deadline)
    trainer.install_signal_handlers()
    try:
        result = trainer.run()
    except SpecError as err:
        print(err.with_file(args.config), file=sys.stderr)
        return 2
    except (DataError, IncompatibleCheckpoint, UnsafeCheckpoint, RunLocked, RunFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if result.status == "completed" else EXIT_REQUEUE


if __name__ == "__main__":
    sys.exit(main())
