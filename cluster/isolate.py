"""Start the toolkit's own Python processes so that the submit directory cannot shadow it.

``python -m MODULE`` and ``python -c CODE`` put the current directory first on ``sys.path``.
A job runs in its submit directory, so a user's ``train.py`` there (the most common name of a
training script), or a ``cluster.py``, ``yaml.py``, ``submitit.py``, would be imported instead
of the installed package — and run, with whatever it does, on the allocation.

Python 3.11 has ``-P`` (``PYTHONSAFEPATH``) for this; 3.10 has no such flag, and the job's
interpreter (``environment.python``/``venv``) may be either. So every interpreter the toolkit
starts runs a one-line bootstrap through ``-c``: it drops the current-directory entry (``''``
for ``-c``) from ``sys.path`` and then runs the module exactly as ``-m`` would
(``runpy.run_module`` with ``alter_sys``: the same ``__main__``, ``sys.argv[0]`` the module's
file). The same works on every CPython from 3.4 on, and changes nothing when ``-P`` is set.

The user's own modules are still found where the toolkit looks for them on purpose:
``train.contract.task`` appends the submit directory at the END of ``sys.path`` before it
imports a ``train.task`` module, so installed packages always win over files beside the spec.
A command job's program (``python train.py``) is the user's, started as the user would start
it: its own directory first, as usual.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from train.contract.signals import RECORD_EARLY

SAFE_PATH = "import sys; sys.path.remove('') if '' in sys.path else None"
"""Python source that removes the current directory from ``sys.path`` (``-c``'s first entry)."""

BOOTSTRAP = SAFE_PATH + "; import runpy; runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
"""``python -c BOOTSTRAP MODULE ARGS...`` runs MODULE as ``python -m MODULE ARGS...`` would,
without the current directory on ``sys.path``."""


JOB_BOOTSTRAP = SAFE_PATH + "; " + RECORD_EARLY + "; import runpy; runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
""":data:`BOOTSTRAP` for a job's own processes: first of all it records the stop signals
(USR2, TERM) that could otherwise end the job before its handlers exist
(``train.contract.signals``)."""


def module_argv(python: str, module: str, *args: str, unbuffered: bool = False) -> list[str]:
    """argv running ``python -m module args...`` with the current directory off ``sys.path``."""
    return [python, *(["-u"] if unbuffered else []), "-c", BOOTSTRAP, module, *args]


def job_command(python_word: str, module: str, *words: str, unbuffered: bool = False) -> str:
    """One shell line running ``python -m module words...`` as a process of the job itself
    (the scheduler signals it), through :data:`JOB_BOOTSTRAP`. ``python_word`` and ``words`` are
    shell words already (quoted by the caller: a spec's python may hold ``$VAR`` meant to expand
    there)."""
    flags = "-u " if unbuffered else ""
    return " ".join([f"{python_word} {flags}-c {shlex.quote(JOB_BOOTSTRAP)} {module}", *words]).rstrip()


def code_argv(python: str, code: str) -> list[str]:
    """argv running ``python -c code`` with the current directory off ``sys.path``."""
    return [python, "-c", f"{SAFE_PATH}; {code}"]


JOB_IMPORTS = ("train", "cluster", "submitit", "yaml", "numpy", "torch", "cloudpickle", "typing_extensions",
               "matplotlib", "tensorboard")
"""Top-level modules a job imports: the toolkit's own packages and their dependencies."""


def shadowing_files(directory: str | Path) -> list[Path]:
    """Files or folders in ``directory`` named like a module the job imports (``train.py``,
    ``yaml/``...). Harmless to the toolkit's processes, which start without the directory on
    ``sys.path``; but ``python -m train`` typed in that directory would import them."""
    found = []
    for name in JOB_IMPORTS:
        for candidate in (Path(directory, f"{name}.py"), Path(directory, name)):
            if candidate.is_file() or (candidate.is_dir() and candidate.suffix == "" and
                                       any(candidate.glob("*.py"))):
                found.append(candidate)
    return found
