"""``cluster logs``: a run's stdout or stderr across all its jobs and attempts."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TextIO

from cluster.backends.base import poll
from cluster.runs import TERMINAL_STATES, Run


def log_files(run: Run, err: bool = False) -> list[tuple[str, Path]]:
    """(job id, file) for every job of the run, in submission order.

    Requeued attempts of one job append to the same file (``--open-mode=append``);
    each attempt starts with the job's own ``===== cluster-train: attempt N`` line.
    """
    suffix = "err" if err else "out"
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for job in run.read().get("jobs", []):
        job_id = job["job_id"]
        candidates = sorted(run.logs_dir.glob(f"{job_id}_*log.{suffix}")) + \
            sorted(run.logs_dir.glob(f"{job_id}.{suffix}"))
        for path in candidates:
            if path not in seen:
                seen.add(path)
                found.append((job_id, path))
    return found


def _emit(lines, out) -> None:
    for line in lines:
        out.write(line)


def show_logs(run: Run, out: TextIO, *, err: bool = False, follow: bool = False, tail: int | None = None) -> int:
    files = log_files(run, err)
    if not files and not follow:
        out.write(f"(no {'stderr' if err else 'stdout'} yet for {run.id}; the job may still be pending)\n")
        return 0
    chunks: list[str] = []
    positions: dict[Path, int] = {}
    for job_id, path in files:
        chunks.append(f"----- job {job_id}: {path} -----\n")
        with open(path, errors="replace") as handle:
            chunks.extend(handle.readlines())
            # Where this read ended, not the size later: a line written meanwhile is shown by --follow.
            positions[path] = handle.tell()
    _emit(chunks if tail is None else deque(chunks, maxlen=tail), out)
    out.flush()
    if not follow:
        return 0
    from cluster.status import rows_for

    def copy_new_output() -> str:
        for job_id, path in log_files(run, err):
            if path not in positions:
                out.write(f"----- job {job_id}: {path} -----\n")
                positions[path] = 0
            with open(path, errors="replace") as handle:
                handle.seek(positions[path])
                data = handle.read()
                positions[path] = handle.tell()
            out.write(data)
        out.flush()
        return rows_for([run])[0].state

    poll(copy_new_output, lambda state: state in TERMINAL_STATES, interval=1.0)
    return 0
