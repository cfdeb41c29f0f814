"""The training split's batches, epoch by epoch, in the order the sampler drew.

A tuple of tensors (the seed's data) is stacked once on the training device, so a batch is
an `index_select` per tensor (see `train.trainer._Split`). A `torch.utils.data.Dataset` is
read item by item and collated, through a DataLoader: in worker processes when the job has
CPUs beyond those that train (`train.trainer.data_workers`), else in the training process.

Either way a batch depends only on the checkpointed state, never on who read it or when:

- the DataLoader gets the epoch's batches as a plan, (seed, rows) per step from the step
  the loop stands at: the rows come from the sampler's index vector (redrawn from the
  checkpointed generator state on resume), so a resumed epoch reads the same batches;
- items are read with torch's generator seeded for that batch (from train.seed, the
  epoch, the step and the rank), so random augmentation in `__getitem__` draws the same in
  a worker as in the training process, with any number of workers, and again on resume;
  in the training process the global generator (dropout's, checkpointed) is set back
  afterwards;
- the DataLoader draws its workers' base seed from a generator of its own, never from the
  global one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate, get_worker_info

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]
"""(inputs, target) of one step, on the training device."""

PIPE_BYTES = 256 * 1024
"""Batches up to this size come back from a worker through its pipe, as numpy arrays.

A DataLoader worker hands tensors over as shared memory, and the training process then
fetches each one's file descriptor over a socket. Measured on a loaded 2-core machine, for
a batch of the signal task's 32 items that cost the training process 0.6 ms (0.3 ms per
tensor), twice what reading the items itself took; through the pipe, 0.1 ms. A large
batch (images) is cheaper as shared memory, which is what it gets."""


def batch_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The seed of torch's generator while batch `step` of `epoch` is read on `rank`."""
    digest = hashlib.sha256(f"cluster-train batch seed={seed} epoch={epoch} step={step} rank={rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _Plan:
    """The DataLoader's sampler: the (seed, rows) of each batch of the current epoch."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[int]]] = []

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Reader:
    """What the DataLoader indexes: one planned batch, its items read with torch's
    generator seeded for it, collated."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __getitem__(self, plan: tuple[int, list[int]]) -> list:
        seed, rows = plan
        worker = get_worker_info() is not None
        with torch.random.fork_rng(devices=[], enabled=not worker):  # a worker's generator is its own
            torch.default_generator.manual_seed(seed)
            parts = default_collate([self.dataset[i] for i in rows])
        if worker and sum(t.nbytes for t in parts if isinstance(t, torch.Tensor)) <= PIPE_BYTES:
            return [_to_pipe(t) for t in parts]
        return parts


def _to_pipe(value: Any) -> Any:
    """A tensor as a numpy array (pickled by value) where numpy has its dtype."""
    if isinstance(value, torch.Tensor):
        try:
            return value.numpy()
        except (TypeError, RuntimeError):  # bfloat16, say: shared memory, as torch passes it
            return value
    return value


def _from_pipe(value: Any) -> Any:
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


def _as_read(batch: Any) -> Any:
    """The DataLoader's collate_fn: the reader collated already."""
    return batch


class DatasetBatches:
    """A Dataset split's training batches: read in this process (`workers` 0), or by a
    DataLoader's worker processes, which persist across epochs until `close`."""

    def __init__(self, dataset: Any, device: torch.device, workers: int, seed: int, rank: int) -> None:
        self.device, self.seed, self.rank = device, seed, rank
        self._reader = _Reader(dataset)
        self._plan = _Plan()
        self._loader = DataLoader(
            self._reader, batch_size=None, sampler=self._plan, collate_fn=_as_read,
            num_workers=workers, persistent_workers=True, pin_memory=device.type == "cuda",
            generator=torch.Generator(),
        ) if workers > 0 else None

    def epoch(self, epoch: int, steps: range, rows: Callable[[int], torch.Tensor]) -> Iterator[Batch]:
        """The batches of `steps` of `epoch`; `rows(step)` gives a batch's sample indices."""
        plans = [(batch_seed(self.seed, epoch, step, self.rank), rows(step).tolist()) for step in steps]
        if self._loader is None:
            read: Iterator[list] = (self._reader[plan] for plan in plans)
        else:
            self._plan.batches = plans
            read = iter(self._loader)
        non_blocking = self._loader is not None and self.device.type == "cuda"  # from pinned memory
        for parts in read:
            parts = [_from_pipe(p).to(self.device, non_blocking=non_blocking) for p in parts]
            yield tuple(parts[:-1]), parts[-1]

    def close(self) -> None:
        """End the worker processes (they would otherwise go when the loader is collected)."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None)  # the persistent workers' iterator, if started
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
