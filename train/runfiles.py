"""The files of a run directory, read and written with the standard library only.

The login node (the `cluster status`/`collect` commands, a submitit checkpoint hook) reads
these without importing torch:

    DIR/metrics.jsonl                  one JSON object per completed epoch ("epoch" 1-based)
    DIR/progress.json                  live position, rewritten at a bounded rate: {"epoch":
                                       completed epochs, "step": steps done in the epoch in
                                       progress, "epochs", "steps_per_epoch", "global_step",
                                       "time"}
    DIR/summary.json                   written once, when training completes
    DIR/checkpoints/ckpt-<step>.pt     rotating checkpoints (torch format, tensors only)
    DIR/checkpoints/ckpt-<step>.json   sidecar: position, size and CRC-32 of the .pt
    DIR/checkpoints/best.pt, final.pt  the best (by val_auc) and the final checkpoint
    DIR/.trainer.lock                  held (flock) by the trainer's rank 0 while it runs;
                                       "<pid> <host>" of the holder while held
    DIR/ranks/rank-<r>.sha256          data-parallel runs: each rank's weights_sha256 at the
                                       end (one hex line), written by that rank; all equal
                                       summary.json's when DDP kept the ranks in step

A checkpoint counts only once its sidecar exists: the .pt is renamed into place first and
the sidecar written after it, both atomically, so a job killed mid-write leaves either a
complete checkpoint or none (and a stray temporary file, removed at the next start).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from train.contract import (BEST_CHECKPOINT, CHECKPOINT_DIR, FINAL_CHECKPOINT, METRICS_FILE, PROGRESS_FILE,
                            RANKS_DIR, SUMMARY_FILE, TMP_PREFIX, TRAINER_LOCK,
                            RunLocked, fsync_dir, read_metrics, remove_stray_temporaries, rundir, write_atomic,
                            write_json_atomic)
from train.contract.rundir import RunFileError  # noqa: F401 - re-exported for the trainer

__all__ = ["BEST_CHECKPOINT", "CHECKPOINT_DIR", "FINAL_CHECKPOINT", "METRICS_FILE", "PROGRESS_FILE", "RANKS_DIR",
           "SUMMARY_FILE", "RunFileError", "read_metrics", "remove_stray_temporaries", "write_atomic",
           "write_json_atomic"]

check_layout = rundir.check_layout


def folder(run_dir: str | Path, name: str) -> Path:
    """``run_dir/name``, created when missing; a RunFileError when it is a link or not a directory."""
    return rundir.check_dir(run_dir, name, create=True)


def checkpoint_name(global_step: int) -> str:
    return f"ckpt-{global_step:09d}.pt"


def link_atomic(src: str | Path, dst: str | Path) -> None:
    """Make `dst` name the same file as `src` (a hard link; a copy where links fail).

    Checkpoint files are never modified once written, so best.pt and final.pt can share
    the bytes of a rotating checkpoint for free; rotation deleting that one's name does
    not affect them.

    Linking again what `dst` already names (a rerun of a completed run links final.pt to
    the same checkpoint) leaves no temporary behind: rename(2) of a hard link onto another
    name of the same file does nothing and leaves both names.
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f"{TMP_PREFIX}{dst.name}.{os.urandom(6).hex()}")
    try:
        os.link(src, tmp, follow_symlinks=False)
    except OSError:
        write_atomic(tmp, rundir.read_bytes(src.parent, src.name, 2**40))
    try:
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)  # still there only if dst already was this file
    fsync_dir(dst.parent)


# --- the trainer lock ---------------------------------------------------------------------

LOCKS_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
"""What flock fails with where the file system has no (cluster-wide) locks, e.g. Lustre
mounted without -o flock."""


_HELD_LOCKS: set[int] = set()
"""Descriptors of the trainer locks this process holds."""


def _close_held_locks() -> None:
    """In a forked child (a DataLoader worker): close the inherited lock descriptors.

    An flock belongs to the open file, which a forked child shares: a worker still alive
    after its trainer was killed would keep the run locked, and the next attempt would be
    refused as a second trainer. Closing the child's copy leaves the parent's lock as it is.
    """
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_held_locks)


