"""What every backend shares: the job facts a scheduler reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class JobInfo:
    """What the scheduler says about one job."""

    state: str
    raw_state: str = ""
    exit_code: str = ""
    elapsed_seconds: int | None = None
    reason: str = ""
