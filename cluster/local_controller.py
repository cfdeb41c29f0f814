"""The local executor's controller: start the tasks, warn before the timeout, restart on requeue.

submitit's own controller (``submitit.local.local.Controller.run``) starts the tasks at most six
times and then exits without a word, whatever the job's requeue budget says: a local run that
needed a seventh attempt was left ``requeued`` with nothing to run it. This one restarts the
tasks for as long as they ask for it (exit status 144, submitit's local "requeue me"), up to the
run's own budget (``CLUSTER_LOCAL_MAX_ATTEMPTS``, set by the executor from
``scheduler.max_requeues``). The trainer enforces that budget itself (it marks the run failed
with "out of requeues" and exits non-zero); the bound here is the safety net, and when it is
ever reached the run is marked failed with the same message rather than left ``requeued``.

Its tasks die with it: each gets ``PR_SET_PDEATHSIG`` = SIGTERM, so a controller killed with
``kill -9`` leaves no trainer running on its run directory (SIGTERM makes the trainer write a
checkpoint and exit, as on a scheduler's kill).

Run as ``python -m cluster.local_controller FOLDER`` with submitit's ``SUBMITIT_LOCAL_*``
variables in the environment.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from submitit.core import utils
from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE, Controller

MAX_ATTEMPTS_ENV = "CLUSTER_LOCAL_MAX_ATTEMPTS"
"""How many times the controller may start the tasks: ``scheduler.max_requeues + 1``."""

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: tasks may then outlive a killed controller
        pass


class RequeueingController(Controller):
    """submitit's controller, with the restart loop bounded by the run's budget, not by six."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.max_attempts = max(1, int(os.environ.get(MAX_ATTEMPTS_ENV, "1")))

    def start_tasks(self) -> None:
        """As submitit's, plus: every task receives SIGTERM when the controller dies."""
        self.folder.mkdir(exist_ok=True)
        paths = [utils.JobPaths(self.folder, self.pid, k) for k in range(self.ntasks)]
        self.stdouts = [p.stdout.open("a") for p in paths]
        self.stderrs = self.stdouts if self.stderr_to_stdout else [p.stderr.open("a") for p in paths]
        for k in range(self.ntasks):
            env = dict(os.environ, SUBMITIT_LOCAL_LOCALID=str(k), SUBMITIT_LOCAL_GLOBALID=str(k),
                       SUBMITIT_LOCAL_JOB_ID=self.pid)
            self.tasks.append(subprocess.Popen(self.command, env=env, stdout=self.stdouts[k],
                                               stderr=self.stderrs[k], preexec_fn=_die_with_parent))

    def run(self, max_retry: int | None = None) -> None:
        attempts = max_retry or self.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                self.start_tasks()
                exit_codes = self.wait()
            finally:
                self.kill_tasks()
            if not any(code == LOCAL_REQUEUE_RETURN_CODE for code in exit_codes):
                return
            print(f"cluster-train: attempt {attempt} of {attempts} asked to be requeued", flush=True)
        _out_of_attempts(attempts)


def _out_of_attempts(attempts: int) -> None:
    """The tasks still asked for a requeue after the last allowed attempt: say so in the run."""
    from cluster.runs import Run, now_iso

    run_dir = os.environ.get("CLUSTER_RUN_DIR")
    message = f"out of requeues ({attempts - 1}); continue with: cluster resume {run_dir}"
    print(f"cluster-train: {message}", flush=True)
    if run_dir and Path(run_dir, "run.json").exists():
        Run(run_dir).set_state("failed", error=message, ended=now_iso())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m cluster.local_controller SUBMITIT_FOLDER")
    RequeueingController(Path(sys.argv[1])).run()
