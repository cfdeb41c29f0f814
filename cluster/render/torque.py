"""Torque: ``-l nodes=N:ppn=C:gpus=G`` and ``-l mem=``, arrays with ``-t``."""

from __future__ import annotations

from cluster.render.common import JobOptions, quote
from cluster.render.pbs_common import PREFIX, head, pbs_memory, requeue_lines, tail, workdir_lines
from cluster.spec import JobSpec

__all__ = ["PREFIX", "directives", "requeue_lines", "workdir_lines"]


def directives(spec: JobSpec, options: JobOptions) -> list[str]:
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
