"""What a job sees of itself under PBS Pro, Torque, or Slurm's Torque compatibility layer.

submitit builds a job's file names from ``JobEnvironment.job_id``; it must equal
the id the submitting side used, ``PBSJobId.key`` (``1234`` or ``1234_5``). It
is rebuilt here from:

============  ===============================  ===================================
scheduler     job                              array task
============  ===============================  ===================================
PBS Pro       ``PBS_JOBID=1234.server``        ``PBS_JOBID=1234[5].server``,
                                               ``PBS_ARRAY_INDEX=5``
Torque        ``PBS_JOBID=1234.host``          ``PBS_JOBID=1234[5].host``,
                                               ``PBS_ARRAYID=5``
Slurm's       ``SLURM_JOB_ID=13``              ``SLURM_ARRAY_JOB_ID=11``,
wrapper       (no ``PBS_*`` at all)            ``SLURM_ARRAY_TASK_ID=0``
============  ===============================  ===================================

Ranks come from whatever launched the task: Open MPI (``OMPI_COMM_WORLD_*``),
an MPICH/Hydra or PBS ``mpiexec`` (``PMI_*``), Cray PALS (``PALS_*``), or
``srun`` under Slurm (``SLURM_PROCID`` ...). Without a launcher there is one
task. ``PBS_NP`` / ``NCPUS`` count CPUs, not tasks, and are not used as a task
count: a wrong world size makes distributed training hang.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence

from submitit.core.job_environment import JobEnvironment
from submitit.slurm.slurm import _parse_node_list

from cluster.backends.pbs.jobid import PBSJobId

__all__ = ["PBSJobEnvironment"]

log = logging.getLogger(__name__)

_GLOBAL_RANK = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PALS_RANKID", "SLURM_PROCID")
_LOCAL_RANK = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PALS_LOCAL_RANKID", "SLURM_LOCALID")
_NUM_TASKS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS")


def _first_int(names: Sequence[str], default: int) -> int:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                log.warning("Ignoring %s=%r: not an integer", name, value)
    return default


def _short(host: str) -> str:
    return host.split(".", 1)[0]


class PBSJobEnvironment(JobEnvironment):
    """submitit's view of a running PBS Pro / Torque job (or one under Slurm's Torque layer)."""

    # The primary variable for each property; the properties below add the
    # fallbacks (other schedulers' and launchers' names, the node file).
    _env = {
        "job_id": "PBS_JOBID",
        "array_job_id": "PBS_ARRAY_ID",
        "array_task_id": "PBS_ARRAY_INDEX",
        "num_tasks": "PMI_SIZE",
        "num_nodes": "PBS_NUM_NODES",
        "node": "PBS_NODENUM",
        "nodes": "PBS_NODEFILE",
        "global_rank": "PMI_RANK",
        "local_rank": "MPI_LOCALRANKID",
    }

    def activated(self) -> bool:
        """True inside a job our PBS executor started.

        ``SUBMITIT_EXECUTOR`` decides when set (a local job started from inside a
        PBS job inherits ``PBS_JOBID`` but says ``local``); otherwise the
        ``CLUSTER_EXECUTOR=pbs`` our scripts export, or ``PBS_JOBID``.
        """
        executor = os.environ.get("SUBMITIT_EXECUTOR", "")
        if executor:
            return executor == self.name()
        return os.environ.get("CLUSTER_EXECUTOR", "") == "pbs" or "PBS_JOBID" in os.environ

    # ------------------------------------------------------------ ids
    def _pbs_job_id(self) -> PBSJobId | None:
        raw = os.environ.get("PBS_JOBID", "").strip()
        if not raw:
            return None
        job_id = PBSJobId.parse(raw)
        if job_id.array_index is None:
            # Some Torque versions name subjobs differently; the index variables still say.
            index = os.environ.get("PBS_ARRAY_INDEX") or os.environ.get("PBS_ARRAYID")
            if index and index.strip().isdigit():
                job_id = PBSJobId(job_id.number, int(index), False, job_id.server)
        return job_id

    @property
    def raw_job_id(self) -> str:
        pbs = self._pbs_job_id()
        if pbs is not None:
            return str(pbs.number)
        return os.environ["SLURM_JOB_ID"]

    @property
    def array_job_id(self) -> str | None:
        pbs = self._pbs_job_id()
        if pbs is not None:
            return str(pbs.number) if pbs.array_index is not None else None
        return os.environ.get("SLURM_ARRAY_JOB_ID") or None

    @property
    def array_task_id(self) -> str | None:
        pbs = self._pbs_job_id()
        if pbs is not None:
            return str(pbs.array_index) if pbs.array_index is not None else None
        return os.environ.get("SLURM_ARRAY_TASK_ID") or None

    # ------------------------------------------------------------ nodes
    def _node_file_hosts(self) -> list[str]:
        """Distinct hosts of ``PBS_NODEFILE`` in file order (one line per CPU or chunk)."""
        path = os.environ.get("PBS_NODEFILE", "")
        if not path:
            return []
        try:
            with open(path, encoding="utf-8") as handle:
                lines = [line.strip() for line in handle if line.strip()]
        except OSError as error:
            log.warning("Cannot read PBS_NODEFILE %s: %s", path, error)
            return []
        return list(dict.fromkeys(lines))

    @property
    def hostnames(self) -> list[str]:
        hosts = self._node_file_hosts()
        if hosts:
            return hosts
        node_list = os.environ.get("SLURM_JOB_NODELIST", "")
        return _parse_node_list(node_list) if node_list else [self.hostname]

    @property
    def num_nodes(self) -> int:
        if os.environ.get("PBS_NUM_NODES"):
            return _first_int(("PBS_NUM_NODES",), 1)
        hosts = self._node_file_hosts()
        if hosts:
            return len(hosts)
        return _first_int(("SLURM_JOB_NUM_NODES", "SLURM_NNODES"), 1)

    @property
    def node(self) -> int:
        """This host's position among the job's hosts (0 on the first)."""
        if os.environ.get("SLURM_NODEID") or os.environ.get("PBS_NODENUM"):
            return _first_int(("SLURM_NODEID", "PBS_NODENUM"), 0)
        hosts = [_short(h) for h in self._node_file_hosts()]
        me = _short(socket.gethostname())
        return hosts.index(me) if me in hosts else 0

    # ------------------------------------------------------------ tasks
    @property
    def num_tasks(self) -> int:
        return _first_int(_NUM_TASKS, 1)

    @property
    def global_rank(self) -> int:
        return _first_int(_GLOBAL_RANK, 0)

    @property
    def local_rank(self) -> int:
        return _first_int(_LOCAL_RANK, 0)

    # ------------------------------------------------------------ requeue
    def _requeue(self, countdown: int) -> None:
        """PBS has no way for a job to requeue itself; the checkpoint is kept, nothing is requeued.

        submitit calls this after a successful ``checkpoint()`` and then exits the
        job without a result file; the continuation (resubmitting from the
        updated submission pickle) is the executor's business.
        """
        log.warning(
            "Job %s: checkpointed (%d timeouts left); PBS jobs cannot requeue themselves, "
            "so the continuation must be submitted by the executor",
            self.job_id,
            countdown,
        )
