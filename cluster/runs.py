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
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from cluster.errors import ClusterError
from train.contract import LOGS_DIR, RUN_JSON, SCRIPT_FILE, SPEC_FILE, write_atomic
from train.contract import rundir
from train.contract.rundir import RunFileError

RUN_LOCK = ".run.lock"
"""Held (flock) around every read-modify-write of run.json."""
TERMINAL_STATES = ("completed", "failed", "timeout", "cancelled", "out-of-memory", "node-fail")
ALL_STATES = ("pending", "running", "requeued") + TERMINAL_STATES + ("unknown",)


SAFE_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\[\],-]{0,99}", re.ASCII)
"""What any backend's job id must look like (full match, no ``..``) on top of its own
``job_id_pattern``: nothing that leaves a folder as a path or reads as an option."""

MAX_NAME = 4096
"""The longest name or other short text field of run.json we accept (a run's name is at most
100 characters); ``error`` may hold up to :data:`MAX_ERROR`."""
MAX_ERROR = 2**20


def valid_job_id(value: Any, kind: str | None = None) -> bool:
    """``value`` is a job id of scheduler ``kind`` (its ``job_id_pattern``; with no kind, the
    built-in schedulers' form) and has nothing of a path or an option."""
    from cluster import backends
    from cluster.backends.base import JOB_ID

    if not isinstance(value, str) or not SAFE_JOB_ID.fullmatch(value) or ".." in value:
        return False
    try:
        pattern = backends.get(kind).job_id_pattern if kind else JOB_ID
    except ClusterError:
        pattern = JOB_ID
    return pattern.fullmatch(value) is not None


def check_record(record: Any, run_path: Path) -> dict[str, Any]:
    """``record`` (run.json decoded) if every field the commands use has its type; a
    ClusterError "RUN/run.json: KEY: what is wrong" otherwise."""
    where = run_path / RUN_JSON

    def bad(key: str, problem: str) -> ClusterError:
        return ClusterError(f"{where}: {key}: {problem}")

    if not isinstance(record, dict):
        raise ClusterError(f"{where}: holds {rundir.json_kind(record)}, not a JSON object")
    for key in ("scheduler", "name", "state", "run_id", "kind", "pbs_flavor", "created", "updated", "ended",
                "error", "spec"):
        value = record.get(key)
        limit = MAX_ERROR if key == "error" else MAX_NAME
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise bad(key, f"must be a text of at most {limit} characters (is {rundir.json_kind(value)}"
                           + (f" of {len(value)} characters)" if isinstance(value, str) else ")"))
    for key in ("requeues", "max_requeues", "walltime_seconds", "epochs"):
        value = record.get(key)
        if (value is not None or key in ("requeues", "max_requeues") and key in record) \
                and not rundir.is_count(value):
            raise bad(key, f"must be a whole number 0..1000000000 (is {str(value)[:40]!r})")
    kind = record.get("scheduler", "local")
    for key in ("jobs", "attempts", "node_failures"):
        entries = record.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise bad(key, "must be a list of objects")
        for index, entry in enumerate(entries):
            job_id = entry.get("job_id")
            if (key != "node_failures" or job_id is not None) and not valid_job_id(job_id, kind):
                raise bad(f"{key}[{index}].job_id", f"{str(job_id)[:40]!r} is not a scheduler job id "
                                                    "(digits, with _N, [N] or .server as the schedulers print them)")
    command = record.get("command")
    if command is not None and not (isinstance(command, list) and all(isinstance(a, str) for a in command)):
        raise bad("command", "must be a list of texts")
    logs = record.get("logs_dir")
    if logs is not None and not (_is_sweep_logs(logs, run_path) and isinstance(record.get("sweep"), dict)):
        raise bad("logs_dir", f"{str(logs)[:200]!r} is not the logs/ folder of the sweep this run belongs to "
                              "(logs are read only from the run's own layout)")
    return record


