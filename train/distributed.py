"""Data-parallel training over the tasks of a job: the world, the process group, and the
few collectives the loop needs besides DDP's gradient all-reduce.

The scheduler starts the tasks (`srun` on Slurm); `cluster.job` exports torch's env://
variables from the scheduler's (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, through submitit's `TorchDistributedEnvironment`), and the trainer joins
the process group with `process_group`. Every rank then runs the same loop on the same
weights, each on its own share of every batch; DDP averages the gradients, so the weights
stay bitwise equal on all ranks.

What the ranks must agree on besides gradients goes through `Comm`, on the CPU (gloo,
also next to NCCL, so that these small exchanges never synchronise with a GPU stream):
whether to stop and why, whether a periodic checkpoint is due, the checkpoint to resume
from, the epoch's loss, and every rank's RNG state for the checkpoint. With one task,
`Comm` does no communication at all, and the loop behaves exactly as it did before
data parallelism existed.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)
"""How long a rank waits in the rendezvous or a collective for the others before failing.

A rank whose peers died (killed, crashed) must not keep the job's allocation until the
walltime: after this it raises, and its task ends. The loop never leaves the others
waiting that long: all ranks validate, and only rank 0's checkpoint writes and final
files separate two collectives."""

STOP_REASONS = ("SIGTERM", "SIGUSR2", "deadline")
"""Stop reasons that ranks exchange by name, in order of precedence: when different ranks
stopped for different reasons, all report the first. A SIGTERM means the scheduler is
ending the job and will not let it requeue itself, so it wins over everything."""

OTHER_STOP = "stop requested on another rank"


@dataclass(frozen=True)
class World:
    """Where this process stands among the job's tasks."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    """Rank among the tasks on this node (picks the GPU)."""
    local_size: int = 1
    """Tasks on this node (they share its CPUs)."""

    @property
    def primary(self) -> bool:
        """Rank 0: the one that writes checkpoints, metrics and the summary."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        """The world that torch's env:// variables describe (RANK, WORLD_SIZE, LOCAL_RANK,
        LOCAL_WORLD_SIZE); missing variables mean one task."""

        def number(name: str, default: int) -> int:
            value = os.environ.get(name, "").strip()
            if not value:
                return default
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"${name} is {value!r}, not an integer") from None

        size = number("WORLD_SIZE", 1)
        rank = number("RANK", 0)
        if size < 1 or not 0 <= rank < size:
            raise ValueError(f"$RANK={rank} and $WORLD_SIZE={size} do not describe a task of the job")
        local_rank = number("LOCAL_RANK", 0)
        return cls(rank, size, local_rank, max(number("LOCAL_WORLD_SIZE", 1), local_rank + 1))


def rank_seed(seed: int, rank: int, global_step: int = 0) -> int:
    """Seed of a rank's own RNG stream (dropout masks): distinct per rank and step."""
    digest = hashlib.sha256(f"cluster-train rank seed={seed} rank={rank} step={global_step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Comm:
    """The loop's collectives; with one task, each returns its input unchanged."""

    def __init__(self, world: World, group: dist.ProcessGroup | None = None) -> None:
        self.world = world
        self.group = group
        """A gloo group for the CPU tensors below (None: the default group, or one task)."""
        self._pending: tuple[dist.Work, torch.Tensor, str | None] | None = None

    @property
    def active(self) -> bool:
        return self.world.size > 1

    def agree(self, stop_reason: str | None, save_due: bool) -> tuple[str | None, bool]:
        """(stop reason, save due) as decided by all ranks together: stop if any rank wants
        to (a signal reaches the tasks at slightly different times), save if any rank's
        clock says a periodic checkpoint is due. Call it at every step boundary.

        With several ranks the answer is the previous boundary's: this boundary's wishes
        are exchanged in the background while the step computes, and read at the next
        one. A blocking exchange costs a round trip per step (1.5 ms measured on a loaded
        2-core node, where a 2-rank step of the smoke model takes about 9 ms); this costs a
        step's delay.
        Every rank reads the same exchange at the same boundary, so all still stop or
        checkpoint at the same step.
        """
        if not self.active:
            return stop_reason, save_due
        flags = torch.zeros(len(STOP_REASONS) + 2, dtype=torch.int32)
        if stop_reason is not None:
            known = stop_reason in STOP_REASONS
            flags[STOP_REASONS.index(stop_reason) if known else len(STOP_REASONS)] = 1
        flags[-1] = int(save_due)
        previous, self._pending = self._pending, (
            dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flags, stop_reason)
        if previous is None:
            return None, False
        work, wanted_flags, local_reason = previous
        work.wait()
        wanted = wanted_flags.tolist()
        agreed = next((r for r, on in zip(STOP_REASONS, wanted) if on), None)
        if agreed is None and wanted[len(STOP_REASONS)]:
            other = local_reason if local_reason is not None and local_reason not in STOP_REASONS else None
            agreed = other or OTHER_STOP
        return agreed, bool(wanted[-1])

    def settle(self) -> None:
        """Finish the exchange `agree` left in flight (before leaving the group)."""
        if self._pending is not None:
            self._pending[0].wait()
            self._pending = None

    def total(self, value: float) -> float:
        """The sum of `value` over all ranks (float64)."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, group=self.group)
        return float(tensor.item())

    def broadcast(self, value: int) -> int:
        """Rank 0's `value`, on every rank."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.int64)
        dist.broadcast(tensor, src=self._global(0), group=self.group)
        return int(tensor.item())

    def gather_states(self, state: torch.Tensor) -> torch.Tensor:
        """Every rank's RNG state (a uint8 tensor of the same size on every rank), stacked
        in rank order on the CPU."""
        state = state.detach().to("cpu", torch.uint8).contiguous()
        if not self.active:
            return state[None]
        parts = [torch.empty_like(state) for _ in range(self.world.size)]
        dist.all_gather(parts, state, group=self.group)
        return torch.stack(parts)

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.active:
            self.settle()
            dist.barrier(group=self.group)

    def _global(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[Comm]:
    """Join the job's other tasks (env:// rendezvous at MASTER_ADDR:MASTER_PORT), yield
    their `Comm`, and leave the group afterwards.

    gloo on the CPU, NCCL on GPUs (plus a gloo group for `Comm`'s CPU tensors). On a
    normal exit all ranks meet in a barrier first, so none leaves while another still
    writes its files; after an error the group is torn down without waiting.
    """
    if world.size == 1:
        yield Comm(world)
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)  # NCCL and DDP use the current device
        # A collective that a dead or stuck peer never joins must raise in this process
        # after COLLECTIVE_TIMEOUT, so that the run is recorded failed: by default NCCL's
        # watchdog thread aborts the process instead (SIGABRT, nothing recorded). An
        # explicit setting in the job's environment wins.
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")  # abort the communicators only
    # No device_id: binding the default group to a GPU (torch >= 2.3 only) makes the gloo
    # group below inherit it, and its barrier then allocates on the GPU.
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=COLLECTIVE_TIMEOUT)
    try:
        group = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT) if backend == "nccl" else None
        comm = Comm(world, group)
        yield comm
        comm.barrier()
    finally:
        with contextlib.suppress(Exception):  # a peer that died can make the teardown fail too
            dist.destroy_process_group()
