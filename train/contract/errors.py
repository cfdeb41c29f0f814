"""The error of the run-directory layer, in a module of its own: a command catches it without
importing that layer (:mod:`train.contract.rundir`, which raises it and exports it too).
Standard library only.
"""

from __future__ import annotations

from pathlib import Path


class RunFileError(Exception):
    """A file or folder of a run directory that is not what it must be: ``path: problem``."""

    exit_code = 1

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.problem)
