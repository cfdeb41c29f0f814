"""A user's task module imported in a process of its own, for `cluster check`, `render`, `submit`.

Importing a module runs its code. On the login node that code must not be able to end the
command (`SystemExit`, `os._exit`), hang it, write into its output (a `print()` in `render`
would land inside the batch script) or leave a process behind. So the login path imports a
task that is not one of ours (`train.tasks.*` are imported in-process, see
`train.contract.task.is_builtin_task`) in a subprocess, and asks it to validate the options:

- the subprocess is started with `python -c`, the current directory removed from the front of
  `sys.path` and this process's path given to it (so `resolve_task` puts the submit directory
  where it does in-process: the toolkit's own packages win);
- its stdout and stderr are files of its own that never reach this process's output; anything
  it writes to stdout while imported is refused (one line), and so is a process still running
  when the import ends (it becomes a subreaper, so even a daemon that double-forked is its child);
- a "reaper" parent inside the subprocess waits for it, then kills every process left under it,
  so that whatever the module started ends with it;
- the import, and each validation, has a time bound: `CLUSTER_TASK_IMPORT_TIMEOUT` seconds
  (default 20), after which the whole tree is killed and the command ends in one line.

Requests and answers are JSON lines over private pipes. This module says where a task is
imported (:func:`isolate_task_imports`, :func:`find_task`); the probe process, from this side, is
:mod:`train.contract.task_probe_process`, imported when a probe starts: a spec whose task is ours
(the usual case) costs its command no subprocess, select or threading import. Standard library only.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from train.contract.task import build_options, is_builtin_task, is_task_ref, resolve_task

_ISOLATE: contextvars.ContextVar[bool | None] = contextvars.ContextVar("isolate_task_imports", default=None)


@contextlib.contextmanager
def isolate_task_imports(enabled: bool = True, *, unless_set: bool = False) -> Iterator[None]:
    """Within this block (this thread's context), :func:`find_task` imports a task module that
    is not ours in a subprocess (a :class:`~train.contract.task_probe_process.TaskProbe`) rather
    than here. The login commands' spec loader turns it on (``unless_set``: unless a caller chose
    already); a job, which runs the task anyway, turns it off."""
    if unless_set and _ISOLATE.get() is not None:
        yield
        return
    token = _ISOLATE.set(enabled)
    try:
        yield
    finally:
        _ISOLATE.reset(token)


def find_task(ref: Any, key: str = "train.task") -> Any:
    """The task class (:func:`resolve_task`), or, while imports are isolated and the task is not
    ours, the probe that imported it in a subprocess (a ``TaskProbe``);
    pass either to :func:`task_options`."""
    if _ISOLATE.get() and is_task_ref(ref) and not is_builtin_task(ref):
        from train.contract.task_probe_process import probe_for

        return probe_for(ref, key)
    return resolve_task(ref, key)


def task_options(task: Any, given: Any, prefix: str = "train.options") -> Any:
    """:func:`build_options` for a class from :func:`find_task`; for a probe, the options as the
    task validated them there (a :class:`CheckedOptions`, or None for a task without options)."""
    if isinstance(task, type):
        return build_options(task, given, prefix)
    return task.options(given, prefix)
