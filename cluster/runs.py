"""Run directories and their ``run.json``: the one record of a run across jobs and attempts.

A run directory holds::

    spec.yaml        the resolved spec (``python -m train --config`` reads it as is)
    submitted.sh     the exact script handed to the scheduler (absent for local runs)
    run.json         scheduler, every job id, submit times, attempts, requeues, state
    logs/            submitit's folder: stdout/stderr of every attempt
    checkpoints/     written by the trainer
    metrics.jsonl    one line per epoch, written by the trainer
    summary.json     written by the trainer on completion

``run.json`` is written by the login node (submit, resume, cancel) and by the job
(attempt start, requeue, end), so every update is a read-modify-write under an
exclusive lock, and the write itself is atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from cluster.errors import ClusterError
from train.contract import LOGS_DIR, RUN_JSON, SCRIPT_FILE, SPEC_FILE, write_atomic

TERMINAL_STATES = ("completed", "failed", "timeout", "cancelled", "out-of-memory", "node-fail")
ALL_STATES = ("pending", "running", "requeued") + TERMINAL_STATES + ("unknown",)


def now_iso() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


class Run:
    """A run directory on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- paths
    @property
    def id(self) -> str:
        return self.path.name

    @property
    def record_path(self) -> Path:
        return self.path / RUN_JSON

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def script_path(self) -> Path:
        return self.path / SCRIPT_FILE

    @property
    def logs_dir(self) -> Path:
        """submitit's folder: ``logs/``, or the sweep's shared ``logs/`` for a sweep task."""
        try:
            shared = json.loads(self.record_path.read_text()).get("logs_dir")
        except (OSError, ValueError):
            shared = None
        return Path(shared) if shared else self.path / LOGS_DIR

    def exists(self) -> bool:
        return self.record_path.is_file()

    # --- run.json
    def read(self) -> dict[str, Any]:
        try:
            record = json.loads(self.record_path.read_text())
        except FileNotFoundError:
            raise ClusterError(f"{self.path}: not a run directory (no {RUN_JSON})") from None
        except (OSError, ValueError) as err:
            raise ClusterError(f"{self.record_path}: unreadable ({err})") from None
        if not isinstance(record, dict):
            raise ClusterError(f"{self.record_path}: unreadable (not a JSON object)")
        return record

    def scheduler(self, record: dict[str, Any] | None = None) -> str:
        """The backend kind the run was submitted to (``run.json``'s ``scheduler``)."""
        record = record if record is not None else self.read()
        kind = record.get("scheduler", "local")
        if not isinstance(kind, str):
            raise ClusterError(f"{self.record_path}: unreadable (scheduler is not a name)")
        return kind

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path / ".run.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update(self, change: Callable[[dict[str, Any]], None], *, durable: bool = True) -> dict[str, Any]:
        """Apply ``change`` to run.json under the lock and write it back atomically
        (``durable=False``: no fsync; the caller makes many runs durable at once, see
        :func:`make_durable`)."""
        with self._locked():
            record = self.read() if self.record_path.exists() else {}
            change(record)
            write_atomic(self.record_path, json.dumps(record, indent=2) + "\n", durable=durable)
            return record

    # --- helpers used by submit/resume and by the job
    def current_job_id(self, record: dict[str, Any] | None = None) -> str | None:
        record = record if record is not None else self.read()
        jobs = record.get("jobs") or []
        if not jobs:
            return None
        if not isinstance(jobs, list) or not isinstance(jobs[-1], dict) or not isinstance(jobs[-1].get("job_id"), str):
            raise ClusterError(f"{self.record_path}: unreadable (jobs[-1] has no job_id)")
        return jobs[-1]["job_id"]

    def add_job(self, job_id: str, reason: str, *, durable: bool = True) -> None:
        def change(record: dict[str, Any]) -> None:
            record.setdefault("jobs", []).append({"job_id": str(job_id), "submitted": now_iso(), "reason": reason})
            # A fast job may have started (and recorded its attempt) before we got here.
            if not any(a.get("job_id") == str(job_id) for a in record.get("attempts", [])):
                record["state"] = "pending"
                record.pop("error", None)

        self.update(change, durable=durable)

    def add_node_failure(self, failure: dict[str, Any]) -> int:
        """Record a node failure the run resumed after (``node_failures`` in run.json, one entry
        per failed incarnation: recording the same ``job_id``/``restart`` again changes nothing);
        how many the run has had."""
        key = (failure.get("job_id"), failure.get("restart"))

        def change(record: dict[str, Any]) -> None:
            failures = record.setdefault("node_failures", [])
            if not any((f.get("job_id"), f.get("restart")) == key for f in failures):
                failures.append(failure)

        return len(self.update(change)["node_failures"])

    def set_state(self, state: str, **extra: Any) -> None:
        def change(record: dict[str, Any]) -> None:
            record["state"] = state
            record["updated"] = now_iso()
            record.update(extra)

        self.update(change)


def make_durable(directory: Path) -> None:
    """Make every file written under ``directory`` durable at once: one ``syncfs`` of its
    filesystem (Linux), instead of an fsync per file and per rename.

    A sweep writes a few files into each of hundreds of run directories; an fsync each costs
    milliseconds (seconds per sweep), while the filesystem commits them all in one go for
    the price of a few. The files were written atomically (temporary name, rename), so a
    reader never sees half of one; this call is what makes them survive a crash, before the
    scheduler is told about them. Where ``syncfs`` is not available, ``os.sync()``.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        if not _syncfs(fd):
            os.sync()
    finally:
        os.close(fd)


def _syncfs(fd: int) -> bool:
    """syncfs(2) of the filesystem holding ``fd``; False where the C library has none."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # only here: the login path's other commands never need it

    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    return syncfs(fd) == 0


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create ``<runs_dir>/<name>-<YYYYmmdd-HHMMSS>-<6 hex>``; never shared between two submissions.

    ``mkdir`` without ``exist_ok`` is the arbiter: of two submissions that drew the
    same name in the same second, one gets an error and draws again.
    """
    root = Path(runs_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = root / f"{name}-{stamp}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path.resolve()
    raise ClusterError(f"{root}: could not create a unique run directory")


def find_run(ref: str, runs_dir: str | Path = "runs") -> Run:
    """A run from a path or a run id under ``runs_dir``."""
    for candidate in (Path(ref), Path(runs_dir) / ref):
        if (candidate / RUN_JSON).is_file():
            return Run(candidate.resolve())
    raise ClusterError(f"{ref}: no such run (expected a run directory with run.json, or a run id under {runs_dir}/)")
