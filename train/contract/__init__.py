"""What the login node (``cluster``) and the compute node (``train``) must agree on.

Standard library only: ``cluster`` imports this package (and nothing else from ``train``) on
the login node, where torch is never imported; ``train`` imports nothing from ``cluster``.

- the run directory's file names (``RUN_JSON``, ``METRICS_FILE``, ...);
- the job's environment variables (``RUN_DIR_ENV``, ``DEADLINE_ENV``, ``CHECKPOINT_DIR_ENV``,
  ``ATTEMPT_ENV``) and exit status ``EXIT_REQUEUE`` ("checkpointed: continue me");
- the helpers a command job's own script follows the contract with: :func:`stop_requested`,
  :func:`deadline`, :func:`checkpoint_dir`, :func:`run_dir`, :func:`attempt`;
- :class:`SpecError`, the error both sides raise for a wrong spec value;
- ``TRAINER_LOCK`` and :class:`RunLocked`: at most one trainer works in a run directory;
- :func:`write_atomic`, the one atomic writer for every file of a run directory;
- :func:`parse_walltime`, since both sides read walltimes;
- :mod:`train.contract.config`: the ``train:`` section of a spec, validated without torch.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

# --- the job's environment and exit status ---------------------------------------------

EXIT_REQUEUE = 75
"""Exit status of a trainer (or job script) that stopped early with a checkpoint to resume
from (EX_TEMPFAIL): the batch script requeues or continues the job on it."""

DEADLINE_ENV = "CLUSTER_DEADLINE"
"""Unix time at which the job's walltime ends; the trainer checkpoints and stops before it."""

RUN_DIR_ENV = "CLUSTER_RUN_DIR"
"""The run directory of the job (set by the rendered script and the submitit callable)."""

CHECKPOINT_DIR_ENV = "CLUSTER_CHECKPOINT_DIR"
"""Where a command job keeps its checkpoints (``$CLUSTER_RUN_DIR/checkpoints``)."""

ATTEMPT_ENV = "CLUSTER_ATTEMPT"
"""1 for a job's first attempt, 2 after its first requeue or continuation, ..."""

# --- the contract, for a command job's own script ---------------------------------------
#
#     from train.contract import EXIT_REQUEUE, checkpoint_dir, stop_requested
#     for step in range(start, steps):
#         ...one step...
#         if stop_requested(margin=60):
#             save(checkpoint_dir()); sys.exit(EXIT_REQUEUE)

_stop_signal: list[int] = []


def _remember(signum: int, frame: Any) -> None:
    _stop_signal.append(signum)


def install_stop_handlers() -> None:
    """USR2 (the scheduler's early warning) and TERM (requeue, preemption, the walltime kill)
    set a flag instead of killing the program. :func:`stop_requested` calls this on its first
    call; call it at the start when the first check comes late (a USR2 before it would kill)."""
    for signum in (signal.SIGUSR2, signal.SIGTERM):
        if signal.getsignal(signum) is not _remember:
            signal.signal(signum, _remember)


def deadline() -> float | None:
    """Unix time at which the job's walltime ends (``CLUSTER_DEADLINE``), None without one."""
    try:
        return float(os.environ[DEADLINE_ENV])
    except (KeyError, ValueError):
        return None


def stop_requested(margin: float = 0.0) -> bool:
    """True once the program should checkpoint and exit with :data:`EXIT_REQUEUE`: USR2 or TERM
    arrived, or fewer than ``margin`` seconds of the walltime are left (the time the save needs)."""
    install_stop_handlers()
    if _stop_signal:
        return True
    end = deadline()
    return end is not None and time.time() >= end - margin


def run_dir() -> Path:
    """The run directory (``CLUSTER_RUN_DIR``; the current directory outside a job)."""
    return Path(os.environ.get(RUN_DIR_ENV, "."))


