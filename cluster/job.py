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

:class:`CommandJob` runs a command job's program instead of the trainer, with the same
attempt and requeue bookkeeping: its exit status 75 (``EXIT_REQUEUE``) is the trainer's
checkpointed stop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from cluster import backends
from cluster.errors import ClusterError
from cluster.runs import TERMINAL_STATES, Run, now_iso
from train.contract import (ATTEMPT_ENV, CHECKPOINT_DIR, CHECKPOINT_DIR_ENV, DEADLINE_ENV, EXIT_REQUEUE, RUN_DIR_ENV,
                            RunLocked, rundir, signals)
from train.contract.task_probe import isolate_task_imports


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
        signals.hold()  # until the trainer's handlers: a stop signal before them is not lost
        from cluster.spec import load_spec
        from train.trainer import Trainer  # torch is imported here, on the compute node

        check_snapshot()
        env = submitit.JobEnvironment()
        run = Run(self.run_dir)
        with isolate_task_imports(False):  # the job runs the task: its module is imported here anyway
            spec = load_spec(run.spec_path)
        backend = backends.get(run.scheduler())
        backend.job_environment(spec)
        rank = env.global_rank
        resume = Trainer.resume_point(self.run_dir)
        if rank == 0:
            backend.note_restart(run, spec, env.job_id, resume)  # a node failure before this attempt
            _start_attempt(run, env.job_id, resume)
            if not backend.allocates_gpus and spec.train.device == "auto":
                from train.device import unallocated_gpus_note

                note = unallocated_gpus_note(spec.resources.gpus_per_node)
                if note:  # auto falls back to the CPU here, legitimately, but never silently
                    _say(f"cluster-train: {note}", stderr=True)

        distributed = env.num_tasks > 1
        if distributed:
            # CUDA_VISIBLE_DEVICES stays as the scheduler set it: the trainer picks the
            # GPU of the task's local rank.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            os.environ["MASTER_ADDR"] = backend.rendezvous_address(env.hostnames[0])  # names need not resolve
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

        if rank != 0:
            sys.exit(0)
        continue_after_checkpoint(run, spec, backend, env, result.reason or "signal")


def continue_after_checkpoint(run: Run, spec: Any, backend: Any, env: Any, reason: str) -> None:
    """After a checkpointed stop (the trainer's, or a command's exit 75): make the run go on.

    On TERM the scheduler is requeuing, preempting or cancelling the job and decides what comes
    next; otherwise the job requeues or continues itself, at most ``scheduler.max_requeues``
    times. Always exits the process.
    """
    if reason == "SIGTERM":
        def stopped(record: dict[str, Any]) -> None:
            # An end recorded first stays: `cluster cancel` said so, or `cluster status` failed the
            # run while this attempt checkpointed (the local controller was killed: nothing runs
            # the job again). A requeued job's next attempt records itself as running anyway.
            if record.get("state") not in TERMINAL_STATES:
                record.update(state="requeued", stop_reason=reason)

        run.update(stopped)
        _say(f"cluster-train: stopped on {reason} with a checkpoint")
        sys.exit(0)
    record = run.read()
    if record.get("requeues", 0) >= spec.scheduler.max_requeues:
        message = (f"out of requeues ({spec.scheduler.max_requeues}); continue with: "
                   f"cluster resume {run.path}")
        run.set_state("failed", error=message, ended=now_iso())
        raise UncompletedJobError(message)
    run.set_state("requeued", stop_reason=reason)
    remaining = spec.scheduler.max_requeues - record.get("requeues", 0)
    try:
        new_job = backend.continue_job(env, run, spec, remaining,
                                       lambda line: _say(f"cluster-train: checkpointed ({reason}); {line}"))
    except (ClusterError, OSError, subprocess.CalledProcessError) as err:
        # The checkpoint is safe; only the way on is gone (sbatch/qsub refused the next job).
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        message = f"checkpointed, but the job could not continue ({detail}); continue with: cluster resume {run.path}"
        run.set_state("failed", error=message, ended=now_iso())
        _say(f"cluster-train: {message}", stderr=True)
        raise UncompletedJobError(message) from None
    if new_job:
        run.add_job(new_job, "continue")
        _say(f"cluster-train: checkpointed ({reason}); continuing as job {new_job}")
    sys.exit(0)


def check_snapshot() -> None:
    """A job submitted from a laptop (``cluster submit --host``) runs a code snapshot: its content
    hash is checked again here, where each attempt starts, so a changed file stops the job
    before it trains on code that is not what was submitted."""
    directory, digest = os.environ.get("CLUSTER_SNAPSHOT"), os.environ.get("CLUSTER_SNAPSHOT_SHA256")
    if directory and digest:
        from cluster.remote.helper import problem

        why = problem(directory, digest)
        if why:
            raise ClusterError(f"code snapshot {directory}: {why}; submit again from the laptop")


class CommandFailed(RuntimeError):
    """The command job's program ended with a status other than 0 and 75 (or by a signal)."""