def _is_sweep_logs(value: Any, run_path: Path) -> bool:
    """``value`` names the logs/ folder of the sweep directory that holds this run (its parent):
    the only other folder a run's logs may be in. Only its shape is checked (the sweep's
    sweep.json is written after its tasks are submitted, and a sweep may have been moved): the
    folder read is always the run's parent's logs/, never the path run.json names."""
    if not isinstance(value, str) or len(value) > 4096:
        return False
    path = Path(value)
    return path.name == LOGS_DIR and path.parent.name == run_path.parent.name and ".." not in path.parts


def printable(value: Any) -> str:
    """``value`` as text with every control or formatting character escaped (``\\n``, ``\\x1b``,
    ``\\u202e``): a name from run.json or a program's file name can neither start a fake line
    of a table nor colour the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


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
        return self.logs_base / LOGS_DIR

    @property
    def logs_base(self) -> Path:
        """The directory whose ``logs/`` holds the run's logs: the run's own, or its sweep's (the
        run's parent) when run.json says so. Taken from the layout, never from a path in run.json."""
        try:
            shared = self.read().get("logs_dir")
        except ClusterError:
            shared = None
        return self.path.parent if shared else self.path

    def log_names(self, pattern: re.Pattern[str]) -> list[str]:
        """Names in the logs folder that ``pattern`` matches in full, sorted; the folder reached
        without following links (a RunFileError when it is a link or not a directory; none when
        missing). Entries of any kind are named: opening one (:meth:`open_log`) refuses a link."""
        try:
            folder = rundir.check_dir(self.logs_base, LOGS_DIR)
        except FileNotFoundError:
            return []
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if pattern.fullmatch(e.name))

    def open_log(self, name: str) -> Any:
        """A binary file object of ``logs/NAME`` (a RunFileError for a link, FIFO or directory)."""
        return rundir.open_file(self.logs_base, f"{LOGS_DIR}/{name}", "rb")

    def exists(self) -> bool:
        return self.record_path.is_file()

    # --- run.json
    def read(self) -> dict[str, Any]:
        """run.json, every field the commands use type-checked (:func:`check_record`); a one-line
        ClusterError naming the file and what is wrong otherwise."""
        try:
            record = rundir.read_json(self.path, RUN_JSON)
        except FileNotFoundError:
            raise ClusterError(f"{self.path}: not a run directory (no {RUN_JSON})") from None
        except (OSError, RunFileError) as err:
            raise ClusterError(str(err)) from None
        return check_record(record, self.path)

    def scheduler(self, record: dict[str, Any] | None = None) -> str:
        """The backend kind the run was submitted to (``run.json``'s ``scheduler``)."""
        record = record if record is not None else self.read()
        kind = record.get("scheduler", "local")
        if not isinstance(kind, str):
            raise ClusterError(f"{self.record_path}: scheduler: not a name")
        return kind

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            lock = rundir.open_file(self.path, RUN_LOCK, "ab")  # a link named .run.lock is refused
        except RunFileError as err:
            raise ClusterError(str(err)) from None
        with lock:
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
            record = self.read() if os.path.lexists(self.record_path) else {}
            change(record)
            write_atomic(self.record_path, json.dumps(record, indent=2) + "\n", durable=durable)
            return record

    # --- helpers used by submit/resume and by the job
    def current_job_id(self, record: dict[str, Any] | None = None) -> str | None:
        record = record if record is not None else self.read()
        jobs = record.get("jobs") or []
        if not jobs:
            return None
        if not isinstance(jobs, list) or not isinstance(jobs[-1], dict) or not valid_job_id(jobs[-1].get("job_id"), self.scheduler(record)):
            raise ClusterError(f"{self.record_path}: jobs: the last job has no valid job_id")
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
        path = root / f"{name}-{stamp}-{os.urandom(3).hex()}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path.resolve()
    raise ClusterError(f"{root}: could not create a unique run directory")


def find_run(ref: str, runs_dir: str | Path = "runs") -> Run:
    """A run from a path or a run id under ``runs_dir``."""
    for candidate in (Path(ref), Path(runs_dir) / ref):
        # Any run.json entry makes it a run: a broken one (a FIFO, a link) is then named by read().
        if os.path.lexists(candidate / RUN_JSON) and candidate.is_dir():
            return Run(candidate.resolve())
    raise ClusterError(f"{ref}: no such run (expected a run directory with run.json, or a run id under {runs_dir}/)")
