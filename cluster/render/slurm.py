"""Slurm: ``#SBATCH`` directives, early USR2 before the walltime, self-requeue."""

from __future__ import annotations

from cluster.render.common import EXIT_REQUEUE, JobOptions, quote
from cluster.spec import JobSpec, format_memory, format_walltime

PREFIX = "#SBATCH"


def directives(spec: JobSpec, options: JobOptions) -> list[str]:
    res = spec.resources
    out = [f"--job-name={quote(options.job_name or spec.name)}"]
    if res.queue:
        out.append(f"--partition={quote(res.queue)}")
    if res.account:
        out.append(f"--account={quote(res.account)}")
    out += [
        f"--nodes={res.nodes}",
        f"--ntasks-per-node={res.tasks_per_node}",
        f"--cpus-per-task={res.cpus_per_task}",
    ]
    if res.gpus_per_node:
        flag = spec.scheduler.slurm_gpu_flag
        if flag == "gres":
            out.append(f"--gres=gpu:{res.gpus_per_node}")
        elif flag == "gpus":
            out.append(f"--gpus={res.gpus_per_node * res.nodes}")
        else:
            out.append(f"--gpus-per-node={res.gpus_per_node}")
    if res.mem_mb:
        out.append(f"--mem={format_memory(res.mem_mb)}")
    if res.time_seconds:
        out.append(f"--time={format_walltime(res.time_seconds)}")
    if options.array:
        out.append(f"--array={quote(options.array)}")
    if options.stdout:
        out.append(f"--output={quote(options.stdout)}")
    if options.stderr:
        out.append(f"--error={quote(options.stderr)}")
    if options.dependency:
        out.append(f"--dependency=afterany:{quote(options.dependency)}")
    if options.early_signal and res.time_seconds and spec.scheduler.signal_seconds:
        target = "B:" if options.signal_batch_shell else ""
        out.append(f"--signal={target}USR2@{spec.scheduler.signal_seconds}")
    if options.requeue:
        out.append("--requeue")
        out.append("--open-mode=append")
    return out


def workdir_lines() -> list[str]:
    return []  # sbatch starts the job in the submit directory


def requeue_lines(spec: JobSpec) -> list[str]:
    limit = spec.scheduler.max_requeues
    return [
        f'if [ "$status" -eq {EXIT_REQUEUE} ]; then',
        f'    if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {limit} ]; then',
        '        echo "cluster-train: checkpointed; requeueing job $SLURM_JOB_ID" >&2',
        '        scontrol requeue "$SLURM_JOB_ID" && exit 0',
        "    fi",
        f'    echo "cluster-train: checkpointed but out of requeues ({limit});'
        ' continue with: cluster resume $RUN_DIR" >&2',
        "fi",
    ]
