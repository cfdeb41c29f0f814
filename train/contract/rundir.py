"""The one way into a run directory's files, for the login node and the trainer alike.

A run directory is written by jobs that can be killed at any moment, by other tools, or by
hand, so nothing in it is trusted as a path, a link or a value:

- a file is opened relative to the directory it belongs to, one component at a time, with
  ``O_NOFOLLOW`` (a symbolic link anywhere on the way is refused, never followed out of the
  run directory) and ``O_NONBLOCK`` (a FIFO never blocks the opener), and ``fstat`` of what
  was opened must say "regular file" (or "directory" for a folder);
- what is read is capped in size (a run.json cannot be /dev/zero or a 10 GB file);
- JSON is decoded strictly: UTF-8, no ``NaN``/``Infinity``, no integer longer than
  :data:`MAX_INT_DIGITS` digits; the caller then checks every field's type.

Anything else is a :class:`RunFileError` naming the file and what is wrong with it, one line:
``cluster status`` shows it as that run's row, the other commands and ``python -m train`` as
their one-line error. A missing file is ``FileNotFoundError``, as from ``open``: absent files
are normal (no summary.json before the end).

The checks and the open are one step (the open refuses the link, ``fstat`` looks at the open
file), so a file swapped between a check and the read is caught too. Folders are walked the
same way; what is created (``make_dirs``) is created by ``mkdir``, which never follows a link.
Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterator

from train.contract.errors import RunFileError

MAX_JSON_BYTES = 16 * 2**20
"""run.json, summary.json, progress.json, sweep.json, a sidecar: far above what the toolkit
writes (a run.json with 10,000 jobs is ~1.5 MB)."""
MAX_METRICS_BYTES = 256 * 2**20
"""metrics.jsonl: one line per epoch (or per program report); 256 MB is millions of lines."""
MAX_TEXT_BYTES = 2**20
"""spec.yaml and other small text files."""
MAX_INT_DIGITS = 30
"""Longer integers in a run directory's JSON are refused: no count or id of ours has more
digits (a 400-digit "job id" or attempt count is a corrupt or hostile file)."""

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


def kind_of(mode: int) -> str:
    """What a file mode names, for messages ("a FIFO", "a directory", ...)."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "a special file"


def _problem(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "is a symbolic link (not followed: files of a run directory must be its own)"
    if err.errno == errno.ENOTDIR:
        return "a folder on its path is not a directory"
    return f"cannot open ({err.strerror or type(err).__name__})"


def _parts(relative: str | Path) -> list[str]:
    parts = [p for p in Path(relative).parts if p not in ("", ".")]
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise RunFileError(relative, "not a path inside the run directory")
    return parts


@contextlib.contextmanager
def _open_dir(base: str | Path, parts: list[str], *, create: bool = False) -> Iterator[int]:
    """An fd of ``base/parts...``, every component opened with O_NOFOLLOW (created when missing
    and ``create``): a symbolic link on the way is refused."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    where = Path(base)
    try:
        for part in parts:
            where = where / part
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)  # mkdir never follows a link
                except FileExistsError:
                    pass
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    _refuse_entry(fd, part, where, "a directory")
                raise RunFileError(where, _problem(err)) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _refuse_entry(dir_fd: int, name: str, where: Path, expected: str) -> None:
    """Raise the RunFileError that says what ``name`` is instead of ``expected``."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError as err:
        raise RunFileError(where, _problem(err)) from None
    if stat.S_ISLNK(mode):
        raise RunFileError(where, f"is a symbolic link (not followed: expected {expected} of the run directory "
                                  "itself)")
    raise RunFileError(where, f"is {kind_of(mode)}, not {expected}")


def check_dir(base: str | Path, relative: str | Path, *, create: bool = False) -> Path:
    """``base/relative`` after checking it is a real directory, reached without following any
    link (created, with its missing parents, when ``create``); FileNotFoundError when missing."""
    with _open_dir(base, _parts(relative), create=create):
        pass
    return Path(base, relative)


def open_fd(base: str | Path, relative: str | Path, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
    """An fd of the regular file ``base/relative``, opened without following links on the
    way or at the end and without blocking; RunFileError for anything but a regular file,
    FileNotFoundError when missing (and ``flags`` has no O_CREAT). The caller closes it."""
    parts = _parts(relative)
    where = Path(base, *parts)
    with _open_dir(base, parts[:-1], create=bool(flags & os.O_CREAT)) as dir_fd:
        try:
            fd = os.open(parts[-1], flags | _OPEN_FLAGS, mode, dir_fd=dir_fd)
        except FileNotFoundError:
            raise
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR):
                _refuse_entry(dir_fd, parts[-1], where, "a regular file")
            raise RunFileError(where, _problem(err)) from None
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise RunFileError(where, f"is {kind_of(kind)}, not a regular file")
        os.set_blocking(fd, True)  # a regular file never blocks; later reads need no EAGAIN handling
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(base: str | Path, relative: str | Path, mode: str = "rb") -> Any:
    """:func:`open_fd` as a file object: ``rb``, ``r`` (UTF-8, errors replaced), ``ab``/``a``
    (append, created when missing)."""
    flags = {"r": os.O_RDONLY, "a": os.O_WRONLY | os.O_APPEND | os.O_CREAT}[mode[0]]
    fd = open_fd(base, relative, flags)
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding="utf-8", errors="replace")