def checkpoint_dir() -> Path:
    """Where to keep checkpoints (``CLUSTER_CHECKPOINT_DIR``), created if missing."""
    path = Path(os.environ.get(CHECKPOINT_DIR_ENV) or run_dir() / CHECKPOINT_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def attempt() -> int:
    """This attempt's number (``CLUSTER_ATTEMPT``), 1 outside a job."""
    try:
        return max(1, int(os.environ.get(ATTEMPT_ENV, "1")))
    except ValueError:
        return 1


# --- the run directory -----------------------------------------------------------------

RUN_JSON = "run.json"
SPEC_FILE = "spec.yaml"
SCRIPT_FILE = "submitted.sh"
LOGS_DIR = "logs"
CONTROLLER_LOG = "controller.log"
"""The local executor's controller log, in LOGS_DIR (its own crash is told there)."""
CHECKPOINT_DIR = "checkpoints"
RANKS_DIR = "ranks"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PROGRESS_FILE = "progress.json"
SWEEP_JSON = "sweep.json"
FINAL_CHECKPOINT = "final.pt"
BEST_CHECKPOINT = "best.pt"

ATTEMPTS_FILE = "attempts.jsonl"
"""What each attempt did, one JSON object per event, appended by the trainer's rank 0 (a command
job's program may write them too): ``{"attempt": N, "event": "first_step", "global_step": S,
"time": T}`` once the attempt's first optimizer step is done, and ``{"attempt": N, "event":
"stop", "global_step": S, "reason": R, "checkpoint_seconds": C, "time": T}`` at a checkpointed
stop. ``N`` is ``CLUSTER_ATTEMPT``; ``cluster report`` reads them (time to the first step, where
each attempt stopped)."""

TRAINER_LOCK = ".trainer.lock"
TENSORBOARD_DIR = "tensorboard"
"""TensorBoard event files (`train.tensorboard: true`), one file per attempt."""
"""Rank 0 of a trainer holds an exclusive ``fcntl.flock`` on this file for its whole run,
and writes ``<pid> <host>`` into it; a second trainer on the run directory raises
:class:`RunLocked` at once. The kernel (or NFS's lock manager) drops the lock when the
process dies, however it dies, so a stale file never blocks anyone."""

TMP_PREFIX = ".tmp-"
"""Temporary files of :func:`write_atomic` are named ``.tmp-<target>.<random>``."""


class SpecError(Exception):
    """A mistake in a job spec or an override: names the file and the dotted key."""

    exit_code = 2

    def __init__(self, key: str, message: str, file: str | None = None) -> None:
        self.key = key
        self.message = message
        self.file = file
        super().__init__(str(self))

    def with_file(self, file: str) -> "SpecError":
        return type(self)(self.key, self.message, self.file or file)

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join(parts + [self.message])


class RunLocked(Exception):
    """Another trainer (pid ``pid`` on ``host``, when it could be read) is training in
    ``run_dir``: this one started nothing and wrote nothing. Not a failure of the run.

    ``python -m train`` prints it as one line and exits 2.
    """

    exit_code = 2

    def __init__(self, run_dir: str | Path, pid: int | None = None, host: str | None = None) -> None:
        self.run_dir = str(run_dir)
        self.pid = pid
        self.host = host
        super().__init__(str(self))

    def __str__(self) -> str:
        holder = f"pid {self.pid}" if self.pid else "pid unknown"
        if self.host:
            holder += f" on {self.host}"
        return (f"{self.run_dir}: another trainer is already training this run ({holder}); "
                f"at most one trainer per run directory (lock: {TRAINER_LOCK})")

    def __reduce__(self) -> tuple:
        return type(self), (self.run_dir, self.pid, self.host)


def fsync_dir(path: str | Path) -> None:
    """Make a rename in ``path`` durable (the rename is recorded in the directory itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: str | bytes, *, durable: bool = True) -> None:
    """All of ``data`` or nothing, even if the machine dies mid-write.

    A temporary file beside ``path`` (mode 0666 minus the umask, as a shell redirection
    gives, so group members of a shared project can read the runs), fsync, rename over
    ``path``, fsync the directory. Readers see the old file or the new one, never a partial
    one; missing parent directories are created. ``durable=False`` skips the fsyncs, for files that are cheap to lose (progress.json).
    The temporary name is unique per call: concurrent writers never share one.
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.urandom(6).hex()}")
    try:
        try:
            handle = open(tmp, "xb")
        except FileNotFoundError:  # the folder first (not on every write: a sweep writes thousands)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(tmp, "xb")
        with handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_json_atomic(path: str | Path, obj: Any, *, durable: bool = True) -> None:
    import json  # here and below, not at the top: `cluster check` and `render` read and write no JSON

    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", durable=durable)


def remove_stray_temporaries(directory: str | Path, targets: tuple[str, ...] | None = None) -> None:
    """Delete temporaries left by a writer killed mid-write: all of them, or only those of
    the files named in ``targets`` (a writer of another file may be at work right now)."""
    for p in Path(directory).glob(TMP_PREFIX + "*"):
        target = p.name[len(TMP_PREFIX):].rsplit(".", 1)[0]
        if targets is None or target in targets:
            p.unlink(missing_ok=True)


def parse_metrics(text: str) -> list[dict]:
    """The records of metrics.jsonl text: one JSON object per line; a torn line is skipped."""
    import json

    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The per-epoch records of ``run_dir``'s metrics.jsonl (none when it does not exist); read
    without following a link (:mod:`train.contract.rundir`: a RunFileError for a link, FIFO, ...)."""
    from train.contract import rundir

    try:
        raw = rundir.read_bytes(run_dir, METRICS_FILE, rundir.MAX_METRICS_BYTES)
    except FileNotFoundError:
        return []
    return rundir.metrics_records(raw)[0]


def append_attempt_event(run_dir: str | Path, event: str, global_step: int, **fields: Any) -> None:
    """Append one event of this attempt to ``run_dir``'s attempts.jsonl (see ``ATTEMPTS_FILE``).

    One short line in append mode: a crash leaves at worst a torn last line, which readers skip."""
    import json

    record = {"attempt": attempt(), "event": event, "global_step": global_step, "time": time.time(), **fields}
    with open(Path(run_dir) / ATTEMPTS_FILE, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_attempt_events(run_dir: str | Path) -> list[dict]:
    """The events of ``run_dir``'s attempts.jsonl, in order (none when it does not exist)."""
    from train.contract import rundir

    try:  # without following a link, never waiting on a FIFO (train.contract.rundir)
        raw = rundir.read_bytes(run_dir, ATTEMPTS_FILE, rundir.MAX_METRICS_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return parse_metrics(raw.decode("utf-8", "replace"))


# --- walltimes ---------------------------------------------------------------------------

NOT_POSITIVE = "must be more than zero"


def parse_walltime(value: Any) -> int:
    """Return seconds for ``HH:MM:SS``, ``D-HH:MM:SS``, ``H:MM:SS`` or a number of minutes.

    Raises ValueError: with the message :data:`NOT_POSITIVE` for a zero or negative time,
    with no message for anything it cannot parse.
    """
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(NOT_POSITIVE)
        return value * 60
    if not isinstance(value, str):
        raise ValueError
    text = value.strip()
    if text.isascii() and text.isdigit():
        minutes = int(text)
        if minutes <= 0:
            raise ValueError(NOT_POSITIVE)
        return minutes * 60
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d):(\d\d)", text, re.ASCII)
    if not match:
        raise ValueError
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    if minutes >= 60 or seconds >= 60:
        raise ValueError
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(NOT_POSITIVE)
    return total
