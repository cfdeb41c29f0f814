"""The training loop, and the small API that job-submission code calls.

    trainer = Trainer(config, run_dir)       # deadline: absolute unix time, or $CLUSTER_DEADLINE
    trainer.install_signal_handlers()        # SIGUSR2 / SIGTERM -> request_stop()
    result = trainer.run()                   # resumes from run_dir's newest checkpoint if any
    result.status                            # "completed" (summary in result.summary) or "stopped"
    Trainer.resume_point(run_dir)            # where a new attempt would resume (no torch needed)

`run` reads top to bottom: setup, resume-or-start, the epoch loop, the summary. The loop
stops or checkpoints only at a step boundary, never inside an optimizer step. A stopped run
leaves a checkpoint from which a new `run` continues exactly: on CPU its final weights are
bitwise those of a run that was never interrupted (dropout included), because the
checkpoint holds the model, the optimizer state, the global RNG state that dropout draws
from, the sampler generator's state as of the epoch start and the position in the epoch.

Data parallel (`Trainer(..., distributed=True)` in each task of a multi-task job, see
`train.distributed`): every rank trains the same weights on its slice of every batch,
wrapped in DDP; the ranks agree at every step boundary whether to stop or checkpoint, so
all stop at the same step. Rank 0 writes the checkpoints (with every rank's RNG state),
metrics, progress and summary; every rank resumes from the checkpoint rank 0 picked.
Such a run resumes exactly too, when it resumes with the same number of tasks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from train import checkpoint, runfiles
from train.batches import Batch, DatasetBatches
from train.device import determinism_record, enforce_determinism, resolve_device
from train.testhooks import pause_at
from train.contract import DEADLINE_ENV, EXIT_REQUEUE, RunLocked, SpecError, signals
from train.contract.config import TrainConfig
from train.contract.task import materialize_options, options_to_dict, resolve_task
from train.distributed import Comm, World, process_group, rank_seed
from train.data import EpochSampler
from train.model import weights_sha256
from train.optim import Precision, Stepper, learning_rate, load_optimizer_state, make_optimizer
from train.progress import Progress
from train.tensorboard import Board



@dataclass(frozen=True)
class RunResult:
    """How `Trainer.run` ended."""

    status: str
    """"completed" (all epochs done; summary.json written) or "stopped" (checkpointed
    early on request or before the deadline; run again to continue)."""

    summary: dict | None = None
    """The contents of summary.json, for a completed run."""

    reason: str | None = None
    """Why a stopped run stopped: the signal's name (e.g. "SIGUSR2"), "deadline", or the
    `request_stop` caller's reason."""

    checkpoint: str | None = None
    """Path of the checkpoint to resume from (stopped) or of final.pt (completed)."""


@dataclass
class LoopState:
    """Where the loop is and what it has accumulated; saved in every checkpoint."""

    epoch: int = 0
    """Completed epochs (= 0-based index of the epoch in progress)."""
    step_in_epoch: int = 0
    """Optimizer steps done in the epoch in progress."""
    global_step: int = 0
    samples: int = 0
    """Training samples consumed over all attempts."""
    epoch_loss_sum: float = 0.0
    """Sum of the batch losses of the epoch in progress (for its mean train_loss)."""
    epoch_seconds: float = 0.0
    """Time spent in the epoch in progress by earlier attempts."""
    train_seconds: float = 0.0
    """Time spent in the epoch loop over all attempts (setup excluded)."""
    validation_seconds: float = 0.0
    """Time spent in the end-of-epoch validation passes, over all attempts."""
    checkpoint_seconds: float = 0.0
    """Time the loop was held up by checkpoints (serialising the state, waiting for a write)."""
    checkpoint_write_seconds: float = 0.0
    """Time spent writing checkpoints, on the writer thread, overlapping training."""
    wall_seconds: float = 0.0
    """Time spent in `run` (setup included) over all attempts, up to the last checkpoint."""
    best_value: float | None = None
    """The best value so far of the task's `best_metric` (val_auc for the seed)."""
    best_epoch: int | None = None
    last_metrics: dict | None = None
    resumes: int = 0


ALLOCATED_CPUS_ENV = ("SLURM_CPUS_PER_TASK", "NCPUS", "PBS_NUM_PPN")
"""Where Slurm, PBS Pro and Torque say how many CPUs the job (task) was given: Slurm's
counts one task's CPUs, the PBS ones all CPUs of the node's chunk."""


AUTOMATIC_MAX_THREADS = 4
"""Most threads chosen without a scheduler allocation: this model's operations are small,
so more threads add little, and a machine without an allocation is usually shared."""


def configure_threads(tasks_on_node: int = 1, threads: int | None = None) -> int:
    """Set torch's intra-op threads: `threads` (train.threads) if given, else $OMP_NUM_THREADS
    if set, else as many as this process can have to itself.

    torch defaults to the machine's core count, and more threads than free cores are
    ruinous: OpenMP threads wait for each other at every operation, and when one of them
    is descheduled the step waits for it. Measured on a 2-core machine beside one busy
    process (tests/benchmarks/bench_train.py --threads-only), 2 threads trained at a few
    hundred samples/s, 1 thread at 5,000 to 11,000; with the machine to itself, 2 threads
    gained about 20%. So, automatically:

    - with a scheduler allocation (Slurm's per task, PBS's per node), as many threads as
      it gives this task, capped by the CPUs in the process's affinity: the job has those
      CPUs to itself. Without that cap, a node whose scheduler does not pin the job's CPU
      affinity (Slurm with task/none, many PBS set-ups) would get one thread per core of
      the node;
    - without one (a workstation, a login node, CI), the CPUs the 1-minute load average
      leaves idle (rounded down, after a quarter CPU of slack for background noise), at
      most `AUTOMATIC_MAX_THREADS`, at least 1.

    `tasks_on_node` data-parallel tasks share the node's CPUs: a per-node count (the
    affinity, PBS's, the idle CPUs) is divided among them, Slurm's per-task one is not.
    """
    if threads is None and "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    torch.set_num_threads(threads or automatic_threads(tasks_on_node))
    return torch.get_num_threads()