@contextlib.contextmanager
def trainer_lock(run_dir: str | Path, warn: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold DIR/.trainer.lock (an exclusive flock) while the block runs: at most one trainer
    per run directory. Never waits: raises `RunLocked` at once, naming the holder's pid and
    host (written into the file while it is held), when another process holds it.

    The lock goes with the open file: released when the block ends and, however the process
    ends (SIGKILL, a crash), by the kernel, or by NFS's lock manager once the client is gone.
    The file stays, emptied. On a file system without locks, `warn` says so and the block
    runs unlocked.
    """
    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TRAINER_LOCK
    try:  # never through a link: a .trainer.lock link to another file would truncate that file
        fd, writable = rundir.open_fd(directory, TRAINER_LOCK, os.O_RDWR | os.O_CREAT), True
    except PermissionError:  # another user's run, shared through the group: lock, but write no pid
        fd, writable = rundir.open_fd(directory, TRAINER_LOCK, os.O_RDONLY), False
    locked = registered = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise RunLocked(directory, *_lock_holder(fd)) from None
        except OSError as err:
            if err.errno not in LOCKS_UNSUPPORTED:
                raise
            if warn is not None:
                warn(f"cannot lock {path} ({err.strerror}): nothing stops a second trainer from working in this "
                     "run directory at the same time")
        writable = writable and locked
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        _HELD_LOCKS.add(fd)
        registered = True
        try:
            yield
        finally:
            if writable and fd in _HELD_LOCKS:
                os.ftruncate(fd, 0)  # no stale pid for the next holder's rivals to read
    finally:
        if not registered or fd in _HELD_LOCKS:  # else a forked child that closed its copy
            _HELD_LOCKS.discard(fd)
            os.close(fd)


def _lock_holder(fd: int) -> tuple[int | None, str | None]:
    """(pid, host) that the lock's holder wrote, or Nones while it has not written them yet."""
    try:
        fields = os.pread(fd, 300, 0).decode(errors="replace").split()
    except OSError:
        return None, None
    pid = int(fields[0]) if fields and fields[0].isdigit() else None
    return pid, (fields[1] if len(fields) > 1 else None)


# --- checkpoints --------------------------------------------------------------------------


CHECKPOINT_FILE = re.compile(r"ckpt-[0-9]+\.pt")
"""The only names a sidecar's "file" may give: a plain file name inside checkpoints/."""
SIDECAR_FILE = re.compile(r"ckpt-[0-9]+\.json")
MAX_SIDECAR_BYTES = 64 * 1024


def sidecars(run_dir: str | Path) -> list[dict]:
    """Sidecars of the complete checkpoints, newest (highest global step) first.

    Each is the sidecar's JSON plus "path" (absolute path of the .pt) and "sidecar" (its own
    path). Unreadable sidecars are skipped: they were never completed. So is a sidecar whose
    "file" is not its own checkpoint's plain name (`ckpt-<digits>.pt` beside it, as
    `checkpoint_name` makes them): resume sets a bad checkpoint aside and rotation deletes
    old ones, so a crafted "file": "/some/path" or "../../x" must never be followed out of
    checkpoints/.
    """
    try:
        directory = rundir.check_dir(run_dir, CHECKPOINT_DIR)  # a checkpoints/ link: RunFileError
    except FileNotFoundError:
        return []
    found = []
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if SIDECAR_FILE.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    for side_name in names:
        side = directory / side_name
        try:
            info = rundir.read_object(directory, side_name, MAX_SIDECAR_BYTES)
        except (OSError, RunFileError):
            continue
        step = info.get("global_step")
        if not rundir.is_count(step, 10**15) or not all(rundir.is_count(info.get(k), 2**63) for k in ("bytes", "crc32")):
            continue
        name = side.with_suffix(".pt").name
        if info.get("file", name) != name or not CHECKPOINT_FILE.fullmatch(name):
            continue
        info["path"] = str(directory / name)
        info["sidecar"] = str(side)
        found.append((step, info))
    found.sort(key=lambda item: item[0], reverse=True)
    return [info for _, info in found]


def verify(info: dict) -> str | None:
    """Why this checkpoint is unusable (missing, a link, truncated, altered), or None if intact.

    The CRC-32 is of the whole file: torch.load does not check the CRCs inside its own files."""
    path = Path(info["path"])
    try:
        fd = rundir.open_fd(path.parent, path.name)  # a ckpt-*.pt link is not this run's checkpoint
    except FileNotFoundError:
        return "file is missing"
    except RunFileError as err:
        return err.problem
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(fd).st_size
        if size != info.get("bytes"):
            return f"file has {size} bytes, its sidecar says {info.get('bytes')} (truncated or overwritten)"
        crc = 0
        for block in iter(lambda: handle.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    if crc != info.get("crc32"):
        return "CRC-32 does not match its sidecar (corrupt)"
    return None


def resume_point(run_dir: str | Path) -> dict | None:
    """Where a run in `run_dir` would resume: the newest intact checkpoint, or None.

    Returns e.g. {"epoch": 3, "step_in_epoch": 17, "global_step": 392, "path": ".../ckpt-000000392.pt",
    "reason": "stop", "time": 1764230000.0} where "epoch" counts completed epochs. Checks
    size and CRC-32 against the sidecar; does not import torch.
    """
    for info in sidecars(run_dir):
        if verify(info) is None:
            return {k: info[k] for k in ("epoch", "step_in_epoch", "global_step", "path", "reason", "time") if k in info}
    return None


def write_rank_sha256(run_dir: str | Path, rank: int, sha256: str) -> Path:
    """Record one rank's final weights fingerprint as DIR/ranks/rank-<rank>.sha256."""
    path = folder(run_dir, RANKS_DIR) / f"rank-{rank}.sha256"
    write_atomic(path, sha256 + "\n")
    return path


# --- metrics ------------------------------------------------------------------------------


def truncate_metrics(run_dir: str | Path, completed_epochs: int) -> None:
    """Drop records of epochs after `completed_epochs`: a resumed run writes them again.

    Epochs can be recorded past the checkpoint when a job died between appending its
    metrics line and writing its epoch-end checkpoint.
    """
    try:
        raw = rundir.read_bytes(run_dir, METRICS_FILE, rundir.MAX_METRICS_BYTES)
    except FileNotFoundError:
        return
    records, _ = rundir.parse_jsonl(raw)
    kept = [r for r in records if rundir.is_count(r.get("epoch")) and r["epoch"] <= completed_epochs]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    if raw != text.encode():  # also drops a torn last line and lines that are not objects
        write_atomic(Path(run_dir) / METRICS_FILE, text)


def append_metrics(run_dir: str | Path, record: dict) -> None:
    """One line appended to metrics.jsonl (never through a link: RunFileError)."""
    with rundir.open_file(run_dir, METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")