def read_bytes(base: str | Path, relative: str | Path, limit: int = MAX_JSON_BYTES) -> bytes:
    """All bytes of a regular file of at most ``limit`` bytes; RunFileError when larger."""
    fd = open_fd(base, relative)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise RunFileError(Path(base, relative), _problem(err)) from None
    finally:
        os.close(fd)
    if size > limit:
        raise RunFileError(Path(base, relative), f"is larger than {limit} bytes (not a file this toolkit writes)")
    return b"".join(chunks)


def read_regular(path: str | Path, limit: int = MAX_TEXT_BYTES) -> bytes:
    """A file the user named (links followed, as for any file they name), read only when it is
    a regular file of at most ``limit`` bytes: a FIFO or /dev/zero never hangs the reader."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise RunFileError(path, _problem(err)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RunFileError(path, f"is {kind_of(mode)}, not a regular file")
        data = os.read(fd, limit + 1)
        while len(data) <= limit and (chunk := os.read(fd, limit + 1 - len(data))):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RunFileError(path, f"is larger than {limit} bytes")
    return data


def read_text(base: str | Path, relative: str | Path, limit: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file of at most ``limit`` bytes (RunFileError for binary data)."""
    raw = read_bytes(base, relative, limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunFileError(Path(base, relative), f"is not UTF-8 text (byte {err.start})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number this toolkit writes")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} overflows a float")
    return value


def decode_json(text: str, *, finite: bool = True) -> Any:
    """Strict JSON: no NaN/Infinity (not even as 1e400) unless ``finite`` is False, no integer
    over MAX_INT_DIGITS digits; ValueError otherwise."""
    import json  # here, not at the top: `cluster check` and `render` read no JSON

    if not finite:
        return json.loads(text, parse_int=_bounded_int)
    return json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int, parse_float=_finite_float)


def read_json(base: str | Path, relative: str | Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file decoded strictly (:func:`decode_json`); RunFileError for anything else."""
    text = read_text(base, relative, limit)
    try:
        return decode_json(text)
    except (ValueError, RecursionError) as err:
        raise RunFileError(Path(base, relative), f"is not valid JSON ({str(err)[:120]})") from None


def read_object(base: str | Path, relative: str | Path, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON file that must hold an object (RunFileError naming what it holds instead)."""
    data = read_json(base, relative, limit)
    if not isinstance(data, dict):
        raise RunFileError(Path(base, relative), f"holds {json_kind(data)}, not a JSON object")
    return data


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def parse_jsonl(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """(the objects of JSON-lines bytes, how many complete lines were skipped): a line that is
    not a JSON object (a number, a list, random bytes, a 400-digit integer) is skipped and
    counted; an incomplete last line (a writer mid-line) is left out without counting. NaN
    and Infinity are kept: a diverged loss is a real measurement (Python's json writes them)."""
    records, skipped = [], 0
    complete = raw[: raw.rfind(b"\n") + 1]
    for line in complete.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = decode_json(line.decode("utf-8"), finite=False)
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


_LAYOUT_FOLDERS = ("checkpoints", "tensorboard", "ranks", "logs")
_LAYOUT_FILES = ("run.json", "spec.yaml", "metrics.jsonl", "summary.json", "progress.json", "sweep.json",
                 ".trainer.lock", ".run.lock", "checkpoints/final.pt", "checkpoints/best.pt")
_CHECKED_ENTRIES = {"checkpoints": r"ckpt-[0-9]+\.(?:pt|json)|final\.pt|best\.pt", "logs": r".*\.(?:out|err)"}
"""Which entries of those folders are checked: regular expressions as text (compiled on first
use, by ``re``: not by every command that imports this module)."""


def check_layout(run_dir: str | Path) -> None:
    """Refuse (RunFileError naming the entry) a run directory whose own folders (checkpoints/,
    tensorboard/, ranks/, logs/) or files (run.json, metrics.jsonl, .trainer.lock, final.pt,
    the checkpoints and logs, ...) are links, FIFOs or of the wrong kind. Called before a job
    of the run starts (``cluster resume``, the trainer), so that nothing it reads, writes or
    deletes is outside the run directory. Missing entries are fine. (A command job's program
    may keep links of its own in checkpoints/: only the names above are checked.)"""
    for folder in _LAYOUT_FOLDERS:
        try:
            path = check_dir(run_dir, folder)
        except FileNotFoundError:
            continue
        names = _CHECKED_ENTRIES.get(folder)
        if names is None:
            continue
        with os.scandir(path) as entries:
            bad = [e.name for e in entries if re.fullmatch(names, e.name) and not e.is_file(follow_symlinks=False)]
        if bad:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _refuse_entry(fd, sorted(bad)[0], path / sorted(bad)[0], "a regular file")
            finally:
                os.close(fd)
    for name in _LAYOUT_FILES:
        try:
            os.close(open_fd(run_dir, name))
        except FileNotFoundError:
            continue


def metrics_records(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """metrics.jsonl's records and how many lines were skipped: :func:`parse_jsonl`, and a
    record whose "epoch" is not a whole number >= 0 is skipped and counted too."""
    records, skipped = parse_jsonl(raw)
    kept = [r for r in records if "epoch" not in r or is_count(r["epoch"])]
    return kept, skipped + len(records) - len(kept)


def is_count(value: Any, maximum: int = 10**9) -> bool:
    """A whole number 0..maximum (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum
