"""submitit executors that hand the scheduler this project's own script.

submitit's Slurm executor writes its own sbatch script; ours renders it with
:mod:`cluster.render`, so the submitted script carries the spec's directives and
prologue (module loads, TMPDIR) and agrees with ``cluster render``. Only the
command differs: submitit's ``srun ... python -m submitit.core._submit FOLDER``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import submitit
from submitit.core import utils

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
        srun = shlex.join(["srun", "--unbuffered", "--output", stdout, "--error", stderr])
        lines = ["# --- run: submitit's entrypoint (cluster.job.TrainJob)",
                 "export SUBMITIT_EXECUTOR=slurm",
                 f"{srun} {command}"]
        return render(self.spec, "slurm", command=lines, options=options)


def local_executor(folder: str | Path, spec: JobSpec) -> submitit.LocalExecutor:
    """submitit's local executor with the spec's walltime as its timeout (it then sends USR2)."""
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=spec.scheduler.max_requeues,
                                      python=python_for(spec))
    minutes = (spec.resources.time_seconds or 24 * 3600) / 60
    signal_delay = min(spec.scheduler.signal_seconds, int(minutes * 60 * 0.5))
    executor.update_parameters(timeout_min=minutes, signal_delay_s=signal_delay,
                               tasks_per_node=spec.resources.tasks_per_node, gpus_per_node=0)
    return executor
