"""Batch-script rendering: one module per scheduler, one shared template.

Rendering is pure: no I/O, a deterministic order, every value validated by the
spec loader and quoted here. ``render(spec, "slurm")`` gives a script a user can
submit by hand; the submit path passes its own command and per-submission
options, and gets the same directives and prologue.
"""

from __future__ import annotations

from cluster.render.common import JobOptions, Script, build_script
from cluster.render import pbspro, slurm, torque
from cluster.spec import JobSpec

SCHEDULERS = {"slurm": slurm, "pbspro": pbspro, "torque": torque}
"""Renderer modules by name; ``pbs`` means the spec's ``scheduler.pbs_flavor``."""


def scheduler_name(spec: JobSpec, scheduler: str | None) -> str:
    """Resolve ``pbs``/``None``/``auto`` against the spec into one of SCHEDULERS."""
    name = scheduler or spec.scheduler.kind
    if name == "pbs":
        return spec.scheduler.pbs_flavor
    if name in ("auto", "local"):
        return "slurm"
    return name


def render_script(spec: JobSpec, scheduler: str | None = None, *,
                  command: list[str] | None = None, options: JobOptions | None = None) -> Script:
    """The script's sections for ``scheduler`` (slurm | pbs | pbspro | torque)."""
    module = SCHEDULERS[scheduler_name(spec, scheduler)]
    return build_script(spec, module, command=command, options=options or JobOptions())


def render(spec: JobSpec, scheduler: str | None = None, *,
           command: list[str] | None = None, options: JobOptions | None = None) -> str:
    """The batch script as text."""
    return render_script(spec, scheduler, command=command, options=options).text()


__all__ = ["JobOptions", "Script", "SCHEDULERS", "render", "render_script", "scheduler_name"]
