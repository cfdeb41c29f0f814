"""Stop signals that arrive before a job's own handlers exist.

Slurm may send its walltime warning (``--signal``) up to a minute earlier than asked, so on a
short walltime it can come while the job's Python is still importing; a preemption's or a
requeue's SIGTERM can come at any time. The default action of both is to end the process: the
attempt is lost without a checkpoint, and the run fails.

So a job's processes start with a bootstrap (``cluster.isolate.JOB_BOOTSTRAP``) whose first act,
:data:`RECORD_EARLY`, is to record USR2 and TERM instead. :func:`hold` records them again over
submitit's own handlers, which the job's entry point replaces; once the handlers that act on
them are in place, :func:`redeliver` raises each recorded signal once more, for them.
"""

from __future__ import annotations

import signal
import sys
import types

MODULE = "_cluster_early_signals"
"""The in-memory module (in ``sys.modules``) whose ``received`` list holds the recorded signals."""

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

RECORD_EARLY = (
    "import signal, types; "
    f"early = sys.modules.setdefault({MODULE!r}, types.ModuleType({MODULE!r})); early.received = []; "
    "[signal.signal(s, lambda n, f, r=early.received: r.append(n)) for s in "
    f"({', '.join(f'signal.{s.name}' for s in STOP_SIGNALS)})]"
)
"""Python source (after ``import sys``) that does what :func:`hold` does, for a bootstrap that has
imported nothing yet: records :data:`STOP_SIGNALS` in ``sys.modules[MODULE].received``."""


def _received() -> list[int]:
    early = sys.modules.get(MODULE)
    if early is None or not isinstance(getattr(early, "received", None), list):
        early = types.ModuleType(MODULE)
        early.received = []  # type: ignore[attr-defined]
        sys.modules[MODULE] = early
    return early.received  # type: ignore[attr-defined,no-any-return]


def hold() -> None:
    """Record USR2 and TERM (instead of acting on them) until :func:`redeliver`. Main thread only."""
    received = _received()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda n, f, r=received: r.append(n))


def redeliver() -> None:
    """Raise again, once each and in order, the signals recorded since the process started.
    Call it right after installing the handlers that act on them (main thread only)."""
    received = _received()
    pending = list(dict.fromkeys(received))
    received.clear()
    for signum in pending:
        signal.raise_signal(signum)
