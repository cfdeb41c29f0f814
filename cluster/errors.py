"""The few exception types of the toolkit; the CLI turns them into one-line messages."""

from __future__ import annotations


class ClusterError(Exception):
    """Base class: an error that the CLI reports as one line, without a traceback."""

    exit_code = 1


class SpecError(ClusterError):
    """A mistake in a job spec or an override: names the file and the dotted key."""

    exit_code = 2

    def __init__(self, key: str, message: str, file: str | None = None) -> None:
        self.key = key
        self.message = message
        self.file = file
        super().__init__(str(self))

    def with_file(self, file: str) -> "SpecError":
        return SpecError(self.key, self.message, self.file or file)

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join(parts + [self.message])


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
