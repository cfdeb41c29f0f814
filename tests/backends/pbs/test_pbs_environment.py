"""PBSJobEnvironment reads PBS Pro, Torque and Slurm-compat variables (the recorded ones
from fixtures/SOURCES.md for Slurm) and rebuilds the same job id the submitter used."""

import os

import pytest

from cluster.backends.pbs import environment as environment_module
from cluster.backends.pbs.environment import PBSJobEnvironment
from cluster.backends.pbs.jobid import PBSJobId, parse_qsub_output

_PREFIXES = ("PBS_", "SLURM_", "OMPI_", "PMI_", "PALS_", "MPI_", "SUBMITIT_", "CLUSTER_")


@pytest.fixture
def env(monkeypatch):
    """A clean environment (tests may themselves run inside a Slurm or PBS job)."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name)

    def set_vars(**variables: str) -> PBSJobEnvironment:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return PBSJobEnvironment()

    return set_vars


def test_name_is_pbs(env):
    assert PBSJobEnvironment.name() == "pbs"


def test_pbspro_plain_job(env):
    job = env(PBS_JOBID="1234.pbs01")
    assert job.job_id == "1234" == PBSJobId.parse(parse_qsub_output("1234.pbs01\n")).key
    assert (job.raw_job_id, job.array_job_id, job.array_task_id) == ("1234", None, None)
    assert (job.num_tasks, job.num_nodes, job.node, job.global_rank, job.local_rank) == (1, 1, 0, 0, 0)


def test_pbspro_subjob(env):
    job = env(PBS_JOBID="1234[5].pbs01", PBS_ARRAY_ID="1234[].pbs01", PBS_ARRAY_INDEX="5")
    assert job.job_id == "1234_5"
    # the submitting side names array tasks the way submitit does: f"{first_job.job_id}_{index}"
    first = PBSJobId.parse(parse_qsub_output("1234[].pbs01\n")).key
    assert job.job_id == f"{first}_5"
    assert (job.array_job_id, job.array_task_id) == ("1234", "5")


def test_torque_subjob(env):
    job = env(PBS_JOBID="77[3].torque01", PBS_ARRAYID="3", PBS_NUM_NODES="2", PBS_NP="16", PBS_NODENUM="1")
    assert job.job_id == "77_3"
    assert job.num_nodes == 2
    assert job.node == 1
    assert job.num_tasks == 1  # PBS_NP counts CPUs, not tasks


def test_torque_subjob_named_without_brackets(env):
    job = env(PBS_JOBID="77.torque01", PBS_ARRAYID="3")
    assert job.job_id == "77_3"


def test_slurm_compat_plain_job(env):
    # What a job submitted with slurm-wlm-torque's qsub really had (recorded): no PBS_* at all.
    job = env(SLURM_JOB_ID="9", SLURM_JOBID="9", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0",
              SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_JOB_NODELIST="vm", CLUSTER_EXECUTOR="pbs")
    assert job.job_id == "9" == PBSJobId.parse(parse_qsub_output("9\n")).key
    assert job.hostnames == ["vm"]
    assert job.activated()


def test_slurm_compat_array_task(env):
    # Recorded: task 0 of array 11 ran as Slurm job 13.
    job = env(SLURM_JOB_ID="13", SLURM_ARRAY_JOB_ID="11", SLURM_ARRAY_TASK_ID="0", SLURM_JOB_NUM_NODES="1")
    assert job.job_id == "11_0" == f"{PBSJobId.parse(parse_qsub_output('11')).key}_0"
    assert job.raw_job_id == "13"


def test_node_file(env, tmp_path, monkeypatch):
    node_file = tmp_path / "nodes"
    node_file.write_text("n01.cluster\n" * 4 + "n02.cluster\n" * 4 + "n03.cluster\n" * 4)
    monkeypatch.setattr(environment_module.socket, "gethostname", lambda: "n02")
    job = env(PBS_JOBID="5.pbs", PBS_NODEFILE=str(node_file))
    assert job.hostnames == ["n01.cluster", "n02.cluster", "n03.cluster"]
    assert job.num_nodes == 3
    assert job.node == 1


def test_unreadable_node_file_falls_back(env, tmp_path):
    job = env(PBS_JOBID="5.pbs", PBS_NODEFILE=str(tmp_path / "missing"))
    assert job.num_nodes == 1
    assert len(job.hostnames) == 1


@pytest.mark.parametrize(
    "variables, ranks",
    [
        ({"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, (8, 5, 1)),
        ({"PMI_SIZE": "4", "PMI_RANK": "3", "MPI_LOCALRANKID": "1"}, (4, 3, 1)),
        ({"PMI_SIZE": "4", "PALS_RANKID": "2", "PALS_LOCAL_RANKID": "0"}, (4, 2, 0)),
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}, (2, 1, 1)),
        ({"PMI_SIZE": "many"}, (1, 0, 0)),
    ],
)
def test_ranks_from_the_launcher(env, variables, ranks):
    job = env(PBS_JOBID="5.pbs", **variables)
    assert (job.num_tasks, job.global_rank, job.local_rank) == ranks


@pytest.mark.parametrize(
    "variables, active",
    [
        ({}, False),
        ({"PBS_JOBID": "1.pbs"}, True),
        ({"CLUSTER_EXECUTOR": "pbs", "SLURM_JOB_ID": "9"}, True),
        ({"SUBMITIT_EXECUTOR": "pbs"}, True),
        ({"SUBMITIT_EXECUTOR": "local", "PBS_JOBID": "1.pbs"}, False),  # a local job inside a PBS job
        ({"SUBMITIT_EXECUTOR": "slurm", "CLUSTER_EXECUTOR": "pbs"}, False),
        ({"SLURM_JOB_ID": "9"}, False),
    ],
)
def test_activated(env, variables, active):
    assert env(**variables).activated() is active


def test_requeue_only_logs(env, caplog):
    job = env(PBS_JOBID="1.pbs")
    job._requeue(2)
    assert "cannot requeue themselves" in caplog.text
