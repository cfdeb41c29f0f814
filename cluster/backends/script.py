"""The one batch-script template every backend fills: shebang, directives, prologue, command,
epilogue.

Rendering is pure: no I/O, a deterministic order, every value validated by the spec loader
and quoted here. A backend supplies its directive prefix and lines, the lines that move into
the submit directory, and its answer to the trainer's ``EXIT_REQUEUE``; everything else (module
loads, TMPDIR, the environment, the deadline, the trainer's command) is the same for all.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cluster.isolate import job_command
from train.contract import ATTEMPT_ENV, CHECKPOINT_DIR, CHECKPOINT_DIR_ENV, DEADLINE_ENV, RUN_DIR_ENV, SPEC_FILE
from train.contract.record import Record

if TYPE_CHECKING:
    from cluster.backends.base import Backend
    from cluster.spec import JobSpec

EXIT_SETUP_FAILED = 3
"""Exit status of a script whose environment setup (a module load, TMPDIR) failed."""


@dataclass(frozen=True, eq=False, repr=False)
class JobOptions(Record):
    """Per-submission settings that are not part of the spec."""

    job_name: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    array: str | None = None
    """Array range, e.g. ``0-3%2`` (Slurm), ``0-3`` (PBS Pro -J / Torque -t)."""
    dependency: str | None = None
    """Job id that must end first (PBS continuation jobs)."""
    early_signal: bool = True
    """Ask Slurm for USR2 before the walltime (``--signal``)."""
    signal_batch_shell: bool = True
    """Signal the batch shell (standalone script) rather than the job step (srun)."""
    requeue: bool = True
    extra_env: tuple[tuple[str, str], ...] = ()
    """Variables exported before the command (the submit path passes run-directory facts)."""


@dataclass(frozen=True, eq=False, repr=False)
class Script(Record):
    """A rendered batch script, kept in sections so that tests can compare them."""

    directives: list[str]
    prologue: list[str]
    command: list[str]
    epilogue: list[str] = field(default_factory=list)
    shebang: str = "#!/bin/bash"

    def text(self) -> str:
        parts = [[self.shebang], self.directives, self.prologue, self.command, self.epilogue]
        return "\n\n".join("\n".join(p) for p in parts if p) + "\n"


def quote(value: object) -> str:
    """Quote one value for a directive or a shell word (values are validated by the spec loader)."""
    return shlex.quote(str(value))


def shell_path(path: str) -> str:
    """A path for a double-quoted shell word: ``$VAR``/``${VAR}`` expand, nothing else does.

    The spec loader already refused quotes, backslashes, backticks and ``$(``, so
    double quotes are enough. A leading ``~`` becomes ``$HOME`` (no tilde expansion in quotes).
    """
    if path == "~" or path.startswith("~/"):
        path = "$HOME" + path[1:]
    return f'"{path}"'


def directive_name(line: str) -> str:
    """``--mem=16G`` -> ``--mem``; ``-l walltime=1:00:00`` -> ``-l walltime``; ``-q gpu`` -> ``-q``."""
    line = line.strip()
    if line.startswith("--"):
        return line.split("=", 1)[0].split()[0]
    head, _, rest = line.partition(" ")
    if head == "-l" and rest:
        return "-l " + rest.split("=", 1)[0].split(":", 1)[0]
    return head


def _skipped(line: str, skip: tuple[str, ...]) -> bool:
    name = directive_name(line)
    wanted = {s.strip() for s in skip}
    return name in wanted or name.lstrip("-") in wanted or name.split(" ", 1)[-1] in wanted


def modules_init() -> list[str]:
    """Make ``module`` available in a non-login batch shell (sites differ in where it lives)."""
    return [
        "if ! type module >/dev/null 2>&1; then",
        "    for init in /etc/profile.d/modules.sh /usr/share/modules/init/bash \\",
        '                \"${MODULESHOME:-/usr/share/modules}/init/bash\" /etc/profile.d/lmod.sh; do',
        '        if [ -r "$init" ]; then . "$init"; break; fi',
        "    done",
        "fi",
    ]


def prologue(spec: JobSpec, backend: Backend, dialect: str, options: JobOptions) -> list[str]:
    env = spec.environment
    lines = ["# --- environment (rendered by cluster-train)"]
    lines += backend.workdir_lines(dialect)
    if env.modules:
        lines += modules_init()
        for name in env.modules:
            # Fail fast: a job that silently trains on CPU because CUDA did not load is the worst outcome.
            lines.append(
                f"module load {quote(name)} || {{ echo \"cluster-train: 'module load {name}' failed;"
                f" stopping before training (fix environment.modules)\" >&2; exit {EXIT_SETUP_FAILED}; }}"
            )
    if env.venv:
        lines += venv_activation(env.venv)
    if env.tmpdir:
        lines.append(f"export TMPDIR={shell_path(env.tmpdir)}")
        lines.append(
            'mkdir -p "$TMPDIR" || { echo "cluster-train: cannot create TMPDIR=$TMPDIR'
            f' (fix environment.tmpdir)\" >&2; exit {EXIT_SETUP_FAILED}; }}'
        )
    for name, value in env.env:
        lines.append(f"export {name}={shell_path(value)}")
    if spec.resources.time_seconds:
        # The trainer checkpoints before this moment; PBS gives no early warning.
        lines.append(f"export {DEADLINE_ENV}=$(( $(date +%s) + {spec.resources.time_seconds} ))")
    for name, value in options.extra_env:
        lines.append(f"export {name}={quote(value)}")
    if env.setup:
        lines.append("# setup lines from the spec (trusted input, run as written)")
        lines += list(env.setup)
    return lines


def standalone_command(spec: JobSpec, backend: Backend, dialect: str) -> list[str]:
    """Run ``python -m train`` (or a command job's program) on a copy of the resolved spec
    embedded in the script."""
    python = shell_path(spec.environment.python) if spec.environment.python else "python3"
    runs_dir = shell_path(spec.output.runs_dir)[1:-1]
    spec_yaml = spec.to_yaml().rstrip("\n")
    if spec.command:
        # The program's argv, one quoted word per item: no shell reads what is inside. exec
        # runs command[0] as a program (never a function, builtin or keyword), as the local
        # executor's execvp does; in the background it replaces the forked shell, so $! is it.
        run = [
            f'export {RUN_DIR_ENV}="$RUN_DIR"',
            f'export {CHECKPOINT_DIR_ENV}="$RUN_DIR/{CHECKPOINT_DIR}"',
            f'mkdir -p "${CHECKPOINT_DIR_ENV}"',
            f'export {ATTEMPT_ENV}=$(( ${{SLURM_RESTART_COUNT:-0}} + 1 ))',
            "exec -- " + " ".join(quote(arg) for arg in spec.argv()) + " &",
        ]
        forward = "# Forward the scheduler's warning and TERM to the program (the contract: checkpoint, exit 75)."
    else:
        # Not `python -m train`: that puts the submit directory first on sys.path, where a
        # user's train.py would be imported instead of the toolkit (cluster.isolate).
        run = [job_command(python, "train", f'--config "$RUN_DIR/{SPEC_FILE}"', '--run-dir "$RUN_DIR"') + " &"]
        forward = "# Forward the scheduler's warning to the trainer, which checkpoints at the next step."
    return [
        "# --- run: the resolved spec travels inside this script",
        'JOB_ID="${SLURM_JOB_ID:-${PBS_JOBID:-$$}}"',
        'JOB_ID="${JOB_ID%%.*}"',
        f'RUN_DIR="${{{RUN_DIR_ENV}:-{runs_dir}/{spec.name}-$JOB_ID}}"',
        'mkdir -p "$RUN_DIR"',
        f'if [ ! -e "$RUN_DIR/{SPEC_FILE}" ]; then',
        f"cat > \"$RUN_DIR/{SPEC_FILE}\" <<'CLUSTER_TRAIN_SPEC'",
        spec_yaml,
        "CLUSTER_TRAIN_SPEC",
        "fi",
        *run,
        "child=$!",
        forward,
        "trap 'kill -USR2 \"$child\" 2>/dev/null' USR2 TERM",
        'wait "$child"; status=$?',
        'while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done',
    ] + backend.requeue_lines(spec, dialect)


def build_script(spec: JobSpec, backend: Backend, dialect: str, *, command: list[str] | None = None,
                 options: JobOptions | None = None) -> Script:
    """The script's sections: ``command`` replaces the standalone trainer command (the submit
    path passes submitit's entrypoint)."""
    options = options or JobOptions()
    directives = backend.directives(spec, options, dialect)
    extra = list(spec.scheduler.extra_directives)
    kept = [d for d in directives if not _skipped(d, spec.scheduler.skip_directives)]
    directive_lines = [f"{backend.prefix} {d}" for d in kept + extra]
    body = command if command is not None else standalone_command(spec, backend, dialect)
    epilogue = [] if command is not None else ['exit "$status"']
    return Script(directives=directive_lines, prologue=prologue(spec, backend, dialect, options),
                  command=body, epilogue=epilogue)


def venv_activation(venv: str) -> list[str]:
    """Activate ``environment.venv`` after the module loads (whose Python it may be built on).

    What ``bin/activate`` does, written out: ``VIRTUAL_ENV`` and ``PATH`` (so ``python3`` and
    the venv's scripts come first), ``PYTHONHOME`` unset. Sourcing ``activate`` would instead
    take the path it was created at, and a venv that moved would silently use another one.
    Its ``bin/python`` is run once first, so that a missing venv, or one whose base Python is
    gone (a module not loaded, a different node image), stops the job with one line and
    :data:`EXIT_SETUP_FAILED`, in the same form as a failed ``module load``.
    """
    return [
        f"export VIRTUAL_ENV={shell_path(venv.rstrip('/') or '/')}",
        "if [ -f \"$VIRTUAL_ENV/pyvenv.cfg\" ] && \"$VIRTUAL_ENV/bin/python\" -c '' 2>/dev/null; then",
        '    export PATH="$VIRTUAL_ENV/bin:$PATH"; unset PYTHONHOME',
        "else",
        "    echo \"cluster-train: 'activate venv $VIRTUAL_ENV' failed; stopping before training"
        f' (fix environment.venv, or build it: cluster env SPEC)" >&2; exit {EXIT_SETUP_FAILED}',
        "fi",
    ]


def python_for(spec: JobSpec) -> str:
    """The one rule for the compute node's interpreter: ``environment.venv``'s ``bin/python``,
    else ``environment.python``, else the one running ``cluster`` (the same environment, on a
    shared filesystem). As written in the spec: ``$VAR`` and ``~`` are not expanded here."""
    import sys

    if spec.environment.venv:
        return spec.environment.venv.rstrip("/") + "/bin/python"
    return spec.environment.python or sys.executable


def python_word(spec: JobSpec) -> str:
    """:func:`python_for` as one shell word for a job script: a spec's path double-quoted (its
    ``$VAR`` and ``~`` expand on the node), the login node's interpreter single-quoted."""
    if spec.environment.venv or spec.environment.python:
        return shell_path(python_for(spec))
    return quote(python_for(spec))