def automatic_threads(tasks_on_node: int = 1) -> int:
    """The thread count `configure_threads` chooses when neither train.threads nor
    $OMP_NUM_THREADS says."""
    allocated = allocated_cpus(tasks_on_node)
    return allocated if allocated is not None else min(AUTOMATIC_MAX_THREADS, idle_cpus(tasks_on_node))


def _affinity_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def allocated_cpus(tasks_on_node: int = 1) -> int | None:
    """The CPUs the scheduler allocated to this task (see `configure_threads`), capped by
    the process's affinity; None without an allocation."""
    for name in ALLOCATED_CPUS_ENV:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            per_task = int(value) if name == "SLURM_CPUS_PER_TASK" else int(value) // tasks_on_node
            return max(1, min(_affinity_cpus(), per_task))
    return None


def idle_cpus(tasks_on_node: int = 1) -> int:
    """This task's share of the CPUs the 1-minute load average leaves idle (after a quarter
    CPU of slack for background noise), at least 1."""
    cpus = _affinity_cpus()
    try:
        idle = cpus - os.getloadavg()[0]
    except OSError:  # no load average to read
        idle = cpus
    return max(1, min(cpus // tasks_on_node, int((idle + 0.25) / tasks_on_node)))


MAX_DATA_WORKERS = 8
"""Most DataLoader worker processes per task: beyond a few, reading keeps up anyway."""


def data_workers(threads: int, device: torch.device, tasks_on_node: int = 1, task: Any = None) -> int:
    """DataLoader worker processes that read a Dataset task's training batches ahead: the
    CPUs this task has beyond those its training keeps busy (torch's `threads` on the CPU,
    the training process's own on a GPU), at most `MAX_DATA_WORKERS`; 0 reads them in the
    training process. The CPUs are the allocation's, or without one the idle ones (as for
    the threads: a machine without an allocation is usually shared, and a worker there
    competes with the training for the same cores). A task whose Dataset cannot be read
    in a forked process says `data_workers = 0`.

    Which process reads a batch changes nothing in it (`train.batches`): a run may resume
    with another count, and ends bitwise as it would have.
    """
    asked = getattr(task, "data_workers", None)
    if asked is not None:
        return max(0, int(asked))
    allocated = allocated_cpus(tasks_on_node)
    cpus = allocated if allocated is not None else idle_cpus(tasks_on_node)
    return max(0, min(MAX_DATA_WORKERS, cpus - (threads if device.type == "cpu" else 1)))


@contextlib.contextmanager
def small_conv_kernels(device: torch.device) -> Iterator[None]:
    """On the CPU, run the 1-channel 3x3 convolutions on torch's plain im2col kernel.

    oneDNN (mkldnn) and NNPACK are built for wide convolutions; on a 1-channel 10x18 image
    their fixed cost dominates: measured here, forward + backward of the two convolutions
    took about 340 us per batch of 32 with oneDNN and 70 us without, a fifth of the whole
    step. Matrix products (the Linear layers) do not go through either library, so they
    are unaffected. The previous settings are restored afterwards.
    """
    if device.type != "cpu":
        yield
        return
    saved_mkldnn = torch.backends.mkldnn.enabled
    saved_nnpack = torch.backends.nnpack.set_flags(False)[0]
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = saved_mkldnn
        torch.backends.nnpack.set_flags(saved_nnpack)


def _standard_strides(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, or a copy of it, with the strides of a new tensor of its shape.

    A size-1 dimension's stride is arbitrary: numpy gives `image[:, None]` a stride of 0
    there, and torch then counts an (N, 1, H, W) tensor as channels-last as well as
    contiguous; indexing keeps that layout, and the CPU's convolutions take a slower path
    for it (measured: 200 us instead of 50 us for the seed's first convolution of a batch,
    its backward about as much again), which the tutorial's per-sample collation avoided.
    """
    strides, size = [], 1
    for length in reversed(tensor.shape):
        strides.insert(0, size)
        size *= length
    if tensor.stride() == tuple(strides):
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


class _Split:
    """A training or validation split as the task gave it, cut into batches by index.

    A tuple of tensors (inputs..., target) is stacked once on the training device: a batch
    is then one indexing per tensor, with no per-sample Python, no collation and no
    host-to-device copy. A Dataset is read item by item on the CPU and each batch
    collated (`default_collate`) and moved; the training split's through a DataLoader
    (`train.batches`), whose workers read ahead where the job has CPUs to spare.
    """

    def __init__(self, data: Any, device: torch.device, what: str) -> None:
        self.device = device
        if isinstance(data, (tuple, list)):
            if len(data) < 2 or not all(isinstance(t, torch.Tensor) for t in data):
                raise TypeError(f"the task's {what} split must be a tuple of tensors (inputs..., target) or a Dataset")
            self.tensors: tuple[torch.Tensor, ...] | None = tuple(_standard_strides(t.to(device)) for t in data)
            self.dataset = None
            self.length = len(data[-1])
        else:
            self.tensors, self.dataset, self.length = None, data, len(data)
        self.loader: DatasetBatches | None = None

    def __len__(self) -> int:
        return self.length

    def read_ahead(self, workers: int, seed: int, rank: int) -> None:
        """Read a Dataset's training batches through a DataLoader with `workers` worker
        processes (0: in this process); a tuple of tensors needs none."""
        if self.dataset is not None:
            self.loader = DatasetBatches(self.dataset, self.device, workers, seed, rank)

    def epoch(self, epoch: int, steps: range, rows: Callable[[int], torch.Tensor]) -> Iterator[Batch]:
        """The batches of `steps` of `epoch`, in order; `rows(step)` gives a batch's indices
        (from `indices`)."""
        if self.loader is not None:
            return self.loader.epoch(epoch, steps, rows)
        return (self.batch(rows(step)) for step in steps)

    def close(self) -> None:
        """End the DataLoader's worker processes, if any."""
        if self.loader is not None:
            self.loader.close()

    def indices(self, index: torch.Tensor) -> torch.Tensor:
        """An epoch's index vector where `batch` reads it (on the device for tensors)."""
        return index.to(self.device) if self.tensors is not None else index

    def batch(self, index: torch.Tensor | slice) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(inputs, target) of the samples at `index` (a tensor of indices, or a slice)."""
        if self.tensors is not None:
            # index_select copies whole rows; `t[index]` (advanced indexing) took twice as long.
            parts = tuple(t[index] if isinstance(index, slice) else t.index_select(0, index) for t in self.tensors)
        else:
            from torch.utils.data import default_collate

            rows = range(self.length)[index] if isinstance(index, slice) else index.tolist()
            parts = tuple(t.to(self.device) for t in default_collate([self.dataset[i] for i in rows]))
        return parts[:-1], parts[-1]


@torch.inference_mode()
def evaluate(task: Any, model: nn.Module, val: _Split, precision: Precision) -> dict[str, Any]:
    """val_loss (the task's mean loss) and the task's metrics over the validation split."""
    model.eval()
    chunk = 4096  # bounds memory for large validation sets
    outputs, targets = [], []
    for i in range(0, len(val), chunk):
        inputs, target = val.batch(slice(i, i + chunk))
        with precision.autocast():
            outputs.append(model(*inputs))
        targets.append(target)
    model.train()
    output = torch.cat(outputs).float() if precision.name != "fp32" else torch.cat(outputs)
    target = torch.cat(targets)
    return {"val_loss": task.loss(output, target, "mean").item(), **task.metrics(output, target)}


_SHORT_NAMES = {"val_accuracy": "val_acc", "val_balanced_accuracy": "val_bal_acc"}


def _shown(key: str, value: Any) -> str:
    """A metric for the progress line: `val_loss 0.1234`, `val_auc n/a`."""
    name = _SHORT_NAMES.get(key, key)
    if value is None:
        return f"{name} n/a"
    return f"{name} {value:.4f}" if key.endswith("loss") else f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


@dataclass
class _Parts:
    """What setup builds for an attempt: the device, data, model and optimizer."""

    device: torch.device
    comm: Comm
    threads: int
    task: Any
    """The task (see `train.tasks`): model, data, loss and metrics come from it."""
    train: _Split
    val: _Split
    sampler: EpochSampler
    model: nn.Module
    """The plain model: validation, checkpoints and the fingerprint use it."""
    net: nn.Module
    """What the steps call: the model, or with several ranks DDP's wrapper of it."""
    optimizer: torch.optim.Optimizer
    stepper: Stepper
    """What the steps call for zero_grad and step: the optimizer's, with less Python around them."""
    precision: Precision
    identity: dict
    """What the checkpoints' meaning depends on (see `Trainer._identity`)."""
    progress: Progress
    board: Board | None = None
    """TensorBoard's writer (rank 0, with train.tensorboard), opened once the resume point is known."""

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    @property
    def train_samples(self) -> int:
        return len(self.train)

    @property
    def val_samples(self) -> int:
        return len(self.val)


@dataclass
class _Attempt:
    """The loop's state in this attempt: the checkpointed `LoopState`, plus this attempt's
    clocks, checkpoint writer and what was saved last."""

    loop: LoopState
    writer: checkpoint.CheckpointWriter
    epoch_loss_sum: torch.Tensor
    """This rank's sum of the epoch's batch losses so far (float64, on the device)."""
    run_started: float
    """perf_counter() at the start of `run` (setup included), and the loop's start."""
    loop_started: float
    last_save_time: float
    last_check: float
    """perf_counter() at the last step boundary: the longest gap sets the deadline margin."""
    resume_sampler_state: torch.Tensor | None = None
    """The sampler's state saved in the checkpoint, until the epoch it belongs to starts."""
    sampler_state: torch.Tensor | None = None
    """The sampler generator's state as of the epoch start: saved in checkpoints."""
    last_saved_step: int | None = None
    last_saved_path: str | None = None
    epoch_started: float = 0.0
    """perf_counter() at the epoch's start, moved back by the time earlier attempts spent in it."""
    world_size: int = 1
    start_step: int = dataclasses.field(init=False)
    train_seconds_before: float = dataclasses.field(init=False)
    """The LoopState counters as of the resumed checkpoint (0 for a fresh start)."""
    wall_seconds_before: float = dataclasses.field(init=False)
    write_seconds_before: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.start_step = self.loop.global_step
        self.train_seconds_before = self.loop.train_seconds
        self.wall_seconds_before = self.loop.wall_seconds
        self.write_seconds_before = self.loop.checkpoint_write_seconds

    def saved(self, path: str) -> None:
        """Record a checkpoint of the current step (written, or being written, at `path`)."""
        self.last_saved_path = path
        self.last_saved_step = self.loop.global_step
        self.last_save_time = time.perf_counter()

    def running_loss(self) -> float:
        """Mean batch loss of the epoch so far (with several ranks, rank 0's share scaled
        up: an estimate, for the progress line)."""
        return float(self.epoch_loss_sum) * self.world_size / (self.loop.step_in_epoch or 1)


class Trainer:
    """Trains the model of a `TrainConfig` in a run directory, resumably."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        deadline: float | None = None,
        stop_at_step: int | None = None,
        stream: TextIO | None = None,
        distributed: bool = False,
    ) -> None:
        """
        deadline: absolute unix time by which the process must have exited (the job's
            walltime end). None reads $CLUSTER_DEADLINE; unset means no deadline.
        stop_at_step: test hook: behave as if a stop were requested when this many
            optimizer steps are done (0 = before the first). Never set it in a real job.
        stream: where progress goes (stdout by default).
        distributed: train data-parallel with the job's other tasks, as the env://
            variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
            MASTER_PORT) describe: `cluster.job` exports them from the scheduler's. False:
            one process, whatever the environment says.
        """
        self.config = config
        self.run_dir = Path(run_dir)
        self.world = World.from_env() if distributed else World()
        if deadline is None and os.environ.get(DEADLINE_ENV, "").strip():
            try:
                deadline = float(os.environ[DEADLINE_ENV])
            except ValueError:
                print(f"warning: ignoring {DEADLINE_ENV}={os.environ[DEADLINE_ENV]!r} (not unix seconds)", file=sys.stderr)
        self.deadline = deadline
        self.stop_at_step = stop_at_step
        self.stream = stream or sys.stdout
        self._stop_reason: str | None = None
        # Measured while running, for the deadline margin.
        self._longest_step_gap = 0.0
        self._writer: checkpoint.CheckpointWriter | None = None

    # --- the API for the submission code ------------------------------------------------

    def request_stop(self, reason: str = "signal") -> None:
        """Ask the loop to checkpoint at the next step boundary and return "stopped".

        Safe to call from a signal handler or another thread: it only sets a flag.
        """
        if self._stop_reason is None:
            self._stop_reason = reason

    def install_signal_handlers(self) -> None:
        """Make SIGUSR2 (Slurm's `--signal`, submitit's timeout warning) and SIGTERM (sent
        at the time limit, on preemption and by scancel/qdel) request a stop.

        Must be called from the main thread.
        """

        def handler(signum: int, frame: Any) -> None:
            self.request_stop(signal.Signals(signum).name)

        for sig in (signal.SIGUSR2, signal.SIGTERM):
            signal.signal(sig, handler)
        signals.redeliver()  # one that came before (the job's bootstrap recorded it)

    def _restore_rng(self, rng: dict, device: torch.device, global_step: int) -> None:
        """Put back the RNG streams that dropout draws from, as the checkpoint saved them."""
        world = self.world
        states = rng.get("torch_ranks")
        saved_ranks = len(states) if states is not None else 1
        if saved_ranks != world.size and world.primary:
            print(f"warning: the checkpoint was written by {saved_ranks} task(s), this run has {world.size}: "
                  "it continues, but not bitwise as an uninterrupted run would (dropout masks, batch shares)",
                  file=sys.stderr)
        saved_on = "cpu" if rng.get("cuda") is None else "cuda"
        if saved_on != device.type:
            # Dropout draws from the device's generator: the saved stream is the other
            # device's, and the new one's state at setup would replay the first masks.
            if world.primary:
                print(f"warning: the checkpoint was written on {saved_on}, this run trains on {device.type}: it "
                      "continues with fresh dropout masks (seeded by step), not bitwise as an uninterrupted run "
                      "would", file=sys.stderr)
            torch.manual_seed(rank_seed(self.config.seed, world.rank, global_step))
        elif world.size == 1:
            torch.set_rng_state(rng["torch"])
            if device.type == "cuda" and rng.get("cuda") is not None:
                torch.cuda.set_rng_state(rng["cuda"], device)
        elif saved_ranks == world.size:
            # A copy: set_rng_state crashes (segfault, torch 2.13) on a row of the stack,
            # a view that does not start at its storage's beginning.
            torch.set_rng_state(states[world.rank].clone())
            if device.type == "cuda" and rng.get("cuda_ranks") is not None:
                torch.cuda.set_rng_state(rng["cuda_ranks"][world.rank].clone(), device)
        else:
            torch.manual_seed(rank_seed(self.config.seed, world.rank, global_step))

    @staticmethod
    def resume_point(run_dir: str | Path) -> dict | None:
        """The newest intact checkpoint of `run_dir` as {"epoch", "step_in_epoch",
        "global_step", "path", ...}, or None. Same as `train.runfiles.resume_point`, which
        login-node code can import without torch."""
        return runfiles.resume_point(run_dir)

    def deadline_margin(self) -> float:
        """Seconds before the deadline at which to checkpoint and exit.

        From the last stop check, the loop may still run one step, and at an epoch end a
        validation pass and a checkpoint, before it checks again; then it writes the stop
        checkpoint. So: twice the longest measured gap between two stop checks (which
        includes any epoch-end work) plus three times the longest checkpoint write, never
        less than `checkpoint.deadline_margin_seconds` (which also covers what is not yet
        measured at the start and the process exit).
        """
        longest_checkpoint = self._writer.longest_write if self._writer else 0.0
        measured = 2 * self._longest_step_gap + 3 * longest_checkpoint
        return max(self.config.checkpoint.deadline_margin_seconds, measured)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Train to `config.epochs`, resuming from the newest intact checkpoint if any.

        Raises `RunLocked` at once, having written nothing, when another trainer is at work
        in the run directory.
        """
        run_started = time.perf_counter()
        # Before anything is written: a link or FIFO among the run's files is refused (RunFileError).
        runfiles.check_layout(self.run_dir)
        device = resolve_device(self.config.device, self.world)
        enforce_determinism(device)
        if self.config.batch_size < self.world.size:
            raise SpecError("train.batch_size", f"is {self.config.batch_size} but the job runs {self.world.size} tasks, "
                            "which share every batch: use at least one sample per task")
        with small_conv_kernels(device), process_group(self.world, device) as comm, self._run_lock(comm):
            parts = self._setup(device, comm)
            try:
                attempt = self._resume(parts, run_started)
                for epoch in range(attempt.loop.epoch, self.config.epochs):
                    stopped = self._train_epoch(parts, attempt, epoch)
                    if stopped is not None:
                        return stopped
                    self._end_epoch(parts, attempt, epoch)
                return self._finish(parts, attempt)
            finally:
                parts.train.close()  # data workers end while this trainer still holds the run

    @contextlib.contextmanager
    def _run_lock(self, comm: Comm) -> Iterator[None]:
        """Rank 0 holds the run directory's trainer lock for the whole run; when another
        trainer holds it, every rank raises `RunLocked` (the others learn it from rank 0
        rather than waiting for it in a collective)."""
        with contextlib.ExitStack() as stack:
            refused: RunLocked | None = None
            if self.world.primary:
                try:
                    stack.enter_context(runfiles.trainer_lock(self.run_dir, warn=_warn))
                except RunLocked as err:
                    refused = err
            holder = comm.broadcast(0 if refused is None else (refused.pid or -1))
            if refused is not None:
                raise refused
            if holder:
                raise RunLocked(self.run_dir, holder if holder > 0 else None)
            yield

    # --- setup: threads, data, model, optimizer ------------------------------------------

    def _setup(self, device: torch.device, comm: Comm) -> _Parts:
        cfg, world = self.config, self.world
        pause_at("setup")
        ckpt_dir = runfiles.folder(self.run_dir, runfiles.CHECKPOINT_DIR)
        if world.primary:  # rank 0 writes every file of the run; the others only train
            runfiles.remove_stray_temporaries(ckpt_dir)
            checkpoint.remove_orphans(self.run_dir)
            runfiles.remove_stray_temporaries(
                self.run_dir, (runfiles.METRICS_FILE, runfiles.SUMMARY_FILE, runfiles.PROGRESS_FILE))

        threads = configure_threads(world.local_size, cfg.threads)
        task_class = resolve_task(cfg.task)
        task = task_class(materialize_options(task_class, cfg.options), cfg)
        torch.manual_seed(cfg.seed)  # for data a task draws with torch (the seed's uses numpy)
        train_data, val_data = task.data()
        train, val = _Split(train_data, device, "training"), _Split(val_data, device, "validation")
        train.read_ahead(data_workers(threads, device, world.local_size, task), cfg.seed, world.rank)
        weights = task.sample_weights(train_data)
        sampler = EpochSampler.per_sample(None if weights is None else np.asarray(weights, dtype=np.float64),
                                          len(train), cfg.seed, cfg.batch_size)

        torch.manual_seed(cfg.seed)  # the model's initial weights, then dropout
        model = task.model().to(device)
        if world.size > 1:
            # Same initial weights on every rank, but each draws its own dropout masks.
            torch.manual_seed(rank_seed(cfg.seed, world.rank))
        optimizer = make_optimizer(model, cfg)
        progress = Progress(self.run_dir, cfg.epochs, sampler.steps_per_epoch, self.stream, primary=world.primary)
        return _Parts(
            device=device, comm=comm, threads=threads, task=task, train=train, val=val, sampler=sampler,
            model=model, net=model, optimizer=optimizer, stepper=Stepper(optimizer), precision=Precision(cfg.precision, device),
            identity=self._identity(task), progress=progress,
        )

    def _identity(self, task: Any) -> dict:
        """What a checkpoint's meaning depends on; resuming with any of it changed is refused.

        The seed task's own (its settings, model shape, data hash: the same as before tasks
        existed, so older checkpoints still resume); other tasks' add the task and options.
        """
        cfg = self.config
        if cfg.is_default_task:
            return task.identity()
        return {"train": {"seed": cfg.seed, "batch_size": cfg.batch_size, "task": cfg.task,
                          "options": options_to_dict(cfg.options)}, **task.identity()}

    # --- resume or start -------------------------------------------------------------------

    def _resume(self, parts: _Parts, run_started: float) -> _Attempt:
        """Continue from the newest intact checkpoint if there is one: model, optimizer,
        RNG streams and position; then start this attempt's clocks and writer."""
        cfg, world, say = self.config, self.world, parts.progress.message
        loop = LoopState()
        resume_sampler_state = None
        loaded = self._load_checkpoint(parts.comm)
        if loaded is not None:
            state, info = loaded
            pause_at("resume")
            checkpoint.check_compatible(state["identity"], parts.identity, info["path"])
            parts.model.load_state_dict(state["model"])
            load_optimizer_state(parts.optimizer, state["optimizer"])
            parts.precision.load_state_dict(state.get("scaler"))
            resume_sampler_state = state["sampler_state"]
            saved_loop = dict(state["loop"])
            if "best_val_auc" in saved_loop:  # written before tasks chose their best metric
                saved_loop["best_value"] = saved_loop.pop("best_val_auc")
            loop = LoopState(**saved_loop)
            self._restore_rng(state["rng"], parts.device, loop.global_step)
            loop.resumes += 1
            if loop.epoch > cfg.epochs or (loop.epoch == cfg.epochs and loop.step_in_epoch > 0):
                raise SpecError("train.epochs", f"is {cfg.epochs} but this run has already trained "
                                f"{loop.epoch} epochs (raise it to continue the run, or start a new one)")
            say(f"resumed from {Path(info['path']).name}: epoch {loop.epoch + 1}, step {loop.step_in_epoch}/"
                f"{parts.steps_per_epoch}, global step {loop.global_step}")
        if world.primary:
            self._reconcile_metrics(loop)
            if loaded is not None and loop.best_epoch == loop.epoch and loop.step_in_epoch == 0:
                # The best epoch's own checkpoint: a kill may have come between its write and
                # the link of best.pt to it.
                runfiles.link_atomic(loaded[1]["path"], self.run_dir / runfiles.CHECKPOINT_DIR / runfiles.BEST_CHECKPOINT)
        if world.primary and cfg.tensorboard:
            parts.board = Board(self.run_dir, loop.global_step if loaded is not None else None)
        ranks = f", rank {world.rank} of {world.size}" if world.size > 1 else ""
        say(f"training on {parts.device} ({parts.threads} threads{ranks}): {parts.train_samples} train / "
            f"{parts.val_samples} validation samples, {parts.steps_per_epoch} steps per epoch, "
            f"epochs {loop.epoch + 1}-{cfg.epochs}")
        if world.size > 1:
            # DDP averages the gradients over the ranks after every backward; the plain
            # model stays for validation, checkpoints and the fingerprint.
            device_ids = [parts.device.index] if parts.device.type == "cuda" else None
            parts.net = nn.parallel.DistributedDataParallel(parts.model, device_ids=device_ids)

        started = time.perf_counter()
        attempt = _Attempt(
            loop=loop,
            writer=checkpoint.CheckpointWriter(self.run_dir, cfg.checkpoint.keep),
            # With several ranks, each sums its share of the batch losses; the checkpoint
            # holds the total, which rank 0 carries on from.
            epoch_loss_sum=torch.tensor(loop.epoch_loss_sum if world.primary else 0.0, dtype=torch.float64,
                                        device=parts.device),
            run_started=run_started, loop_started=started, last_save_time=started, last_check=started,
            resume_sampler_state=resume_sampler_state,
            last_saved_step=loop.global_step if loaded is not None else None,
            last_saved_path=loaded[1]["path"] if loaded is not None else None,
            world_size=world.size,
        )
        self._writer = attempt.writer
        return attempt

    def _load_checkpoint(self, comm: Comm) -> tuple[dict, dict] | None:
        """(state, sidecar) of the checkpoint to resume from, or None to start afresh.

        Rank 0 picks it, setting damaged ones aside; the other ranks load the same one.
        """
        loaded = checkpoint.load_latest(self.run_dir, warn=_warn) if self.world.primary else None
        chosen = comm.broadcast(loaded[1]["global_step"] if loaded is not None else -1)
        if not self.world.primary and chosen >= 0:
            loaded = checkpoint.load_step(self.run_dir, chosen)
        return loaded

    def _reconcile_metrics(self, loop: LoopState) -> None:
        """metrics.jsonl as of the checkpoint: later epochs dropped, a lost last line restored."""
        runfiles.truncate_metrics(self.run_dir, loop.epoch)
        recorded = runfiles.read_metrics(self.run_dir)
        if loop.last_metrics is not None and (not recorded or recorded[-1].get("epoch", 0) < loop.last_metrics["epoch"]):
            # The line was lost with the page cache in a crash; the checkpoint kept a copy.
            runfiles.append_metrics(self.run_dir, loop.last_metrics)

    # --- the epoch loop ----------------------------------------------------------------------

    def _train_epoch(self, parts: _Parts, attempt: _Attempt, epoch: int) -> RunResult | None:
        """The steps of `epoch` from where the loop stands; a RunResult if it stopped."""
        generator = parts.sampler.generator(epoch)
        if attempt.resume_sampler_state is not None:  # resuming inside this epoch
            generator.set_state(attempt.resume_sampler_state)
            attempt.resume_sampler_state = None
        attempt.sampler_state = generator.get_state()  # as of the epoch start: saved in checkpoints
        indices = parts.train.indices(parts.sampler.draw(generator))
        steps = range(attempt.loop.step_in_epoch, parts.steps_per_epoch)
        world = self.world
        batches = parts.train.epoch(epoch, steps, lambda step: parts.sampler.batch(indices, step, world.rank, world.size))
        attempt.epoch_started = time.perf_counter() - attempt.loop.epoch_seconds
        parts.progress.start_epoch()
        parts.model.train()
        for step in steps:
            stopped = self._step_boundary(parts, attempt, epoch, step)
            if stopped is not None:
                return stopped
            self._train_step(parts, attempt, epoch, step, next(batches))
        return None

    def _step_boundary(self, parts: _Parts, attempt: _Attempt, epoch: int, step: int) -> RunResult | None:
        """Before each step, the only place where the loop stops or checkpoints: stop (and
        return "stopped") if asked to or the deadline is near; checkpoint if one is due."""
        loop, every = attempt.loop, self.config.checkpoint
        now = time.perf_counter()
        self._longest_step_gap = max(self._longest_step_gap, now - attempt.last_check)
        attempt.last_check = now
        if self.stop_at_step is not None and loop.global_step == self.stop_at_step:
            self.request_stop("stop_at_step test hook")
        if self.deadline is not None and time.time() + self.deadline_margin() >= self.deadline:
            self.request_stop("deadline")
        # A signal reaches the ranks at slightly different times, and their clocks differ:
        # they decide together, so that all stop, or checkpoint for the time, at the same
        # step (with several ranks, one step after the request).
        stop_reason, minutes_due = parts.comm.agree(
            self._stop_reason, bool(every.every_minutes and now - attempt.last_save_time >= every.every_minutes * 60)
        )
        save_due = attempt.last_saved_step != loop.global_step and (
            bool(every.every_steps and loop.global_step % every.every_steps == 0) or minutes_due
        )
        if stop_reason is not None:
            self._stop_reason = stop_reason
            loop.epoch_seconds = now - attempt.epoch_started
            return self._stop(parts, attempt, epoch, step)
        if save_due:
            loop.epoch_seconds = now - attempt.epoch_started
            self._save(parts, attempt, "periodic", attempt.sampler_state)
        return None

    def _stop(self, parts: _Parts, attempt: _Attempt, epoch: int, step: int) -> RunResult:
        """Checkpoint where the loop stands (unless it just did), wait until that is on
        disk, and report "stopped"."""
        loop = attempt.loop
        if self._stop_reason == "deadline" and loop.global_step == attempt.start_step:
            _warn(f"stopping for the deadline before any step: the time left ({self.deadline - time.time():.0f}s) is "
                  f"less than the safety margin ({self.deadline_margin():.0f}s, train.checkpoint.deadline_margin_seconds)")
        if attempt.last_saved_step != loop.global_step:
            self._save(parts, attempt, "stop", attempt.sampler_state)
        attempt.writer.wait()  # the checkpoint must be complete before we report it
        if parts.board is not None:
            parts.board.close()
        parts.progress.message(
            f"stopping ({self._stop_reason}) at epoch {epoch + 1}, step {step}/{parts.steps_per_epoch}, "
            f"global step {loop.global_step}: checkpoint {Path(attempt.last_saved_path).name}; run again to resume"
        )
        parts.progress.write_file(epoch, step, loop.global_step)
        parts.progress.note_event("stop", loop.global_step, reason=self._stop_reason,
                                  checkpoint_seconds=round(loop.checkpoint_seconds, 3))
        parts.comm.barrier()  # no rank reports "stopped" before the checkpoint is complete
        return RunResult("stopped", reason=self._stop_reason, checkpoint=attempt.last_saved_path)

    def _train_step(self, parts: _Parts, attempt: _Attempt, epoch: int, step: int, batch: Batch) -> None:
        """One optimizer step on `batch`, batch `step` of the epoch's draw (this rank's share of it)."""
        cfg, world, loop, sampler = self.config, self.world, attempt.loop, parts.sampler
        inputs, target = batch
        batch_samples = min(cfg.batch_size, sampler.num_samples - step * cfg.batch_size)
        lr = learning_rate(cfg.lr_schedule, cfg.learning_rate, loop.global_step, cfg.epochs * parts.steps_per_epoch)
        for group in parts.optimizer.param_groups:
            group["lr"] = lr  # a function of the step: nothing to checkpoint
        with parts.precision.autocast():
            output = parts.net(*inputs)
            if world.size == 1:
                loss = scaled = parts.task.loss(output, target, "mean")
            else:
                # This rank's share of the batch's mean loss. DDP averages the gradients over
                # the ranks, so scaled by their number they add up to the gradient of the whole
                # batch's mean loss, even where the shares differ in size.
                loss = parts.task.loss(output, target, "sum") / batch_samples
                scaled = loss * world.size
        parts.stepper.zero_grad()
        parts.precision.backward_and_step(scaled, parts.stepper, parts.model, cfg.grad_clip)

        loop.step_in_epoch = step + 1
        loop.global_step += 1
        loop.samples += batch_samples
        attempt.epoch_loss_sum += loss.detach()
        if parts.board is not None:  # rank 0's loss (with several ranks, its share of the batch's)
            parts.board.scalar("train/loss", float(loss.detach()) * world.size, loop.global_step)
            parts.board.scalar("train/lr", lr, loop.global_step)
        # With several ranks, rank 0's share scaled up: an estimate.
        parts.progress.step(epoch, step + 1, loop.global_step, batch_samples, attempt.running_loss)

    def _end_epoch(self, parts: _Parts, attempt: _Attempt, epoch: int) -> None:
        """Validate, record the epoch's metrics, checkpoint (and link best.pt if it improved)."""
        loop = attempt.loop
        pause_at("validation")
        # Every rank validates the same weights: the metrics, and so the loop state, stay
        # the same on all, and none waits for rank 0 in a collective meanwhile.
        validation_started = time.perf_counter()
        metrics = evaluate(parts.task, parts.model, parts.val, parts.precision)
        loop.validation_seconds += time.perf_counter() - validation_started
        record = {
            "epoch": epoch + 1,
            "global_step": loop.global_step,
            "train_loss": parts.comm.total(float(attempt.epoch_loss_sum)) / parts.steps_per_epoch,
            **metrics,
            "lr": parts.optimizer.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - attempt.epoch_started,
            "time": time.time(),
        }
        if self.world.primary:
            runfiles.append_metrics(self.run_dir, record)
            pause_at("metrics")
        if parts.board is not None:
            for key in ("train_loss", *metrics, "epoch_seconds"):
                parts.board.scalar(f"epoch/{key}", record[key], loop.global_step)
        parts.progress.message(f"epoch {epoch + 1}/{self.config.epochs} train_loss {record['train_loss']:.4f} "
                               + " ".join(_shown(k, v) for k, v in metrics.items())
                               + f" ({record['epoch_seconds']:.1f}s)")
        task = parts.task
        value = metrics.get(task.best_metric)
        improved = value is not None and (loop.best_value is None or (
            value > loop.best_value if task.best_mode == "max" else value < loop.best_value))
        if improved:
            loop.best_value, loop.best_epoch = value, epoch + 1
        loop.last_metrics = record
        loop.epoch, loop.step_in_epoch, loop.epoch_seconds = epoch + 1, 0, 0.0
        attempt.epoch_loss_sum.zero_()
        self._save(parts, attempt, "epoch", None, then=self._link_best if improved else None)
        parts.progress.write_file(epoch + 1, 0, loop.global_step)

    # --- checkpoints -----------------------------------------------------------------------

    def _save(self, parts: _Parts, attempt: _Attempt, reason: str, sampler_state: torch.Tensor | None,
              then: Callable[[dict], None] | None = None) -> None:
        """Checkpoint the loop as it stands (the write itself goes on in the background).

        All ranks call it at the same step: it gathers their RNG states and losses, and
        rank 0 writes.
        """
        loop, writer = attempt.loop, attempt.writer
        held_up = time.perf_counter()
        rng = self._rng_states(parts)
        epoch_loss = parts.comm.total(float(attempt.epoch_loss_sum))
        if not self.world.primary:
            attempt.saved(str(self.run_dir / runfiles.CHECKPOINT_DIR / runfiles.checkpoint_name(loop.global_step)))
            return
        writer.wait()  # so that the counters below include the previous write
        if parts.board is not None:
            parts.board.flush()  # every step up to this checkpoint's on disk: a resume redoes only later ones
        now = time.perf_counter()
        loop.checkpoint_write_seconds = attempt.write_seconds_before + writer.write_seconds
        loop.epoch_loss_sum = epoch_loss
        loop.train_seconds = attempt.train_seconds_before + (now - attempt.loop_started)
        loop.wall_seconds = attempt.wall_seconds_before + (now - attempt.run_started)
        state = {
            "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scaler": parts.precision.state_dict(),
            "rng": rng,
            "sampler_state": sampler_state,
            "loop": dataclasses.asdict(loop),
            "identity": parts.identity,
            "config": self.config.to_dict(),
        }
        position = {"epoch": loop.epoch, "step_in_epoch": loop.step_in_epoch, "global_step": loop.global_step}
        attempt.saved(writer.submit(state, position=position, reason=reason, then=then))
        loop.checkpoint_seconds += attempt.last_save_time - held_up

    def _rng_states(self, parts: _Parts) -> dict:
        """The RNG streams that dropout draws from, every rank's (for the checkpoint)."""
        device = parts.device
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        if self.world.size > 1:  # each rank draws its own dropout masks
            rng["torch_ranks"] = parts.comm.gather_states(rng["torch"])
            if rng["cuda"] is not None:
                rng["cuda_ranks"] = parts.comm.gather_states(rng["cuda"])
        return rng

    def _link_best(self, info: dict) -> None:
        """Make best.pt the checkpoint just written (runs on the writer thread)."""
        pause_at("best-link")
        runfiles.link_atomic(info["path"], self.run_dir / runfiles.CHECKPOINT_DIR / runfiles.BEST_CHECKPOINT)

    # --- done: final checkpoint and summary ------------------------------------------------

    def _finish(self, parts: _Parts, attempt: _Attempt) -> RunResult:
        ckpt_dir = self.run_dir / runfiles.CHECKPOINT_DIR
        pause_at("summary")
        parts.comm.settle()
        attempt.writer.wait()
        if attempt.last_saved_path is not None and self.world.primary:
            runfiles.link_atomic(attempt.last_saved_path, ckpt_dir / runfiles.FINAL_CHECKPOINT)
        summary = self._summary(parts, attempt)
        if parts.board is not None:
            parts.board.close()
        if self.world.size > 1:
            # Each rank's own fingerprint, to show that DDP kept the ranks' weights equal.
            runfiles.write_rank_sha256(self.run_dir, self.world.rank, summary["weights_sha256"])
        if self.world.primary:
            runfiles.write_json_atomic(self.run_dir / runfiles.SUMMARY_FILE, summary)
            pause_at("summary-written")
        loop = attempt.loop
        best = parts.task.best_metric
        parts.progress.message(f"done: {loop.epoch} epochs, {loop.global_step} steps, {best} "
                               f"{summary.get(best)}, weights {summary['weights_sha256'][:16]}")
        return RunResult("completed", summary=summary, checkpoint=str(ckpt_dir / runfiles.FINAL_CHECKPOINT))

    def _summary(self, parts: _Parts, attempt: _Attempt) -> dict:
        """The contents of summary.json."""
        loop = attempt.loop
        now = time.perf_counter()
        train_seconds = attempt.train_seconds_before + (now - attempt.loop_started)
        final = loop.last_metrics or {}
        return {
            "status": "completed",
            "epochs": loop.epoch,
            "steps": loop.global_step,
            "steps_per_epoch": parts.steps_per_epoch,
            "samples": loop.samples,
            **{k: v for k, v in final.items() if k == "train_loss" or k.startswith("val_")},
            "best_epoch": loop.best_epoch,
            f"best_{parts.task.best_metric}": loop.best_value,
            "wall_seconds": attempt.wall_seconds_before + (now - attempt.run_started),
            "train_seconds": train_seconds,
            "samples_per_second": loop.samples / train_seconds if train_seconds > 0 else None,
            "validation_seconds": loop.validation_seconds,
            "checkpoint_seconds": loop.checkpoint_seconds,
            "checkpoint_write_seconds": attempt.write_seconds_before + attempt.writer.write_seconds,
            "resumes": loop.resumes,
            "world_size": self.world.size,
            "task": self.config.task,
            "precision": self.config.precision,
            "weights_sha256": weights_sha256(parts.model),
            "weights_sha256_order": "state_dict entries sorted by name: name NUL dtype shape NUL raw little-endian bytes",
            "device": str(parts.device),
            "determinism": determinism_record(parts.device),
            "threads": parts.threads,
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "final_checkpoint": str(Path(runfiles.CHECKPOINT_DIR) / runfiles.FINAL_CHECKPOINT),
            "time": time.time(),
        }
