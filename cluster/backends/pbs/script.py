"""``#PBS`` directives for PBS Pro (``-l select=N:ncpus=C:ngpus=G:mem=M``, arrays with ``-J``) and
Torque (``-l nodes=N:ppn=C:gpus=G`` and ``-l mem=``, arrays with ``-t``); the rest is shared."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluster.backends.script import JobOptions, quote
from cluster.units import format_walltime
from train.contract import EXIT_REQUEUE

if TYPE_CHECKING:
    from cluster.spec import JobSpec

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


def pbspro_directives(spec: JobSpec, options: JobOptions) -> list[str]:
    res = spec.resources
    chunk = [str(res.nodes), f"ncpus={res.tasks_per_node * res.cpus_per_task}"]
    if res.gpus_per_node:
        chunk.append(f"ngpus={res.gpus_per_node}")
    if res.mem_mb:
        chunk.append(f"mem={pbs_memory(res.mem_mb)}")
    chunk.append(f"mpiprocs={res.tasks_per_node}")
    out = head(spec, options) + [f"-l select={':'.join(chunk)}"]
    if res.nodes > 1:
        out.append("-l place=scatter")
    if options.array:
        out.append(f"-J {quote(options.array)}")
    return out + tail(spec, options)


def torque_directives(spec: JobSpec, options: JobOptions) -> list[str]:
    res = spec.resources
    nodes = f"-l nodes={res.nodes}:ppn={res.tasks_per_node * res.cpus_per_task}"
    if res.gpus_per_node:
        nodes += f":gpus={res.gpus_per_node}"
    out = head(spec, options) + [nodes]
    if res.mem_mb:
        out.append(f"-l mem={pbs_memory(res.mem_mb * res.nodes)}")
    if options.array:
        out.append(f"-t {quote(options.array)}")
    return out + tail(spec, options)


DIRECTIVES = {"pbspro": pbspro_directives, "torque": torque_directives}


class PBSScripts:
    """What the script template needs of PBS (the backend adds submission and state)."""

    prefix = PREFIX
    dialects = ("pbspro", "torque")

    def dialect(self, spec: JobSpec, name: str | None) -> str:
        return spec.scheduler.pbs_flavor if name in (None, "pbs") else name

    def directives(self, spec: JobSpec, options: JobOptions, dialect: str) -> list[str]:
        return DIRECTIVES[dialect](spec, options)

    def workdir_lines(self, dialect: str) -> list[str]:
        return workdir_lines()

    def requeue_lines(self, spec: JobSpec, dialect: str) -> list[str]:
        return requeue_lines(spec)


SCRIPTS = PBSScripts()
