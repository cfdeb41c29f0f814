"""``cluster logs``: a run's stdout or stderr across all its jobs and attempts.

The log files are found by name in the run's own ``logs/`` folder (or its sweep's), from
job ids that run.json must hold in the schedulers' own form, and opened without following
links: a ``logs/`` or ``*.out`` that is a symbolic link, a FIFO or a directory is one error
line naming it. The headers (``----- job N: FILE -----``) are ours and shown with control
characters escaped; the lines of the logs are the program's own output, which the user
asked to see, and are copied as they are (a progress bar's ``\\r`` included).
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import BinaryIO, TextIO

from cluster.backends.base import poll
from cluster.errors import ClusterError
from cluster.runs import TERMINAL_STATES, Run, printable
from train.contract.rundir import RunFileError
from train.contract import CONTROLLER_LOG


def log_files(run: Run, err: bool = False) -> list[tuple[str, Path]]:
    """(job id, file) for every job of the run, in submission order.

    Requeued attempts of one job append to the same file (``--open-mode=append``);
    each attempt starts with the job's own ``===== cluster-train: attempt N`` line.
    """
    suffix = "err" if err else "out"
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for job in run.read().get("jobs") or []:
        job_id = job["job_id"]  # checked by Run.read: a scheduler id, nothing that leaves logs/
        own = re.compile(rf"{re.escape(job_id)}(?:_[^/]*log)?\.{suffix}")
        names = _log_names(run, own)
        # submitit's "<id>_<task>_log.out" first, then PBS's "<id>.out", as before
        for name in sorted(names, key=lambda n: n == f"{job_id}.{suffix}"):
            if name not in seen:
                seen.add(name)
                found.append((job_id, run.logs_dir / name))
    if err and _log_names(run, re.compile(re.escape(CONTROLLER_LOG))):
        # The local executor's controller: a crash at start-up is told there, not in a job's stderr.
        found.append(("local controller", run.logs_dir / CONTROLLER_LOG))
    return found


def _log_names(run: Run, pattern: re.Pattern[str]) -> list[str]:
    try:
        return run.log_names(pattern)
    except RunFileError as error:
        raise ClusterError(str(error)) from None


def _open(run: Run, path: Path) -> BinaryIO:
    try:
        return run.open_log(path.name)
    except (RunFileError, FileNotFoundError) as error:
        raise ClusterError(str(error)) from None


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def show_logs(run: Run, out: TextIO, *, err: bool = False, follow: bool = False, tail: int | None = None) -> int:
    files = log_files(run, err)
    if not files and not follow:
        out.write(f"(no {'stderr' if err else 'stdout'} yet for {printable(run.id)}; the job may still be pending)\n")
        return 0
    chunks: list[str] = []
    positions: dict[Path, int] = {}
    for job_id, path in files:
        chunks.append(f"----- job {job_id}: {printable(path)} -----\n")
        with _open(run, path) as handle:
            data = handle.read()
        positions[path] = len(data)
        chunks.extend(_text(data).splitlines(keepends=True))
    _emit(chunks if tail is None else deque(chunks, maxlen=tail), out)
    out.flush()
    if not follow:
        return 0
    from cluster.status import rows_for

    def copy_new_output() -> str:
        for job_id, path in log_files(run, err):
            if path not in positions:
                out.write(f"----- job {job_id}: {printable(path)} -----\n")
                positions[path] = 0
            with _open(run, path) as handle:
                handle.seek(positions[path])
                data = handle.read()
            positions[path] += len(data)
            out.write(_text(data))
        out.flush()
        return rows_for([run])[0].state

    poll(copy_new_output, lambda state: state in TERMINAL_STATES, interval=1.0)
    return 0


def _emit(lines, out) -> None:
    for line in lines:
        out.write(line)
