"""The entry point of one task of an array job (a sweep): its submission, then submitit's.

submitit runs a job from ``<folder>/<job id>_submitted.pkl``. An array of N tasks would need N
such files written on the login node before the scheduler is told (a file each: on a busy
disk, seconds for a 1,000-point sweep). Instead the submitting side writes ONE file for the
whole array, ``<folder>/<array id>_tasks.pkl`` (every task's submission, in task order; see
:func:`cluster.backends.base.submit_array`), and each task, as it starts, cuts its own
``<array id>_<index>_submitted.pkl`` from it, then runs submitit's own entry point
(``submitit.core._submit``) exactly as a single job does. A requeued task finds its pickle
already there (and any checkpointed state in it) and reads nothing else.

    python -c JOB_BOOTSTRAP cluster.backends.array_task FOLDER
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

SHARED_SUFFIX = "_tasks.pkl"
"""``<array id>_tasks.pkl``: no submitit file name ends so (theirs end ``_submitted.pkl``,
``_result.pkl``, ``_log.out``)."""

WAIT_SECONDS = 60
"""How long a task waits for the array's file (written as the submission returns), as submitit
waits for a single job's pickle."""


def shared_pickle(folder: str | Path, array_id: str) -> Path:
    return Path(folder) / f"{array_id}{SHARED_SUFFIX}"


def cut_own_pickle(folder: str) -> None:
    """Write this task's ``<job id>_submitted.pkl`` from the array's file, unless it exists."""
    from submitit.core import utils
    from submitit.core.job_environment import JobEnvironment

    env = JobEnvironment()
    own = env.paths.submitted_pickle
    if own.exists() or env.array_job_id is None or env.array_task_id is None:
        return  # a requeued task, or not an array task: submitit reads what is there
    shared = shared_pickle(folder, env.array_job_id)
    for _ in range(WAIT_SECONDS):
        if shared.exists():
            break
        time.sleep(1)
    tasks = utils.pickle_load(shared)
    tmp = own.with_name(f".tmp-{own.name}.{os.getpid()}")
    utils.cloudpickle_dump(tasks[int(env.array_task_id)], tmp)
    os.replace(tmp, own)


def main(argv: list[str]) -> None:
    folder = argv[0]
    os.environ["SUBMITIT_FOLDER"] = folder  # as submitit's entry point sets it, for JobEnvironment
    cut_own_pickle(folder)
    from submitit.core.submission import submitit_main

    submitit_main()


if __name__ == "__main__":
    main(sys.argv[1:])