class CommandJob(submitit.helpers.Checkpointable):
    """Run a command job's program (``spec.command``) in ``run_dir``, under the contract.

    The program is started as argv (no shell) in the submit directory, with CLUSTER_RUN_DIR,
    CLUSTER_CHECKPOINT_DIR, CLUSTER_DEADLINE and CLUSTER_ATTEMPT set. USR2 and TERM are
    forwarded to it (it runs in its own process group, so it gets each signal once, from
    here). Exit 0: completed. Exit 75: checkpointed, continued exactly as the trainer is
    (:func:`continue_after_checkpoint`). Anything else fails the run with the status in
    run.json; a program killed by the walltime or by a signal it does not handle says so.
    One task only: a command job that wants several ranks starts them itself.
    """

    def __init__(self, run_dir: str) -> None:
        self.run_dir = str(run_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(CommandJob(self.run_dir))

    def __call__(self) -> dict[str, Any]:
        signals.hold()  # until `forward` below: a stop signal before it is not lost
        from cluster.spec import load_spec

        check_snapshot()
        env = submitit.JobEnvironment()
        run = Run(self.run_dir)
        spec = load_spec(run.spec_path)
        backend = backends.get(run.scheduler())
        backend.job_environment(spec)
        attempt = _start_attempt(run, env.job_id, None, where="command")
        child_env = _command_environment(run, spec, attempt)
        received: list[int] = []
        children: list[subprocess.Popen] = []

        def forward(signum: int, frame: Any) -> None:  # replaces submitit's checkpoint-and-requeue
            received.append(signum)
            for child in children:  # none yet: the check below keeps the program from starting
                try:
                    child.send_signal(signum)
                except ProcessLookupError:
                    pass

        for signum in (signal.SIGUSR2, signal.SIGTERM):
            signal.signal(signum, forward)
        signals.redeliver()
        argv = spec.argv()
        if received:
            # The warning (or a TERM) came before the program started: it would have no handler
            # yet, and the signal would end it. Nothing ran, so nothing is lost: the run goes on
            # from its last checkpoint, as if the program had checkpointed and exited 75.
            reason = "SIGTERM" if signal.SIGTERM in received else "SIGUSR2"
            _say(f"cluster-train: {reason} before the command started")
            continue_after_checkpoint(run, spec, backend, env, reason)
        try:
            # Its own session: the scheduler's signals reach it once, forwarded from here. It gets
            # SIGTERM if this process dies (outside a scheduler's cgroup nothing else would stop it).
            children.append(subprocess.Popen(argv, env=child_env, start_new_session=True,
                                             preexec_fn=_die_with_parent))
        except OSError as err:
            message = f"command cannot start {argv[0]!r}: {err.strerror or err} (fix command[0] or the PATH)"
            run.set_state("failed", error=message, ended=now_iso())
            _say(f"cluster-train: {message}", stderr=True)
            raise CommandFailed(message) from None
        child = children[0]
        try:
            status = child.wait()
        except BaseException:
            child.kill()
            raise
        if status == 0:
            run.set_state("completed", ended=now_iso(), exit_status=0)
            _say("cluster-train: the command completed (exit 0)")
            return {"exit_status": 0}
        if status == EXIT_REQUEUE:
            if signal.SIGTERM in received:
                reason = "SIGTERM"
            elif signal.SIGUSR2 in received:
                reason = "SIGUSR2"
            else:
                reason = "exit 75"
            continue_after_checkpoint(run, spec, backend, env, reason)
        message = _failure_message(status, received)
        run.set_state("failed", error=message, ended=now_iso(), exit_status=status)
        _say(f"cluster-train: {message}", stderr=True)
        raise CommandFailed(message)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """SIGTERM when this process dies (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _command_environment(run: Run, spec: Any, attempt: int) -> dict[str, str]:
    """The program's environment: the job's, plus the contract's variables."""
    child_env = dict(os.environ)
    child_env[RUN_DIR_ENV] = str(run.path)
    child_env[CHECKPOINT_DIR_ENV] = str(run.path / CHECKPOINT_DIR)
    child_env[ATTEMPT_ENV] = str(attempt)
    if DEADLINE_ENV not in child_env and spec.resources.time_seconds:
        # The batch script's prologue sets it on a scheduler; the local executor has none.
        child_env[DEADLINE_ENV] = str(int(time.time()) + spec.resources.time_seconds)
    rundir.check_dir(run.path, CHECKPOINT_DIR, create=True)  # a checkpoints/ link out of the run: refused
    return child_env


def _failure_message(status: int, received: list[int]) -> str:
    """What run.json and the diagnosis say about a program that ended without 0 or 75."""
    if status < 0:
        name = signal.Signals(-status).name
        if -status in received and -status == signal.SIGUSR2:
            return (f"command killed by {name}, the walltime warning, without a checkpoint (it does not "
                    "follow the contract: handle USR2 and exit 75, or set scheduler.signal_seconds: 0)")
        if -status in received:
            return (f"command stopped by {name} without a checkpoint (walltime, requeue, preemption "
                    "or cancel; the contract: checkpoint and exit 75 on TERM)")
        return f"command killed by {name}"
    if received:
        names = "/".join(dict.fromkeys(signal.Signals(s).name for s in received))
        return f"command exited with status {status} after {names}, without a checkpoint (exit 75 means one)"
    return f"command exited with status {status}"


def _start_attempt(run: Run, job_id: str, resume: dict[str, Any] | None, where: str | None = None) -> int:
    """Record the attempt, count it as a requeue when it continues the same job, print a separator;
    the attempt's number. ``where``: the separator's last words (default: the resume point)."""
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
    if where is None:
        where = f"resuming from step {resume.get('global_step')}" if resume else "from scratch"
    line = f"===== cluster-train: attempt {number}, job {job_id} on {host}, {now_iso()}, {where} ====="
    _say(line)
    _say(line, stderr=True)
    os.environ.setdefault(RUN_DIR_ENV, str(Path(run.path)))
    os.environ[ATTEMPT_ENV] = str(number)  # the trainer's attempts.jsonl events carry it
    return number


def job_for(spec: Any, run_dir: str) -> TrainJob | CommandJob:
    """The callable that runs ``spec`` in ``run_dir``: the trainer, or a command job's program."""
    return CommandJob(run_dir) if spec.command else TrainJob(run_dir)
