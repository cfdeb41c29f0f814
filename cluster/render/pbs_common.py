"""What PBS Pro and Torque share: ``#PBS`` directives for name, queue, account, walltime, output."""

from __future__ import annotations

from cluster.render.common import EXIT_REQUEUE, JobOptions, quote
from cluster.spec import JobSpec, format_walltime

PREFIX = "#PBS"


def head(spec: JobSpec, options: JobOptions) -> list[str]:
    res = spec.resources
    out = [f"-N {quote(options.job_name or spec.name)}"]
    if res.queue:
        out.append(f"-q {quote(res.queue)}")
    if res.account:
        out.append(f"-A {quote(res.account)}")
    return out


def tail(spec: JobSpec, options: JobOptions) -> list[str]:
    out = []
    if spec.resources.time_seconds:
        out.append(f"-l walltime={format_walltime(spec.resources.time_seconds)}")
    # PBS does not expand a job-id placeholder here; the submit path passes -o/-e on qsub's command line.
    if options.stdout:
        out.append(f"-o {quote(options.stdout)}")
    if options.stderr:
        out.append(f"-e {quote(options.stderr)}")
    if options.dependency:
        out.append(f"-W depend=afterany:{quote(options.dependency)}")
    return out


def pbs_memory(mb: int) -> str:
    return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"


def workdir_lines() -> list[str]:
    # PBS starts jobs in $HOME; relative paths in the spec mean the submit directory.
    return ['if [ -n "${PBS_O_WORKDIR:-}" ]; then cd "$PBS_O_WORKDIR"; fi']


def requeue_lines(spec: JobSpec) -> list[str]:
    return [
        f'if [ "$status" -eq {EXIT_REQUEUE} ]; then',
        '    echo "cluster-train: checkpointed before the walltime; continue with:'
        ' qsub -v CLUSTER_RUN_DIR=$RUN_DIR <this script>, or: cluster resume $RUN_DIR" >&2',
        "fi",
    ]
