"""PBS Pro / OpenPBS and Torque through submitit: the scheduler-facing parsing layer.

* ``jobid``       -- job ids as qsub prints them; ``PBSJobId.key`` is the submitit job id
* ``qstat``       -- one qstat call for all watched jobs; JSON (PBS Pro) and text (Torque) parsers
* ``states``      -- job_state letters and exit statuses -> submitit and project states
* ``watcher``     -- ``PBSInfoWatcher``, a submitit ``InfoWatcher``
* ``environment`` -- ``PBSJobEnvironment``, what a running job knows about itself

Slurm's Torque-compatible commands (package slurm-wlm-torque) are covered by the
"torque" flavor. Nothing here imports torch.
"""

from cluster.backends.pbs.environment import PBSJobEnvironment
from cluster.backends.pbs.jobid import PBSJobId, PBSOutputError, parse_qsub_output
from cluster.backends.pbs.qstat import parse_qstat_json, parse_qstat_text, qstat_command, unknown_job_ids
from cluster.backends.pbs.states import NORMAL_STATES, Flavor, JobStatus, status_from_attributes
from cluster.backends.pbs.watcher import PBSInfoWatcher

__all__ = [
    "NORMAL_STATES",
    "Flavor",
    "JobStatus",
    "PBSInfoWatcher",
    "PBSJobEnvironment",
    "PBSJobId",
    "PBSOutputError",
    "parse_qstat_json",
    "parse_qstat_text",
    "parse_qsub_output",
    "qstat_command",
    "status_from_attributes",
    "unknown_job_ids",
]
