"""Device choice without a GPU: what `train.device` resolves to, whether the scheduler gave
the job GPUs, and the determinism settings. CUDA's availability and GPU count are made up
here (monkeypatch), since this torch is a CPU build; tests/gpu/device_check.py checks the
same on a real GPU."""

from __future__ import annotations

import pytest
import torch

from train import device as devices
from train.contract import SpecError
from train.distributed import World

IN_SLURM_JOB = {"SLURM_JOB_ID": "7"}


def fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int, build: str | None = "12.1") -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.version, "cuda", build)


@pytest.mark.parametrize("environ, expected", [
    ({**IN_SLURM_JOB, "SLURM_GPUS_ON_NODE": "1"}, "SLURM_GPUS_ON_NODE=1"),
    ({**IN_SLURM_JOB, "SLURM_JOB_GPUS": "0,1", "SLURM_GPUS_ON_NODE": "2"}, "SLURM_JOB_GPUS=0,1"),
    ({"PBS_JOBID": "12.server", "CUDA_VISIBLE_DEVICES": "GPU-5f3c"}, "CUDA_VISIBLE_DEVICES=GPU-5f3c"),
    ({"PBS_JOBID": "12.server", "PBS_GPUFILE": "/var/spool/torque/aux/12.server-gpu"},
     "PBS_GPUFILE=/var/spool/torque/aux/12.server-gpu"),
    ({**IN_SLURM_JOB, "SLURM_GPUS_ON_NODE": "0", "CUDA_VISIBLE_DEVICES": "NoDevFiles"}, None),  # a CPU job
    ({**IN_SLURM_JOB, "CUDA_VISIBLE_DEVICES": "0"}, "CUDA_VISIBLE_DEVICES=0"),  # GPU 0, not a count
    ({**IN_SLURM_JOB}, None),
    ({"CUDA_VISIBLE_DEVICES": "0"}, None),  # a workstation's setting, no scheduler: no promise of a GPU
])
def test_scheduler_gpus(environ, expected):
    assert devices.scheduler_gpus(environ) == expected


def test_auto_with_allocated_gpus_but_no_cuda_is_refused(monkeypatch):
    fake_cuda(monkeypatch, 0, build=None)
    with pytest.raises(devices.GpuUnavailableError) as err:
        devices.resolve_device("auto", environ={**IN_SLURM_JOB, "SLURM_GPUS_ON_NODE": "1"})
    message = str(err.value)
    assert message == (f"train.device: is auto and the scheduler gave this job GPUs (SLURM_GPUS_ON_NODE=1), but "
                       f"torch {torch.__version__} has no CUDA (a CPU-only build): install a CUDA build of torch "
                       "in the job's environment (check with cluster doctor --probe), or set train.device: cpu "
                       "to train on the CPU on purpose")
    assert isinstance(err.value, SpecError) and "\n" not in message


def test_a_cuda_build_that_finds_no_gpu_says_so(monkeypatch):
    fake_cuda(monkeypatch, 0, build="12.1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(devices.GpuUnavailableError, match=r"\(built for CUDA 12.1\) finds no usable GPU \(a driver "
                       r"older than that CUDA, or the GPUs hidden, CUDA_VISIBLE_DEVICES=''\)"):
        devices.resolve_device("auto", environ={**IN_SLURM_JOB, "SLURM_JOB_GPUS": "0"})


def test_cpu_is_honoured_even_with_allocated_gpus(monkeypatch):
    fake_cuda(monkeypatch, 0, build=None)
    assert devices.resolve_device("cpu", environ={**IN_SLURM_JOB, "SLURM_GPUS_ON_NODE": "1"}) == torch.device("cpu")


def test_auto_without_an_allocation_trains_on_the_cpu_and_says_so(monkeypatch):
    fake_cuda(monkeypatch, 0, build=None)
    assert devices.resolve_device("auto", environ={}) == torch.device("cpu")
    note = devices.unallocated_gpus_note(1, environ={})
    assert note == (f"warning: resources.gpus_per_node is 1, but no scheduler allocated GPUs here and torch "
                    f"{torch.__version__} has no CUDA (a CPU-only build): training on the CPU (set train.device: "
                    "cpu to say so, or submit to a GPU queue)")
    assert devices.unallocated_gpus_note(0, environ={}) is None  # nothing asked for
    assert devices.unallocated_gpus_note(1, environ={**IN_SLURM_JOB, "SLURM_GPUS_ON_NODE": "1"}) is None  # refused instead


def test_explicit_cuda_without_cuda_is_refused(monkeypatch):
    fake_cuda(monkeypatch, 0, build=None)
    with pytest.raises(devices.GpuUnavailableError, match="train.device: is cuda:1 but torch .* has no CUDA"):
        devices.resolve_device("cuda:1", environ={})


@pytest.mark.parametrize("visible, local_rank, local_size, expected", [
    (4, 2, 4, "cuda:2"),  # each task sees the node's GPUs: the one of its local rank
    (1, 3, 4, "cuda:0"),  # each task sees one GPU of its own (--gpus-per-task, --gpu-bind)
    (8, 1, 2, "cuda:1"),  # more GPUs than tasks: the extra ones stay idle
])
def test_one_gpu_per_task(monkeypatch, visible, local_rank, local_size, expected):
    fake_cuda(monkeypatch, visible)
    world = World(rank=local_rank, size=local_size * 2, local_rank=local_rank, local_size=local_size)
    assert devices.resolve_device("auto", world, environ={}) == torch.device(expected)


def test_tasks_sharing_gpus_are_refused(monkeypatch):
    fake_cuda(monkeypatch, 2)
    world = World(rank=0, size=4, local_rank=0, local_size=4)
    with pytest.raises(SpecError, match=r"resources.tasks_per_node: is 4 but each task sees 2 GPUs: NCCL needs one "
                       "GPU per task"):
        devices.resolve_device("cuda", world, environ={})
    with pytest.raises(SpecError, match="train.device: is cuda:1 but the job runs 4 tasks"):
        devices.resolve_device("cuda:1", world, environ={})


def test_single_task_gpu_index(monkeypatch):
    fake_cuda(monkeypatch, 2)
    assert devices.resolve_device("cuda", environ={}) == torch.device("cuda:0")
    assert devices.resolve_device("cuda:1", environ={}) == torch.device("cuda:1")
    with pytest.raises(SpecError, match="train.device: is cuda:2 but this node has 2 GPU"):
        devices.resolve_device("cuda:2", environ={})


@pytest.fixture
def restore_determinism(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


def test_determinism_is_enforced_on_cuda_only(restore_determinism):
    import os

    devices.enforce_determinism(torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    record = devices.determinism_record(torch.device("cpu"))
    assert record["deterministic_algorithms"] is False and record["note"].startswith("cpu: no settings needed")

    devices.enforce_determinism(torch.device("cuda:0"))  # only sets flags: no CUDA needed
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_an_explicit_cublas_setting_wins(restore_determinism, monkeypatch):
    import os

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    devices.enforce_determinism(torch.device("cuda:0"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
