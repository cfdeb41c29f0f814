"""PBS Pro / OpenPBS: resources as one chunk spec, ``-l select=N:ncpus=C:ngpus=G:mem=M``."""

from __future__ import annotations

from cluster.render.common import JobOptions, quote
from cluster.render.pbs_common import PREFIX, head, pbs_memory, requeue_lines, tail, workdir_lines
from cluster.spec import JobSpec

__all__ = ["PREFIX", "directives", "requeue_lines", "workdir_lines"]


def directives(spec: JobSpec, options: JobOptions) -> list[str]:
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
