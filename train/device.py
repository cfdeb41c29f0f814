"""Which device a task trains on, and what makes training on it deterministic.

The rule for GPUs: a job that the scheduler gave GPUs either trains on them or stops at
once, with one line that says why and what to do. Training such a job on the CPU instead
(a CPU-only torch wheel, a driver older than the wheel's CUDA, hidden GPUs) would take
hours to notice and is the worst outcome; `train.device: cpu` says so on purpose.

Determinism: on the CPU this model's kernels are deterministic (a stopped and resumed run
ends bitwise equal to an uninterrupted one, tested). On CUDA they are not by default
(cuDNN picks algorithms by timing, cuBLAS splits reductions by workspace, some backward
kernels use atomics), so `enforce_determinism` turns on what torch offers, and
`determinism_record` writes into summary.json what was in force.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from train.contract import SpecError
from train.distributed import World

SCHEDULER_GPU_ENV = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "PBS_GPUFILE",
                     "CUDA_VISIBLE_DEVICES")
"""Where a scheduler says that it gave the job GPUs on this node, most specific first:
Slurm's GPU indices of the step / the job and its count per node, Torque's GPU file, and
CUDA_VISIBLE_DEVICES, which Slurm (with GRES) and PBS Pro's cgroup hook set."""

SCHEDULER_JOB_ENV = ("SLURM_JOB_ID", "PBS_JOBID")
"""Set inside a Slurm or PBS job: only there do the variables above mean an allocation (a
CUDA_VISIBLE_DEVICES that a user exported on a workstation is no promise of a GPU)."""

NO_GPU_VALUES = ("", "-1", "none", "NoDevFiles")
"""Values of those variables that mean no GPU (Slurm sets CUDA_VISIBLE_DEVICES=NoDevFiles
for a job on a GPU node that asked for none; -1 and the empty string hide every GPU); a
count of 0 too, but "0" in the others is GPU 0."""

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
"""cuBLAS's deterministic workspace setting (the larger of the two that CUDA documents)."""


class GpuUnavailableError(SpecError):
    """The scheduler gave the job GPUs, but torch cannot use them here."""


def scheduler_gpus(environ: Mapping[str, str] | None = None) -> str | None:
    """How the scheduler says it gave this job GPUs on this node ("SLURM_JOB_GPUS=0"), or
    None when it gave none or this is not a scheduler's job (e.g. the local executor)."""
    environ = os.environ if environ is None else environ
    if not any(environ.get(name) for name in SCHEDULER_JOB_ENV):
        return None
    for name in SCHEDULER_GPU_ENV:
        value = environ.get(name, "").strip()
        if value not in NO_GPU_VALUES and not (name == "SLURM_GPUS_ON_NODE" and value == "0"):
            return f"{name}={value}"
    return None


def why_no_cuda() -> str:
    """Why torch cannot use CUDA here, as the end of a sentence."""
    version = torch.__version__
    if torch.version.cuda is None:
        return f"torch {version} has no CUDA (a CPU-only build)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hidden = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return (f"torch {version} (built for CUDA {torch.version.cuda}) finds no usable GPU (a driver older than "
            f"that CUDA, or the GPUs hidden{hidden})")


def resolve_device(name: str, world: World | None = None, environ: Mapping[str, str] | None = None) -> torch.device:
    """The device `train.device` names on this node, for this task.

    `auto` -> cuda when CUDA is usable; cpu when not, unless the scheduler gave the job
    GPUs (then `GpuUnavailableError`). `cuda` -> cuda:0, `cuda:N` -> that GPU, `cpu` -> cpu.

    With several tasks on a node, each task trains on one GPU (NCCL needs one per task):
    the GPU of its `LOCAL_RANK` when it sees all of the node's GPUs, or its only GPU when
    the scheduler shows each task one (`--gpus-per-task`, `--gpu-bind`, a site default).
    """
    world = world or World()
    usable = torch.cuda.is_available()
    if name == "auto":
        allocated = scheduler_gpus(environ)
        if allocated and not usable:
            raise GpuUnavailableError(
                "train.device", f"is auto and the scheduler gave this job GPUs ({allocated}), but {why_no_cuda()}: "
                "install a CUDA build of torch in the job's environment (check with cluster doctor --probe), "
                "or set train.device: cpu to train on the CPU on purpose")
        name = "cuda" if usable else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not usable:
        raise GpuUnavailableError("train.device", f"is {name} but {why_no_cuda()} (use auto or cpu)")
    count = torch.cuda.device_count()
    if world.size > 1:
        if name != "cuda":
            raise SpecError("train.device", f"is {name} but the job runs {world.size} tasks, each on a GPU of "
                            "its own: use cuda or auto")
        if count == 1:  # the scheduler shows each task its own GPU
            return torch.device("cuda", 0)
        if world.local_size > count:
            raise SpecError("resources.tasks_per_node", f"is {world.local_size} but each task sees {count} GPUs: "
                            "NCCL needs one GPU per task (give the node a GPU per task, or show each task one)")
        return torch.device("cuda", world.local_rank)
    device = torch.device("cuda:0" if name == "cuda" else name)
    if device.index >= count:
        raise SpecError("train.device", f"is {name} but this node has {count} GPU(s)")
    return device


def unallocated_gpus_note(gpus_per_node: int, environ: Mapping[str, str] | None = None) -> str | None:
    """The line to log when a spec asks for GPUs that no scheduler allocated (the local
    executor) and torch has no CUDA here: `auto` then trains on the CPU, which is
    legitimate there but must never be silent. None when there is nothing to say."""
    if not gpus_per_node or scheduler_gpus(environ) or torch.cuda.is_available():
        return None
    return (f"warning: resources.gpus_per_node is {gpus_per_node}, but no scheduler allocated GPUs here and "
            f"{why_no_cuda()}: training on the CPU (set train.device: cpu to say so, or submit to a GPU queue)")


def enforce_determinism(device: torch.device) -> None:
    """On CUDA, make the kernels deterministic, so that a resumed run can end bitwise equal
    to an uninterrupted one (on the same GPU model, torch and CUDA: fused dropout's RNG
    offsets and the chosen kernels depend on them).

    cuDNN: deterministic algorithms, no autotuning. cuBLAS: a fixed workspace (must be set
    before its first handle exists, i.e. before the first matrix product; an explicit
    setting in the environment wins). Everything else: `use_deterministic_algorithms`, with
    `warn_only`, so that an op without a deterministic kernel warns in the log instead of
    stopping a run that is otherwise fine. On the CPU nothing is changed.
    """
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def determinism_record(device: torch.device) -> dict:
    """What was in force for determinism, for summary.json."""
    record: dict = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
    }
    if device.type != "cuda":
        record["note"] = "cpu: no settings needed (this model's CPU kernels are deterministic, tested bitwise)"
        return record
    props = torch.cuda.get_device_properties(device)
    record.update({
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "gpu": props.name,
        "capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "note": "bitwise resume holds only on the same GPU model, torch and CUDA",
    })
    return record
