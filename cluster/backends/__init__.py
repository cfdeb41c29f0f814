"""The scheduler backends, by kind: the only place that knows which schedulers exist.

Everything outside this package asks the registry (``get(kind)``, ``detect()``,
``for_script(name)``) and the backend it returns; nothing else compares a scheduler's name.

Adding a scheduler
------------------
Write one module with a :class:`~cluster.backends.base.Backend` subclass and register an
instance (here in ``_BUILTIN`` for a built-in one, or with :func:`register` from anywhere,
as the test suite does with a toy backend). It implements:

- ``kind`` (the name in specs, ``--executor`` and ``run.json``), ``dialects`` (names for
  ``cluster render --scheduler``), ``prefix`` (``#SBATCH``), ``detect_order``;
- ``available()``: its commands answer here;
- ``directives(spec, options, dialect)`` and, where needed, ``workdir_lines(dialect)`` and
  ``requeue_lines(spec, dialect)``: the batch script's scheduler-specific lines; the template
  (:mod:`cluster.backends.script`) does the rest;
- ``executor(spec, run_dir, array_parallelism=...)``: a submitit executor that submits the
  rendered script (see ``SlurmExecutor``);
- ``query(job_ids, records)`` -> ``{job_id: JobInfo}`` in one command, ``cancel(job_id, run)``;
- ``job_id_pattern`` when its job ids are not the built-in schedulers' digits (``1234``,
  ``1234_5``, ``1234[5].server``): run.json's ids must match it before they form a path or command;
- optionally ``continue_job`` (after a checkpointed stop; default: submitit's requeue),
  ``job_environment``, ``doctor_checks``, ``probe_submit``/``probe_state``/``inspect_hint``,
  and the class facts ``has_modules``, ``forgotten_job_is_dead``, ``runs_arrays``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cluster.backends.base import Backend, Check, JobInfo
from cluster.backends.script import JobOptions, Script, modules_init, python_for, shell_path
from cluster.errors import ClusterError

if TYPE_CHECKING:
    from cluster.backends.accounting import Usage
    from cluster.spec import JobSpec

__all__ = ["Backend", "Check", "JobInfo", "Usage", "JobOptions", "Script", "modules_init", "python_for", "shell_path", "get", "detect", "kinds", "for_script", "script_names", "register",
           "render", "render_script", "resolve"]


def __getattr__(name: str) -> Any:
    """``Usage`` on first use: only ``cluster report`` needs it, not every command that imports
    the registry (its dataclass costs a millisecond to define)."""
    if name == "Usage":
        from cluster.backends.accounting import Usage

        return Usage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_BUILTIN = {"slurm": "cluster.backends.slurm", "pbs": "cluster.backends.pbs.backend",
            "local": "cluster.backends.local"}
_REGISTERED: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Make ``backend`` available under ``backend.kind`` (replacing one of that kind)."""
    _REGISTERED[backend.kind] = backend
    return backend


def kinds() -> list[str]:
    """Every scheduler kind, in detection order (``local`` last)."""
    return sorted(set(_BUILTIN) | set(_REGISTERED), key=lambda k: (get(k).detect_order, k))


def get(kind: str) -> Backend:
    """The backend of ``kind``; a ClusterError naming the known kinds otherwise."""
    if kind not in _REGISTERED and kind in _BUILTIN:
        register(importlib.import_module(_BUILTIN[kind]).BACKEND)
    try:
        return _REGISTERED[kind]
    except (KeyError, TypeError):
        known = ", ".join(sorted(set(_BUILTIN) | set(_REGISTERED)))
        raise ClusterError(f"unknown scheduler {str(kind)[:40]!r} (known: {known})") from None


def detect() -> Backend:
    """The first backend whose commands answer here (the local one always does)."""
    for kind in kinds():
        backend = get(kind)
        if backend.available():
            return backend
    return get("local")


def resolve(kind: str) -> Backend:
    """``auto`` detected, anything else looked up."""
    return detect() if kind == "auto" else get(kind)


def script_names() -> list[str]:
    """What ``cluster render --scheduler`` accepts: each backend's kind and dialects."""
    names: list[str] = []
    for kind in kinds():
        backend = get(kind)
        for name in (kind, *backend.dialects) if backend.dialects else ():
            if name not in names:
                names.append(name)
    return names


def for_script(name: str | None, default_kind: str) -> Backend:
    """The backend that renders scripts called ``name`` (a kind or a dialect). Without a name,
    the spec's scheduler kind; a kind that renders no script of its own (``auto``, ``local``)
    gets the first scheduler's (Slurm's)."""
    name = name or default_kind
    for kind in kinds():
        backend = get(kind)
        if backend.dialects and (name == kind or name in backend.dialects):
            return backend
    return next(get(k) for k in kinds() if get(k).dialects)


def render_script(spec: JobSpec, scheduler: str | None = None, *, command: list[str] | None = None,
                  options: JobOptions | None = None) -> Script:
    """The batch script's sections for ``spec`` in the dialect ``scheduler`` names (a kind or a
    dialect; None: the spec's own scheduler)."""
    from cluster.backends.script import build_script

    backend = for_script(scheduler, spec.scheduler.kind)
    name = scheduler or spec.scheduler.kind
    dialect = backend.dialect(spec, name if name == backend.kind or name in backend.dialects else None)
    return build_script(spec, backend, dialect, command=command, options=options)


def render(spec: JobSpec, scheduler: str | None = None, *, command: list[str] | None = None,
           options: JobOptions | None = None) -> str:
    """The batch script as text (see :func:`render_script`)."""
    return render_script(spec, scheduler, command=command, options=options).text()
