"""Job identifiers as PBS Pro, Torque and Slurm's Torque wrapper print them.

The forms we meet:

==========================  ====================================  ============
printed                     meaning                               ``key``
==========================  ====================================  ============
``1234.server[.domain]``    PBS Pro / Torque job                  ``1234``
``1234[].server``           array job (the parent)                ``1234``
``1234[5].server``          subjob 5 of array 1234                ``1234_5``
``1234[]`` / ``1234[5]``    the same without a server suffix      as above
``13``                      Slurm's Torque-compatible ``qsub``    ``13``
``14_0``                    a Slurm array task                    ``14_0``
==========================  ====================================  ============

``key`` is the id the submitit side uses for a job (file names, watcher keys):
the number, plus ``_index`` for an array task, the way submitit's Slurm backend
names array tasks. It drops the server suffix on purpose: inside the job the
same key is rebuilt from ``PBS_JOBID`` / ``SLURM_*`` variables (see
``environment.py``), and qstat/qdel accept a job number without its server
(the default server is used).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cluster.errors import ClusterError

__all__ = ["PBSJobId", "PBSOutputError", "parse_qsub_output"]

_JOB_ID = re.compile(
    r"""^(?P<number>\d+)
        (?:\[(?P<index>\d*)\]|_(?P<slurm_task>\d+))?   # 1234[] / 1234[5] / 14_0
        (?:\.(?P<server>[A-Za-z0-9][A-Za-z0-9._-]*))?   # .server.domain
        $""",
    re.VERBOSE,
)


class PBSOutputError(ClusterError):
    """qsub or qstat printed something we cannot read; carries the text itself."""

    def __init__(self, what: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        self.text = text
        shown = text.strip()
        if len(shown) > 500:
            shown = shown[:500] + " ..."
        super().__init__(f"{what}: {shown!r}" if shown else f"{what}: (no output)")


@dataclass(frozen=True)
class PBSJobId:
    """One parsed job id.

    ``array_index`` is set for a single array task (a PBS "subjob");
    ``is_array`` marks the array parent (``1234[]``). Both are unset for a plain job.
    """

    number: int
    array_index: int | None = None
    is_array: bool = False
    server: str | None = None

    def __post_init__(self) -> None:
        if self.is_array and self.array_index is not None:
            raise ValueError("an array parent (1234[]) has no array index")

    @classmethod
    def parse(cls, text: str) -> "PBSJobId":
        """Parse one id in any of the forms in the module docstring; ValueError otherwise."""
        match = _JOB_ID.match(text.strip())
        if match is None:
            raise ValueError(f"not a PBS/Torque/Slurm job id: {text!r}")
        index = match.group("index")
        slurm_task = match.group("slurm_task")
        if slurm_task is not None:
            array_index: int | None = int(slurm_task)
        elif index:
            array_index = int(index)
        else:
            array_index = None
        return cls(
            number=int(match.group("number")),
            array_index=array_index,
            is_array=index == "",
            server=match.group("server"),
        )

    @property
    def key(self) -> str:
        """The id submitit uses for this job: ``1234``, or ``1234_5`` for an array task."""
        if self.array_index is not None:
            return f"{self.number}_{self.array_index}"
        return str(self.number)

    @property
    def parent(self) -> "PBSJobId":
        """The array parent of a subjob (``1234[5]`` -> ``1234[]``)."""
        return PBSJobId(self.number, None, True, self.server)

    def without_server(self) -> "PBSJobId":
        """The same id without its server suffix (qstat/qdel then ask the default server)."""
        return PBSJobId(self.number, self.array_index, self.is_array, None)

    def __str__(self) -> str:
        """The PBS form to hand back to qstat/qdel: ``1234``, ``1234[]``, ``1234[5].server``."""
        text = str(self.number)
        if self.is_array:
            text += "[]"
        elif self.array_index is not None:
            text += f"[{self.array_index}]"
        if self.server:
            text += f".{self.server}"
        return text


def parse_qsub_output(text: str | bytes) -> str:
    """Return the job id that ``qsub`` printed (its last non-empty stdout line).

    The id is returned as printed (``1234.server``, ``1234[].server``, ``13``);
    ``PBSJobId.parse(...)`` gives its parts and ``.key`` the submitit job id.
    Raises ``PBSOutputError`` carrying the whole output when the last line is not an id.
    """
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise PBSOutputError("qsub printed no job id", text)
    try:
        PBSJobId.parse(lines[-1])
    except ValueError:
        raise PBSOutputError("qsub did not print a job id on its last line", text) from None
    return lines[-1]
