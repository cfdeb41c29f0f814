"""The local executor's machinery: submitit's local executor detached from ``cluster submit``,
and our controller, run as ``python -m cluster.backends.local_executor FOLDER``.

Imported only when a local job is submitted, cancelled or run (submitit takes a tenth of a
second to import; ``cluster render`` and ``check`` never need it). See
:mod:`cluster.backends.local` for why the controller is ours.
"""

from __future__ import annotations

import ctypes
import shlex
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import submitit
from submitit.core import utils
from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE, Controller, LocalJob

from cluster.backends.base import pid_alive
from cluster.backends.script import python_for
from cluster.isolate import job_command, module_argv
from train.contract import CONTROLLER_LOG, LOGS_DIR, RUN_DIR_ENV, RUN_JSON

if TYPE_CHECKING:
    from cluster.runs import Run
    from cluster.spec import JobSpec

CONTROLLER_MODULE = "cluster.backends.local_executor"
MAX_ATTEMPTS_ENV = "CLUSTER_LOCAL_MAX_ATTEMPTS"
"""How many times the controller may start the tasks: ``scheduler.max_requeues + 1``."""

_PR_SET_PDEATHSIG = 1
log = logging.getLogger("cluster.local")


# ---------------------------------------------------------------- the controller (its own process)


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
            log.info("cluster-train: attempt %d of %d asked to be requeued", attempt, attempts)
        _out_of_attempts(attempts)


def _out_of_attempts(attempts: int) -> None:
    """The tasks still asked for a requeue after the last allowed attempt: say so in the run."""
    from cluster.runs import Run, now_iso

    run_dir = os.environ.get(RUN_DIR_ENV)
    message = f"out of requeues ({attempts - 1}); continue with: cluster resume {run_dir}"
    log.error("cluster-train: %s", message)
    if run_dir and Path(run_dir, RUN_JSON).exists():
        Run(run_dir).set_state("failed", error=message, ended=now_iso())


# ---------------------------------------------------------------- the executor (login side)


class LocalExecutor(submitit.LocalExecutor):
    """submitit's local executor, with our controller, detached from ``cluster submit``.

    submitit starts the controller with our stdin/stdout/stderr and in our session: a
    ``cluster submit | tee`` would then wait for the whole training, and a Ctrl-C on the
    terminal would kill the job. Ours writes to the run's logs and has its own session.
    """

    def __init__(self, folder: str | Path, run_dir: str | Path, max_requeues: int, python: str) -> None:
        super().__init__(folder=folder, max_num_timeout=max_requeues, python=python)
        self.run_dir = str(run_dir)

    @property
    def _submitit_command_str(self) -> str:
        # The tasks' command: submitit's entrypoint without the submit directory on sys.path.
        return job_command(self.python, "submitit.core._submit", shlex.quote(str(self.folder)), unbuffered=True)

    def _submit_command(self, command: str) -> LocalJob:
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update({
            "SUBMITIT_LOCAL_NTASKS": str(self.parameters.get("tasks_per_node", 1)),
            "SUBMITIT_LOCAL_COMMAND": command,
            "SUBMITIT_LOCAL_TIMEOUT_S": str(int(60 * self.parameters.get("timeout_min", 2.0))),
            "SUBMITIT_LOCAL_SIGNAL_DELAY_S": str(int(self.parameters.get("signal_delay_s", 30))),
            "SUBMITIT_LOCAL_NODEID": "0",
            "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
            "SUBMITIT_STDERR_TO_STDOUT": "",
            "SUBMITIT_EXECUTOR": "local",
            "SUBMITIT_LOCAL_WITH_SHELL": "",
            RUN_DIR_ENV: self.run_dir,
            MAX_ATTEMPTS_ENV: str(self.max_num_timeout + 1),
        })
        with open(folder / CONTROLLER_LOG, "ab") as controller_log:
            # Not `python -m`: the submit directory must not come first on sys.path (cluster.isolate).
            process = subprocess.Popen(module_argv(sys.executable, CONTROLLER_MODULE, str(folder)), env=env,
                                       stdin=subprocess.DEVNULL, stdout=controller_log, stderr=controller_log,
                                       start_new_session=True)
        tasks = list(range(self.parameters.get("tasks_per_node", 1)))
        return LocalJob(folder=folder, job_id=str(process.pid), process=process, tasks=tasks)


def local_executor(spec: JobSpec, run_dir: Path) -> LocalExecutor:
    """The local executor with the spec's walltime as its timeout (it then sends USR2)."""
    from cluster.spec import expand_path

    # No shell runs the local command: expand environment.python's $VAR and ~ here, as bash would.
    python = shlex.quote(expand_path(python_for(spec), strict=False))
    if spec.environment.venv:
        from cluster.env import check_venv

        # The job's node is this machine: a missing or broken venv is refused now, in one line.
        check_venv(spec)
    executor = LocalExecutor(run_dir / LOGS_DIR, run_dir, spec.scheduler.max_requeues, python)
    minutes = (spec.resources.time_seconds or 24 * 3600) / 60
    # Warn signal_seconds before the timeout, leaving the job at least 10 s to run.
    signal_delay = min(spec.scheduler.signal_seconds, max(1, int(minutes * 60) - 10))
    executor.update_parameters(timeout_min=minutes, signal_delay_s=signal_delay,
                               tasks_per_node=spec.resources.tasks_per_node, gpus_per_node=0)
    return executor


def is_controller_of(pid: int, run: Run) -> bool:
    """The process ``pid`` is alive and is the local controller of ``run`` (not a reused pid).

    Its folder argument must be the run's own ``logs/`` (the local executor's folder is always
    that): never a path run.json names, which may be another run's.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if CONTROLLER_MODULE.encode() not in argv or not pid_alive(pid):
        return False
    own = run.path / LOGS_DIR
    folders = {os.fsencode(str(own)), os.fsencode(str(own.resolve()))}
    args = [arg for arg in argv if arg]  # /proc's cmdline ends with a NUL
    return bool(args) and args[-1] in folders  # FOLDER is the controller's one argument


def _run_controller(folder: Path) -> None:
    """The controller's main: a crash of its own is recorded in the run (failed, with the
    error's line) before the traceback goes to controller.log, so nothing waits on it."""
    try:
        RequeueingController(folder).run()
    except BaseException as err:
        run_dir = os.environ.get(RUN_DIR_ENV)
        if run_dir and Path(run_dir, RUN_JSON).exists() and not isinstance(err, SystemExit):
            from cluster.runs import Run, now_iso

            line = (str(err).strip().splitlines() or [""])[0]
            Run(run_dir).set_state("failed", error=f"the local controller crashed: {type(err).__name__}: {line}"[:600],
                                   ended=now_iso())
        raise


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m {CONTROLLER_MODULE} SUBMITIT_FOLDER")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    _run_controller(Path(sys.argv[1]))
