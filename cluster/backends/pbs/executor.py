"""A submitit executor for PBS Pro and Torque, registered as submitit's ``pbs`` plugin.

Installing this project makes ``submitit.AutoExecutor(folder, cluster="pbs")`` find it
(entry points in pyproject.toml); that path imports neither the spec loader nor the trainer
(plain submitit parameters become a small :class:`PlainSpec`). The script is the project's
template (:mod:`cluster.backends.script`; PBS Pro ``select`` or Torque ``nodes=N:ppn=C`` from
the flavour), submitted with
``qsub`` and cancelled with ``qdel``; one ``qstat`` per refresh watches every job.

PBS expands no job-id placeholder in ``-o``/``-e``, so the script itself sends its
output to submitit's per-job files (``<folder>/<job key>_0_log.out``) as its first
action; ``qsub -o/-e`` (on the command line, which Slurm's qsub wrapper honours too)
only catch what the scheduler itself prints.

PBS has no early warning before the walltime: the trainer stops itself before its
deadline, and :func:`continue_job` submits the continuation: the same script again,
depending on the ending job, with the checkpointed submission copied under the new id.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable

from submitit.core import core, utils

from cluster.backends.base import SUBMITIT_ENTRY, answers, carry_submission, run_command, submit_array
from cluster.backends.pbs.environment import PBSJobEnvironment
from cluster.backends.pbs.jobid import PBSJobId, parse_qsub_output
from cluster.backends.pbs.script import SCRIPTS
from cluster.backends.pbs.watcher import PBSInfoWatcher
from cluster.backends.script import JobOptions, build_script, python_for, shell_path
from cluster.isolate import job_command
from cluster.units import parse_memory, parse_walltime
from train.contract import RUN_DIR_ENV

if TYPE_CHECKING:
    from cluster.spec import JobSpec

__all__ = ["PBSExecutor", "PBSJob", "TorqueJob", "PBSJobEnvironment", "continue_job"]

# The script's first lines: every attempt's output lands in submitit's files for its own job id.
_REDIRECT = [
    'CLUSTER_JOB_KEY="${PBS_JOBID:-${SLURM_JOB_ID:-}}"',
    'CLUSTER_JOB_KEY="${CLUSTER_JOB_KEY%%.*}"',
    'CLUSTER_JOB_KEY="${CLUSTER_JOB_KEY/\\[/_}"; CLUSTER_JOB_KEY="${CLUSTER_JOB_KEY%]}"',
    'if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then CLUSTER_JOB_KEY="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; fi',
]


class PBSJob(core.Job[Any]):
    """A PBS Pro job; ``job_id`` is the submitit key (``1234`` or ``1234_5``)."""

    _cancel_command = "qdel"
    watcher = PBSInfoWatcher("pbspro", delay_s=30)

    def cancel(self, check: bool = True) -> None:
        target = str(PBSJobId.parse(self.job_id))
        run_command([self._cancel_command, target], check=check)


class TorqueJob(PBSJob):
    """A Torque job (also Slurm's Torque-compatible ``qsub``)."""

    watcher = PBSInfoWatcher("torque", delay_s=30)


class PBSExecutor(core.PicklingExecutor):
    """Submit to PBS Pro or Torque.

    From a job spec (what ``cluster submit --executor pbs`` does)::

        PBSExecutor(folder, spec=spec, run_dir=run_dir)

    or as a plain submitit plugin::

        ex = submitit.AutoExecutor(folder, cluster="pbs", pbs_flavor="torque")
        ex.update_parameters(timeout_min=30, cpus_per_task=4, pbs_queue="gpu")
    """

    entry_module = SUBMITIT_ENTRY
    """The job's entry point (an array's tasks start with ``cluster.backends.array_task``)."""

    before_start: Callable[[list], None] | None = None
    """Called with an array's jobs once submitted, before its tasks can start (see
    :func:`cluster.backends.base.submit_array`): a sweep writes their run.json then."""

    job_class = PBSJob

    def __init__(self, folder: str | Path, *, flavor: str | None = None, spec: JobSpec | None = None,
                 run_dir: str | Path | None = None, max_num_timeout: int = 3, python: str | None = None) -> None:
        super().__init__(folder, max_num_timeout=max_num_timeout)
        self.spec = spec
        self.run_dir = str(run_dir) if run_dir else None
        self.flavor = flavor or (spec.scheduler.pbs_flavor if spec else "pbspro")
        if self.flavor not in ("pbspro", "torque"):
            raise ValueError(f"unknown PBS flavor {self.flavor!r} (allowed: pbspro, torque)")
        self.job_class = TorqueJob if self.flavor == "torque" else PBSJob
        self.python = python or (python_for(spec) if spec else sys.executable)
        if spec is not None:
            self.max_num_timeout = spec.scheduler.max_requeues
        self._uid: str | None = None

    # --- parameters (for plain submitit use; a spec carries its own)
    @classmethod
    def _valid_parameters(cls) -> set[str]:
        return {"job_name", "queue", "account", "nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node",
                "mem", "time", "modules", "setup", "tmpdir", "extra_directives", "array_parallelism"}

    def _equivalence_dict(self) -> dict[str, str]:
        return {"name": "job_name", "timeout_min": "time", "mem_gb": "mem"}

    def _convert_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        params = super()._convert_parameters(params)
        if "mem" in params and isinstance(params["mem"], (int, float)):
            params["mem"] = f"{params['mem']}G"
        return params

    def _internal_update_parameters(self, **kwargs: Any) -> None:
        invalid = set(kwargs) - self._valid_parameters()
        if invalid:
            raise ValueError(f"unknown PBS parameters {sorted(invalid)} (valid: {sorted(self._valid_parameters())})")
        super()._internal_update_parameters(**kwargs)

    @classmethod
    def affinity(cls) -> int:
        return 1 if pbs_answers() else -1

    def _job_spec(self) -> JobSpec | PlainSpec:
        if self.spec is not None:
            return self.spec
        return PlainSpec.from_parameters(self.parameters, self.flavor)

    # --- submission
    def _num_tasks(self) -> int:
        spec = self._job_spec()
        return spec.resources.nodes * spec.resources.tasks_per_node

    def _log_paths(self) -> tuple[Path, Path]:
        """Where qsub's own -o/-e go (the job's output goes to submitit's files)."""
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        return folder / f"pbs-{self._uid}.out", folder / f"pbs-{self._uid}.err"

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        self._uid = uid
        spec = self._job_spec()
        folder = Path(self.folder)
        array = self.parameters.get("map_count")
        extra_env = [("SUBMITIT_EXECUTOR", "pbs"), ("CLUSTER_EXECUTOR", "pbs"),
                     ("CLUSTER_SUBMITIT_FOLDER", str(folder))]
        if self.run_dir:
            extra_env.append((RUN_DIR_ENV, self.run_dir))
        options = JobOptions(
            job_name=spec.name if self.spec else self.parameters.get("job_name"),
            array=f"0-{array - 1}" if array else None,
            requeue=False,
            early_signal=False,
            extra_env=tuple(extra_env),
        )
        out = shlex.quote(str(folder)) + '/"${CLUSTER_JOB_KEY}_0_log'
        lines = ["# --- run: submitit's entrypoint; output to submitit's files for this job id",
                 *_REDIRECT,
                 f'exec >>{out}.out" 2>>{out}.err"',
                 # exec: the job's own process is the one the scheduler tracks and kills; a child
                 # of a killed batch shell can outlive its job where process tracking is by parent.
                 f"exec {command}"]
        return build_script(spec, SCRIPTS, self.flavor, command=lines, options=options).text()

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        out, err = self._log_paths()
        return ["qsub", "-o", str(out), "-e", str(err), str(submission_file_path)]

    @staticmethod
    def _get_job_id_from_submission_command(string: bytes | str) -> str:
        return PBSJobId.parse(parse_qsub_output(string)).key

    @property
    def _submitit_command_str(self) -> str:
        # The spec's environment.python (or venv) may hold $VAR or ~ (validated): expand it in the job.
        from_spec = self.spec and (self.spec.environment.python or self.spec.environment.venv)
        python = shell_path(self.python) if from_spec else shlex.quote(self.python)
        # Not `python -m`: the submit directory must not come first on sys.path (cluster.isolate).
        return job_command(python, self.entry_module, shlex.quote(str(self.folder)), unbuffered=True)

    def _internal_process_submissions(self, delayed_submissions: list[utils.DelayedSubmission]) -> list[core.Job[Any]]:
        if len(delayed_submissions) == 1:
            return super()._internal_process_submissions(delayed_submissions)
        # An array: one qsub (-J on PBS Pro, -t on Torque), one pickle for all its tasks.
        array_ex = PBSExecutor(self.folder, flavor=self.flavor, spec=self.spec, run_dir=self.run_dir,
                               max_num_timeout=self.max_num_timeout, python=self.python)
        array_ex.parameters.update(self.parameters)
        timeout_min = (self._job_spec().resources.time_seconds or 3600) / 60
        return submit_array(array_ex, delayed_submissions, self.job_class, timeout_min, self.before_start)


def pbs_answers() -> bool:
    """A real PBS server (not Slurm's qstat wrapper): ``qstat -B`` lists servers only on PBS."""
    return not answers(["sinfo", "-h", "-o", "%P"]) and answers(["qstat", "-B"])


class PlainSpec(SimpleNamespace):
    """What the script template reads of a job spec, from plain submitit parameters.

    ``submitit.AutoExecutor(folder, cluster="pbs")`` users are programmers, not spec authors:
    the values are quoted by the template, but not validated like a spec's.
    """

    @classmethod
    def from_parameters(cls, p: dict[str, Any], flavor: str) -> PlainSpec:
        mem = p.get("mem")
        time = p.get("time")
        resources = SimpleNamespace(
            queue=p.get("queue"), account=p.get("account"), nodes=int(p.get("nodes", 1)),
            tasks_per_node=int(p.get("tasks_per_node", 1)), cpus_per_task=int(p.get("cpus_per_task", 1)),
            gpus_per_node=int(p.get("gpus_per_node", 0)),
            mem_mb=parse_memory(mem) if mem is not None else None,
            time_seconds=(int(float(time) * 60) if isinstance(time, (int, float)) else parse_walltime(time))
            if time is not None else None)
        scheduler = SimpleNamespace(kind="pbs", pbs_flavor=flavor, extra_directives=tuple(p.get("extra_directives", ())),
                                    skip_directives=(), signal_seconds=0, max_requeues=0)
        environment = SimpleNamespace(modules=tuple(p.get("modules", ())), setup=tuple(p.get("setup", ())),
                                      tmpdir=p.get("tmpdir"), env=(), python=None, venv=None,
                                      requirements=(), requirements_file=None)
        return cls(name=p.get("job_name", "submitit"), resources=resources, scheduler=scheduler,
                   environment=environment)


def continue_job(job_key: str, folder: str | Path) -> str:
    """Submit the continuation of ``job_key``: its own script again, after it ends.

    Called inside the ending job once its checkpoint is written. The new job reads
    the (checkpointed) submission pickle copied under its own id.
    """
    paths = utils.JobPaths(folder, job_id=job_key)
    script = paths.submission_file
    if not script.exists():
        raise FileNotFoundError(f"no submission script for job {job_key} at {script}")
    dependency = str(PBSJobId.parse(job_key).without_server())
    out = paths.folder / f"pbs-continue-{job_key}.out"
    err = paths.folder / f"pbs-continue-{job_key}.err"
    cmd = ["qsub", "-o", str(out), "-e", str(err), "-W", f"depend=afterany:{dependency}", str(script.resolve())]
    proc = run_command(cmd)
    new_key = PBSJobId.parse(parse_qsub_output(proc.stdout)).key
    carry_submission(folder, job_key, new_key, script)
    return new_key
