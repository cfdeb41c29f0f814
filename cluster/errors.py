"""The few exception types of the toolkit; the CLI turns them into one-line messages.

``SpecError`` is the contract's (:mod:`train.contract`): the ``train:`` section is validated by
the same code on both sides.
"""

from __future__ import annotations

from train.contract import SpecError

__all__ = ["ClusterError", "SpecError", "SchedulerError"]


class ClusterError(Exception):
    """Base class: an error that the CLI reports as one line, without a traceback."""

    exit_code = 1


class SchedulerError(ClusterError):
    """A scheduler command failed: carries the command, its exit code and its own stderr."""

    def __init__(self, cmd: list[str], returncode: int, stderr: str) -> None:
        self.cmd = cmd
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(str(self))

    def __str__(self) -> str:
        detail = self.stderr.splitlines()[-1] if self.stderr else "no output"
        return f"{self.cmd[0]} failed (exit {self.returncode}): {detail}"
