"""The callable that submitit runs in the job: train, checkpoint on a signal, requeue, resume.

It is pickled on the login node, so this module must stay free of torch: the
trainer is imported inside ``__call__``, on the compute node.

Signals. submitit installs a USR2 handler that checkpoints and requeues from inside
the signal handler, i.e. at an arbitrary point of an optimizer step. We replace it
with the trainer's own handlers, which only set a flag: the trainer checkpoints at
the next step boundary and returns, and then this callable requeues the job.
- USR2 (Slurm's early warning, the local executor's timeout) and the trainer's own
  deadline: requeue, at most ``scheduler.max_requeues`` times.
- TERM (``scontrol requeue``, preemption, cancel, the walltime kill): checkpoint and
  exit; the scheduler decides what comes next.

Several tasks (``nodes x tasks_per_node > 1``): the scheduler starts one process per task
(``srun``), each runs this callable, and they train data-parallel (see
``train.distributed``). submitit's ``TorchDistributedEnvironment`` turns the scheduler's
variables into torch's (MASTER_ADDR = the first node, MASTER_PORT derived from the job
id, RANK, WORLD_SIZE, LOCAL_RANK). The ranks stop together at the same step; rank 0
alone records the run and requeues the job, the others just exit.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from cluster import backends
from cluster.runs import Run, now_iso
from train.contract import RUN_DIR_ENV, RunLocked


def _say(line: str, *, stderr: bool = False) -> None:
    """A line in the job's own log (the job's stdout is its log file; no CLI here)."""
    stream = sys.stderr if stderr else sys.stdout
    stream.write(line + "\n")
    stream.flush()


class TrainJob(submitit.helpers.Checkpointable):
    """Train the run in ``run_dir`` from its newest valid checkpoint (or from scratch)."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = str(run_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # State lives in the run directory, so the same callable resumes the run.
        return submitit.helpers.DelayedSubmission(TrainJob(self.run_dir))

    def __call__(self) -> dict[str, Any]:
        from cluster.spec import load_spec
        from train.trainer import Trainer  # torch is imported here, on the compute node

        env = submitit.JobEnvironment()
        run = Run(self.run_dir)
        spec = load_spec(run.spec_path)
        backend = backends.get(run.scheduler())
        backend.job_environment(spec)
        rank = env.global_rank
        resume = Trainer.resume_point(self.run_dir)
        if rank == 0:
            _start_attempt(run, env.job_id, resume)

        distributed = env.num_tasks > 1
        if distributed:
            # CUDA_VISIBLE_DEVICES stays as the scheduler set it: the trainer picks the
            # GPU of the task's local rank.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        trainer = Trainer(spec.train, self.run_dir, distributed=distributed)
        trainer.install_signal_handlers()
        try:
            result = trainer.run()
        except RunLocked as err:
            # Another trainer is at work on this run (e.g. an orphan of a killed job): this
            # attempt did nothing, and the run is not failed by it.
            if rank == 0:
                run.update(lambda record: record["attempts"][-1].update(refused=str(err)))
            _say(f"cluster-train: {err}", stderr=True)
            raise
        except BaseException as err:
            if rank == 0 and not isinstance(err, SystemExit):
                run.set_state("failed", error=f"{type(err).__name__}: {err}".splitlines()[0], ended=now_iso())
            raise
        if result.status == "completed":
            if rank == 0:
                run.set_state("completed", ended=now_iso())
            return result.summary

        reason = result.reason or "signal"
        if rank != 0:
            sys.exit(0)
        if reason == "SIGTERM":
            # The scheduler is requeuing, preempting or cancelling us: it decides what comes next.
            def stopped(record: dict[str, Any]) -> None:
                if record.get("state") != "cancelled":  # `cluster cancel` said so first
                    record.update(state="requeued", stop_reason=reason)

            run.update(stopped)
            _say(f"cluster-train: stopped on {reason} with a checkpoint")
            sys.exit(0)
        record = run.read()
        if record.get("requeues", 0) >= spec.scheduler.max_requeues:
            message = (f"out of requeues ({spec.scheduler.max_requeues}); continue with: "
                       f"cluster resume {self.run_dir}")
            run.set_state("failed", error=message, ended=now_iso())
            raise UncompletedJobError(message)
        run.set_state("requeued", stop_reason=reason)
        remaining = spec.scheduler.max_requeues - record.get("requeues", 0)
        if backend.continues_in_new_job:
            new_job = backend.continue_job(env, run, remaining)
            run.add_job(new_job, "continue")
            _say(f"cluster-train: checkpointed ({reason}); continuing as job {new_job}")
        else:
            _say(f"cluster-train: checkpointed ({reason}); requeueing job {env.job_id}")
            backend.continue_job(env, run, remaining)
        sys.exit(0)


def _start_attempt(run: Run, job_id: str, resume: dict[str, Any] | None) -> None:
    """Record the attempt, count it as a requeue when it continues the same job, print a separator."""
    host = socket.gethostname()

    def change(record: dict[str, Any]) -> None:
        attempts = record.setdefault("attempts", [])
        jobs = record.get("jobs") or []
        first_of_job = not any(a["job_id"] == str(job_id) for a in attempts)
        by_resume = bool(jobs) and jobs[-1].get("reason") == "resume" and first_of_job
        if attempts and not by_resume:
            record["requeues"] = record.get("requeues", 0) + 1
        attempts.append({"job_id": str(job_id), "started": now_iso(), "host": host,
                         "resumed_from_step": resume.get("global_step") if resume else None})
        if not (jobs and jobs[-1].get("cancelled")):  # `cluster cancel` got there first
            record["state"] = "running"
        record.pop("stop_reason", None)

    record = run.update(change)
    number = len(record["attempts"])
    where = f"resuming from step {resume.get('global_step')}" if resume else "from scratch"
    line = f"===== cluster-train: attempt {number}, job {job_id} on {host}, {now_iso()}, {where} ====="
    _say(line)
    _say(line, stderr=True)
    os.environ.setdefault(RUN_DIR_ENV, str(Path(run.path)))
