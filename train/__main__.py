"""`python -m train --config SPEC --run-dir DIR`: train as a job spec says, resumably.

Exit status: 0 completed; 75 (`EXIT_REQUEUE`) stopped early by SIGUSR2/SIGTERM or the
walltime deadline, with a checkpoint to resume from (run the same command again); 2 a
mistake in the spec, the data file or an incompatible resume (one line on stderr); 1 any
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

from cluster.errors import SpecError

if TYPE_CHECKING:
    from train.config import TrainConfig

SCHEDULER_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID")


def load_config(path: str) -> tuple[TrainConfig, float | None]:
    """The spec's train section, and its walltime in seconds if it has one.

    Uses the toolkit's spec loader (extends, overrides, resources) when it exists; until
    then, reads the `train:` section of the YAML file directly.
    """
    try:
        from cluster.spec import load_spec
    except ImportError:
        load_spec = None
    if load_spec is not None:
        spec = load_spec(path)
        resources = getattr(spec, "resources", None)
        return spec.train, getattr(resources, "time_seconds", None)

    import yaml

    from train.config import TrainConfig

    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as err:
        raise SpecError("", f"cannot read the spec ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise SpecError("", f"not valid YAML ({str(err).splitlines()[0]})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SpecError("", "a job spec must be a mapping of keys to values")
    return TrainConfig.from_dict(doc.get("train")), None


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
    from train.checkpoint import IncompatibleCheckpoint
    from train.data import DataError
    from train.trainer import DEADLINE_ENV, EXIT_REQUEUE, Trainer

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
    except (DataError, IncompatibleCheckpoint) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if result.status == "completed" else EXIT_REQUEUE


if __name__ == "__main__":
    sys.exit(main())
