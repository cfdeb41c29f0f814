"""No scheduler: submitit's local executor on this machine, with our own controller.

The controller (``python -m cluster.backends.local_executor FOLDER``, in that module with the
executor) starts the tasks, warns them
before the timeout and restarts them on requeue. submitit's own controller
(``submitit.local.local.Controller.run``) starts the tasks at most six times and then exits
without a word, whatever the job's requeue budget says: a local run that needed a seventh
attempt was left ``requeued`` with nothing to run it. Ours restarts the tasks for as long as
they ask for it (exit status 144, submitit's local "requeue me"), up to the run's own budget
(``CLUSTER_LOCAL_MAX_ATTEMPTS`` = ``scheduler.max_requeues + 1``). The trainer enforces that
budget itself (it marks the run failed with "out of requeues" and exits non-zero); the bound
here is the safety net, and when it is ever reached the run is marked failed with the same
message rather than left ``requeued``.

Its tasks die with it: each gets ``PR_SET_PDEATHSIG`` = SIGTERM, so a controller killed with
``kill -9`` leaves no trainer running on its run directory (SIGTERM makes the trainer write a
checkpoint and exit, as on a scheduler's kill).

The job id of a local run is the controller's pid; ``cancel`` signals it only after checking
that the process is this run's controller (a pid in ``run.json`` may have been reused, or
written by hand).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.backends.base import Backend, Check, JobInfo, pid_alive
from train.contract import CONTROLLER_LOG

if TYPE_CHECKING:
    from cluster.runs import Run
    from cluster.spec import JobSpec


def controller_failure(run: Run) -> str:
    """Why the run's controller ended without the job recording an end: the last Python error
    of ``logs/controller.log`` (its own crash), else its last line."""
    from cluster.diagnose import last_python_error, stderr_text, tail_log

    text = tail_log(run, CONTROLLER_LOG)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # The controller's own crash, else the task's (an entrypoint that could not start), else its last word.
    cause = last_python_error(text) or last_python_error(stderr_text(run)) or (lines[-1] if lines else "")
    return (f"the job ended before it could record an end ({cause or 'no output'}); "
            f"see cluster logs {run.path} --err")[:600]


class LocalBackend(Backend):
    kind = "local"
    dialects = ()
    detect_order = 1000
    has_modules = False
    allocates_gpus = False
    forgotten_job_is_dead = True
    runs_arrays = False

    def available(self) -> bool:
        return True

    def executor(self, spec: JobSpec, run_dir: Path, *, array_parallelism: int | None = None) -> Any:
        from cluster.backends.local_executor import local_executor  # submitit: only when submitting

        return local_executor(spec, run_dir)

    def query(self, job_ids: list[str], records: list[dict[str, Any]]) -> dict[str, JobInfo]:
        return {j: JobInfo(state="running" if j.isdigit() and pid_alive(int(j)) else "ended") for j in job_ids}

    def cancel(self, job_id: str, run: Run) -> bool:
        from cluster.backends.local_executor import is_controller_of

        if not (job_id.isdigit() and is_controller_of(int(job_id), run)):
            return False  # a reused pid, or another run's controller: signal nothing
        try:
            os.kill(int(job_id), signal.SIGTERM)  # the controller forwards it to the task
        except ProcessLookupError:  # it ended between the check and the signal
            return False
        return True

    def settle_ended(self, job_id: str, run: Run) -> bool:
        """The controller is gone and nothing recorded an end: nothing will run the job again,
        so the run is failed, with the controller's last error (its crash, e.g. an import error
        at start-up, is in ``logs/controller.log``) as the reason."""
        from cluster.runs import TERMINAL_STATES, now_iso
        from train.contract import SUMMARY_FILE

        changed = False

        def change(record: dict[str, Any]) -> None:
            nonlocal changed
            if record.get("state") in TERMINAL_STATES or (run.path / SUMMARY_FILE).exists():
                return  # the job recorded its own end after our read
            if run.current_job_id(record) != job_id or (job_id.isdigit() and pid_alive(int(job_id))):
                return
            record.update(state="failed", error=controller_failure(run), ended=now_iso(), updated=now_iso())
            changed = True

        run.update(change)
        return changed

    def job_environment(self, spec: JobSpec) -> None:
        """What the batch script's prologue does on a cluster: private TMPDIR, exported variables.

        (Module loads need a cluster's module system; the local executor runs without them.)
        """
        from cluster.spec import expand_path

        if spec.environment.venv:  # this process is the venv's python already: its programs come first too
            venv = expand_path(spec.environment.venv, os.environ, strict=False).rstrip("/") or "/"
            os.environ["VIRTUAL_ENV"] = venv
            os.environ["PATH"] = f"{venv}/bin{os.pathsep}{os.environ.get('PATH', '')}"
            os.environ.pop("PYTHONHOME", None)
        tmpdir = spec.tmpdir_path()
        if tmpdir:
            tmpdir.mkdir(parents=True, exist_ok=True)
            os.environ["TMPDIR"] = str(tmpdir)
        for name, value in spec.environment.env:
            os.environ[name] = expand_path(value, os.environ, strict=False)

    def doctor_checks(self, spec: JobSpec) -> list[Check]:
        return [Check("ok", "scheduler", "scheduler.kind is local: jobs run on this machine (local executor)")]


BACKEND = LocalBackend()
