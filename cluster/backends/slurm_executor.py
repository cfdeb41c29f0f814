"""submitit's Slurm executor, handed the project's script (imported only when submitting)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import submitit
from submitit.core import utils

from cluster.backends.base import SUBMITIT_ENTRY, Backend, submit_array
from cluster.backends.script import JobOptions, build_script, python_word
from cluster.isolate import job_command
from train.contract import RUN_DIR_ENV

if TYPE_CHECKING:
    from cluster.spec import JobSpec


class SlurmExecutor(submitit.SlurmExecutor):
    """submitit's Slurm executor, with the script rendered from a job spec.

    submitit's Slurm executor writes its own sbatch script; ours fills the project's template,
    so the submitted script carries the spec's directives and prologue (module loads, TMPDIR)
    and agrees with ``cluster render``. Only the command differs: submitit's
    ``srun ... python -m submitit.core._submit FOLDER``.
    """

    entry_module = SUBMITIT_ENTRY
    """The job's entry point (an array's tasks start with ``cluster.backends.array_task``)."""

    before_start: Callable[[list], None] | None = None
    """Called with an array's jobs once submitted, before its tasks can start (see
    :func:`cluster.backends.base.submit_array`): a sweep writes their run.json then."""

    def __init__(self, folder: str | Path, spec: JobSpec, run_dir: str | Path, backend: Backend, *,
                 array_parallelism: int | None = None) -> None:
        # submitit writes `python` into the srun line as it is: one shell word ($VAR expands in the job).
        super().__init__(folder=folder, max_num_timeout=spec.scheduler.max_requeues, python=python_word(spec))
        self.spec = spec
        self.backend = backend
        self.run_dir = str(run_dir)
        self.array_parallelism = array_parallelism
        # submitit counts tasks from these to decide how many result files to expect.
        self.update_parameters(nodes=spec.resources.nodes, ntasks_per_node=spec.resources.tasks_per_node)

    @property
    def _submitit_command_str(self) -> str:
        # submitit's own is `python -u -m submitit.core._submit FOLDER`, which puts the submit
        # directory first on sys.path: a user's submitit.py or train.py there would be imported.
        return job_command(self.python, self.entry_module, shlex.quote(str(self.folder)), unbuffered=True)

    def _internal_process_submissions(self, delayed_submissions: list[utils.DelayedSubmission]) -> list:
        """An array for several submissions, like submitit's, but rendered by us (one sbatch call)."""
        if len(delayed_submissions) == 1:
            return super()._internal_process_submissions(delayed_submissions)
        array_ex = SlurmExecutor(self.folder, self.spec, self.run_dir, self.backend,
                                 array_parallelism=self.array_parallelism)
        timeout_min = (self.spec.resources.time_seconds or 3600) / 60
        return submit_array(array_ex, delayed_submissions, submitit.SlurmJob, timeout_min, self.before_start)

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
            extra_env=((RUN_DIR_ENV, self.run_dir),),
        )
        # One task per rank. --kill-on-bad-exit: when a rank fails, srun ends the others
        # rather than leaving them to wait for it until their collectives time out.
        srun = shlex.join(["srun", "--unbuffered", "--kill-on-bad-exit=1", "--output", stdout, "--error", stderr])
        lines = ["# --- run: submitit's entrypoint (cluster.job.TrainJob)",
                 "export SUBMITIT_EXECUTOR=slurm",
                 f"{srun} {command}"]
        return build_script(self.spec, self.backend, "slurm", command=lines, options=options).text()
