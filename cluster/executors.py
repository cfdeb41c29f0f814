"""submitit executors that hand the scheduler this project's own script.

submitit's Slurm executor writes its own sbatch script; ours renders it with
:mod:`cluster.render`, so the submitted script carries the spec's directives and
prologue (module loads, TMPDIR) and agrees with ``cluster render``. Only the
command differs: submitit's ``srun ... python -m submitit.core._submit FOLDER``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import submitit
from submitit.core import utils
from submitit.local.local import LocalJob

from cluster.render import JobOptions, render
from cluster.spec import JobSpec


def python_for(spec: JobSpec) -> str:
    """The compute-node interpreter: the spec's, else the one running ``cluster``."""
    return spec.environment.python or sys.executable


class SlurmExecutor(submitit.SlurmExecutor):
    """submitit's Slurm executor, with the script rendered from a job spec."""

    def __init__(self, folder: str | Path, spec: JobSpec, run_dir: str | Path, *,
                 array_parallelism: int | None = None) -> None:
        super().__init__(folder=folder, max_num_timeout=spec.scheduler.max_requeues, python=python_for(spec))
        self.spec = spec
        self.run_dir = str(run_dir)
        self.array_parallelism = array_parallelism
        # submitit counts tasks from these to decide how many result files to expect.
        self.update_parameters(nodes=spec.resources.nodes, ntasks_per_node=spec.resources.tasks_per_node)

    def _internal_process_submissions(self, delayed_submissions: list[utils.DelayedSubmission]) -> list:
        """An array for several submissions, like submitit's, but rendered by us (one sbatch call)."""
        if len(delayed_submissions) == 1:
            return super()._internal_process_submissions(delayed_submissions)
        array_ex = SlurmExecutor(self.folder, self.spec, self.run_dir, array_parallelism=self.array_parallelism)
        timeout_min = (self.spec.resources.time_seconds or 3600) / 60
        return submit_array(array_ex, delayed_submissions, submitit.SlurmJob, timeout_min)

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        paths = utils.JobPaths(folder=self.folder)
        stdout, stderr = str(paths.stdout), str(paths.stderr)
        array = None
        map_count = self.parameters.get("map_count")
        if map_count:
            cap = min(map_count, self.array_parallelism or map_count)
            array = f"0-{map_count - 1}%{cap}"
            stdout, stderr = stdout.replace("%j", "%A_%a"), stderr.replace("%j", "%A_%a")
        options = JobOptions(
            stdout=stdout.replace("%t", "0"),
            stderr=stderr.replace("%t", "0"),
            array=array,
            signal_batch_shell=False,  # srun's step gets the USR2, where the trainer runs
            extra_env=(("CLUSTER_RUN_DIR", self.run_dir),),
        )
        # One task per rank. --kill-on-bad-exit: when a rank fails, srun ends the others
        # rather than leaving them to wait for it until their collectives time out.
        srun = shlex.join(["srun", "--unbuffered", "--kill-on-bad-exit=1", "--output", stdout, "--error", stderr])
        lines = ["# --- run: submitit's entrypoint (cluster.job.TrainJob)",
                 "export SUBMITIT_EXECUTOR=slurm",
                 f"{srun} {command}"]
        return render(self.spec, "slurm", command=lines, options=options)


class LocalExecutor(submitit.LocalExecutor):
    """submitit's local executor, with its controller detached from ``cluster submit``.

    submitit starts the controller with our stdin/stdout/stderr and in our session: a
    ``cluster submit | tee`` would then wait for the whole training, and a Ctrl-C on the
    terminal would kill the job. Ours writes to the run's logs and has its own session, and is
    :mod:`cluster.local_controller`, which restarts the tasks up to the run's requeue budget
    (submitit's stops after six attempts).
    """

    def __init__(self, folder: str | Path, run_dir: str | Path, max_requeues: int, python: str) -> None:
        super().__init__(folder=folder, max_num_timeout=max_requeues, python=python)
        self.run_dir = str(run_dir)

    def _submit_command(self, command: str) -> LocalJob:
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            SUBMITIT_LOCAL_NTASKS=str(self.parameters.get("tasks_per_node", 1)),
            SUBMITIT_LOCAL_COMMAND=command,
            SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * self.parameters.get("timeout_min", 2.0))),
            SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(self.parameters.get("signal_delay_s", 30))),
            SUBMITIT_LOCAL_NODEID="0",
            SUBMITIT_LOCAL_JOB_NUM_NODES="1",
            SUBMITIT_STDERR_TO_STDOUT="",
            SUBMITIT_EXECUTOR="local",
            SUBMITIT_LOCAL_WITH_SHELL="",
            CLUSTER_RUN_DIR=self.run_dir,
            CLUSTER_LOCAL_MAX_ATTEMPTS=str(self.max_num_timeout + 1),
        )
        with open(folder / "controller.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "cluster.local_controller", str(folder)], env=env,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        tasks = list(range(self.parameters.get("tasks_per_node", 1)))
        return LocalJob(folder=folder, job_id=str(process.pid), process=process, tasks=tasks)


def submit_array(array_ex: submitit.Executor, delayed_submissions: list[utils.DelayedSubmission],
                 job_class: type, timeout_min: float) -> list:
    """Submit ``delayed_submissions`` as one array job of ``array_ex``; one submitit job per task.

    As submitit does for Slurm: each task's pickle is written first under a temporary
    name, the array is submitted once, then the pickles are renamed to ``<array>_<i>``.
    """
    folder = utils.JobPaths.get_first_id_independent_folder(array_ex.folder)
    folder.mkdir(parents=True, exist_ok=True)
    pickle_paths = []
    for delayed in delayed_submissions:
        path = folder / f"{uuid.uuid4().hex}.pkl"
        delayed.set_timeout(timeout_min, array_ex.max_num_timeout)
        delayed.dump(path)
        pickle_paths.append(path)
    array_ex.parameters["map_count"] = len(delayed_submissions)
    first = array_ex._submit_command(array_ex._submitit_command_str)
    parent = str(first.job_id).split("_")[0]
    jobs = [job_class(folder=array_ex.folder, job_id=f"{parent}_{i}", tasks=list(range(first.num_tasks)))
            for i in range(len(delayed_submissions))]
    for job, path in zip(jobs, pickle_paths):
        job.paths.move_temporary_file(path, "submitted_pickle")
    return jobs


def local_executor(folder: str | Path, spec: JobSpec, run_dir: str | Path) -> LocalExecutor:
    """The local executor with the spec's walltime as its timeout (it then sends USR2)."""
    executor = LocalExecutor(folder, run_dir, spec.scheduler.max_requeues, python_for(spec))
    minutes = (spec.resources.time_seconds or 24 * 3600) / 60
    # Warn signal_seconds before the timeout, leaving the job at least 10 s to run.
    signal_delay = min(spec.scheduler.signal_seconds, max(1, int(minutes * 60) - 10))
    executor.update_parameters(timeout_min=minutes, signal_delay_s=signal_delay,
                               tasks_per_node=spec.resources.tasks_per_node, gpus_per_node=0)
    return executor
