"""Walltimes, memory sizes and durations: the one place the login side parses and formats them.

- :func:`parse_walltime` is the contract's (:mod:`train.contract`), re-exported: the trainer
  reads walltimes too, and there must be one implementation.
- :func:`format_walltime` writes ``HH:MM:SS`` for directives; :func:`parse_memory` and
  :func:`format_memory` read and write the spec's ``resources.mem``.
- :func:`format_duration` and :func:`parse_duration_text` are for what schedulers *report*
  (elapsed times, used walltimes): lenient, ``None`` for anything unreadable, never an exception.

Standard library (and the contract) only: this module is on the login-node path.
"""

from __future__ import annotations

import math
import re
from typing import Any

from train.contract import NOT_POSITIVE, parse_walltime

__all__ = [
    "MAX_MEMORY_MB", "MAX_WALLTIME_SECONDS", "NOT_POSITIVE",
    "format_duration", "format_memory", "format_walltime",
    "parse_duration_text", "parse_memory", "parse_walltime",
]

MAX_WALLTIME_SECONDS = 365 * 86400
"""The longest walltime a spec may ask for (a year: no site grants more)."""

MAX_MEMORY_MB = 64 * 1024 * 1024
"""The most memory per node a spec may ask for: 64 TiB (the largest single machines hold less)."""


def format_walltime(seconds: int) -> str:
    """``HH:MM:SS`` (hours may exceed 24), the form every scheduler accepts."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


_MEM_UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
_MEM = r"(\d{1,30}(?:\.\d{1,30})?)\s*(?:([kKmMgGtT])(?:[iI]?[bB])?)?"
"""Compiled by ``re`` on first use (ASCII digits and spaces only)."""


def parse_memory(value: Any) -> int:
    """Return mebibytes for ``16G``, ``16GB``, ``16GiB``, ``500M``, ``2T`` or a plain number of GB.

    Raises ValueError like :func:`parse_walltime`: with a message for a value that is
    readable but out of range, with none for anything it cannot parse. A bare ``B`` is
    refused: ``16B`` would otherwise read as 16 GB.
    """
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        if value.bit_length() > 64:
            raise ValueError(f"must be at most {format_memory(MAX_MEMORY_MB)}")
        number, unit = float(value), "g"
    elif isinstance(value, float):
        number, unit = value, "g"
    elif isinstance(value, str):
        match = re.fullmatch(_MEM, value.strip(), re.ASCII) if len(value) <= 80 else None
        if not match:
            raise ValueError
        number, unit = float(match.group(1)), (match.group(2) or "g").lower()
    else:
        raise ValueError
    if not math.isfinite(number):
        if number == float("inf"):
            raise ValueError(f"must be at most {format_memory(MAX_MEMORY_MB)}")
        raise ValueError
    if number <= 0:
        raise ValueError(NOT_POSITIVE)
    mb = number * _MEM_UNITS[unit]
    if mb > MAX_MEMORY_MB:
        raise ValueError(f"must be at most {format_memory(MAX_MEMORY_MB)}")
    mb = int(round(mb))
    if mb <= 0:
        raise ValueError("must be at least 1M")
    return mb


def format_memory(mb: int) -> str:
    """``16G`` when whole gibibytes, else ``500M``."""
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` for a table or a progress line (hours not padded, may exceed 24); ``-`` for None.

    Negative durations (clock skew between nodes) show as ``0:00:00``.
    """
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


_DURATION = r"(?:(\d{1,6})-)?(?:(?:(\d{1,9}):)?(\d{1,9}):)?(\d{1,9}(?:\.\d{0,9})?)"


def parse_duration_text(text: str | None) -> int | None:
    """Seconds for a duration a scheduler reports; None when there is none or it is unreadable.

    Reads Slurm's ``[D-]HH:MM:SS``, ``MM:SS`` and plain seconds (``ElapsedRaw``), PBS's
    ``HH:MM:SS`` (hours may exceed 24), and fractional seconds (``05:30.5``, truncated).
    ``UNLIMITED``, ``INVALID``, ``Partition_Limit``, ``Infinite`` and the like give None.
    Unlike :func:`parse_walltime` (a spec's walltime, where ``90`` means minutes), a bare
    number here is seconds.
    """
    if not isinstance(text, str):
        return None
    match = re.fullmatch(_DURATION, text.strip(), re.ASCII)
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(float(seconds))


def format_table(rows: list[list[str]]) -> list[str]:
    """Lines of a plain-text table: the first row is the header, columns padded to their widest
    cell, trailing spaces stripped (the one table printer: status, collect)."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))] if rows else []
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
