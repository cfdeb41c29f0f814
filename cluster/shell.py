"""The one place that runs scheduler commands."""

from __future__ import annotations

import shutil
import subprocess

from cluster.errors import SchedulerError


def run(cmd: list[str], *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a scheduler command; on failure raise SchedulerError with its own stderr."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SchedulerError(cmd, 127, f"{cmd[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(cmd, 124, f"no answer within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise SchedulerError(cmd, proc.returncode, proc.stderr or proc.stdout)
    return proc


def answers(cmd: list[str], timeout: float = 10) -> bool:
    """True when the command exists and exits 0 within ``timeout``."""
    if shutil.which(cmd[0]) is None:
        return False
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def slurm_answers() -> bool:
    return answers(["sinfo", "-h", "-o", "%P"])


def pbs_answers() -> bool:
    """A real PBS server (not Slurm's qstat wrapper): ``qstat -B`` lists servers only on PBS."""
    return not slurm_answers() and answers(["qstat", "-B"])


def detect_scheduler() -> str:
    """``slurm`` when its commands answer, ``pbs`` when a real PBS answers, else ``local``."""
    if slurm_answers():
        return "slurm"
    if answers(["qstat", "-B"]):
        return "pbs"
    return "local"
