"""Slurm: ``#SBATCH`` directives, early USR2 before the walltime, self-requeue; the submitit
executor that submits our script (:mod:`cluster.backends.slurm_executor`, imported only to submit:
submitit takes a tenth of a second to import); ``sacct``/``scontrol`` queries; ``scancel``;
doctor checks."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cluster.backends.base import Backend, Check, JobInfo, answers, carry_submission, ids_of, run_command
from cluster.backends.script import JobOptions, quote
from cluster.errors import SchedulerError
from cluster.units import format_memory, format_walltime, parse_duration_text
from train.contract import EXIT_REQUEUE, LOGS_DIR, PROGRESS_FILE, RUN_DIR_ENV
from train.contract.errors import RunFileError

if TYPE_CHECKING:
    from cluster.backends.accounting import Usage
    from cluster.runs import Run
    from cluster.spec import JobSpec

PREFIX = "#SBATCH"
COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol")
CONTINUATIONS_ENV = "CLUSTER_CONTINUATIONS"
"""How many links of a dependency chain came before this job (the standalone script's count)."""

SLURM_STATES = {
    "PENDING": "pending", "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running",
    "RESIZING": "running", "SUSPENDED": "pending", "STOPPED": "pending",
    "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued", "REQUEUE_FED": "requeued", "PREEMPTED": "requeued",
    "COMPLETED": "completed", "FAILED": "failed", "TIMEOUT": "timeout", "DEADLINE": "timeout",
    "CANCELLED": "cancelled", "OUT_OF_MEMORY": "out-of-memory", "NODE_FAIL": "node-fail", "BOOT_FAIL": "node-fail",
}


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
        elif flag == "gpus" and res.nodes == 1:
            out.append(f"--gpus={res.gpus_per_node}")
        else:
            # Also for `gpus` on several nodes: a job-wide --gpus=N may be split unevenly
            # over the nodes, leaving a task without its GPU; --gpus-per-node (same Slurm
            # release, 19.05) says the per-node count the trainer relies on.
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
    """The standalone script's continuation after a checkpointed stop (exit 75).

    ``continuation: requeue`` tries ``scontrol requeue`` first; where the site refuses it, and
    always for ``chain``, the script submits itself again (``$0``, Slurm's copy of the batch
    script, read by sbatch at once) to start after this job ends. Both count against
    ``max_requeues``: SLURM_RESTART_COUNT counts requeues, CLUSTER_CONTINUATIONS links of the
    chain (``env -u`` keeps this job's restart count out of the new job).
    """
    limit = spec.scheduler.max_requeues
    lines = [
        f'if [ "$status" -eq {EXIT_REQUEUE} ]; then',
        f'    if [ $(( ${{SLURM_RESTART_COUNT:-0}} + ${{{CONTINUATIONS_ENV}:-0}} )) -ge {limit} ]; then',
        f'        echo "cluster-train: checkpointed but out of requeues ({limit}); continue with: cluster resume $RUN_DIR" >&2',
        "    else",
    ]
    if spec.scheduler.continuation == "requeue":
        lines += [
            '        echo "cluster-train: checkpointed; requeueing job $SLURM_JOB_ID" >&2',
            '        scontrol requeue "$SLURM_JOB_ID" && exit 0',
            '        echo "cluster-train: scontrol requeue refused; continuing through a dependency chain" >&2',
        ]
    lines += [
        f'        next=$(env -u SLURM_RESTART_COUNT {CONTINUATIONS_ENV}=$(( ${{{CONTINUATIONS_ENV}:-0}} + 1 ))'
        f' {RUN_DIR_ENV}="$RUN_DIR" sbatch --parsable --dependency=afterany:"$SLURM_JOB_ID"'
        ' ${SLURM_ARRAY_TASK_ID:+--array=$SLURM_ARRAY_TASK_ID} "$0") &&',
        '            { echo "cluster-train: checkpointed; continuing as job ${next%%;*}" >&2; exit 0; }',
        '        echo "cluster-train: checkpointed, but no continuation could be submitted;'
        ' continue with: cluster resume $RUN_DIR" >&2',
        "    fi",
        "fi",
    ]
    return lines


# ---------------------------------------------------------------- state


def _slurm_state(raw: str) -> str:
    word = raw.split()[0].rstrip("+") if raw.strip() else ""
    return SLURM_STATES.get(word, "unknown")


WAITING = ("pending", "requeued")
"""States in which a job waits for the scheduler, which may say why and until when."""


def _word(text: str) -> str:
    """Slurm's reason text, '' where it says there is none (``None``, ``(null)``)."""
    text = text.strip()
    return "" if text in ("None", "(null)", "N/A") else text


def _estimate(text: str) -> str:
    """A start estimate as Slurm prints it (``2026-12-02T16:06:01``); '' for ``N/A``,
    ``Unknown`` or anything else that is not a time."""
    text = text.strip()
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return ""
    return text


def _array_record(job_id: str) -> tuple[str, str] | None:
    """(parent, ranges) of the record Slurm keeps for an array's tasks that have not started:
    ``7_[0-3,5]`` -> ('7', '0-3,5'); the ``%N`` throttle is dropped. None for any other id."""
    parent, sep, tasks = job_id.partition("_")
    if not sep or not tasks.startswith("[") or not tasks.endswith("]"):
        return None
    return parent, tasks[1:-1].split("%")[0]


def _covers(ranges: str, task: str) -> bool:
    """Array task ``task`` is one of ``ranges`` (``0-3,5``, ``1-15:2``)."""
    if not task.isdigit():
        return False
    n = int(task)
    for part in ranges.split(","):
        span, _, step = part.partition(":")
        low, _, high = span.partition("-")
        if not (low.isdigit() and (high or low).isdigit() and (step or "1").isdigit()):
            continue
        first, last, every = int(low), int(high or low), max(1, int(step or 1))
        if first <= n <= last and (n - first) % every == 0:
            return True
    return False


def _for_ids(found: dict[str, JobInfo], ids: list[str]) -> dict[str, JobInfo]:
    """``found``, plus each asked array task that Slurm lists only inside its array's record
    of tasks not started yet (``7_[0-3]`` answers for ``7_2``), under the task's own id."""
    out = dict(found)
    records = [(rec, info) for key, info in found.items() if (rec := _array_record(key))]
    for job_id in ids:
        parent, sep, task = job_id.partition("_")
        if job_id in out or not sep:
            continue
        for (array, ranges), info in records:
            if array == parent and _covers(ranges, task):
                out[job_id] = replace(info)
                break
    return out


def _parse_sacct(text: str) -> dict[str, JobInfo]:
    """``sacct -P -o JobID,State,ExitCode,ElapsedRaw,Reason`` lines. sacct's Reason is
    ``None`` for a waiting job (slurmdbd is not told why it waits): squeue says."""
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5:
            continue
        job_id, raw, exit_code, elapsed, reason = fields[:5]
        jobs[job_id] = JobInfo(state=_slurm_state(raw), raw_state=raw, exit_code=exit_code,
                               elapsed_seconds=int(elapsed) if elapsed.isdigit() else None, reason=_word(reason))
    return jobs


def _parse_squeue_start(text: str) -> dict[str, JobInfo]:
    """``squeue --start -o '%i|%S|%r'`` lines: why each waiting job waits and the scheduler's
    start estimate (``N/A`` when it has none)."""
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = line.strip().split("|", 2)
        if len(fields) == 3 and fields[0]:
            jobs[fields[0]] = JobInfo(state="pending", reason=_word(fields[2]), start_estimate=_estimate(fields[1]))
    return jobs


def _parse_scontrol(text: str) -> dict[str, JobInfo]:
    """``scontrol show job -o`` lines; a waiting job's StartTime is the scheduler's estimate."""
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        # Values may hold spaces (Reason=ReqNodeNotAvail, UnavailableNodes:n1): split before each " Key=".
        items = re.split(r" (?=[A-Za-z][A-Za-z0-9_:/]*=)", line.strip())
        fields = dict(item.split("=", 1) for item in items if "=" in item)
        if "JobId" not in fields:
            continue
        job_id = fields["JobId"]
        task = fields.get("ArrayTaskId", "")
        if fields.get("ArrayJobId") and task:
            # A task that has started has its own line; those that have not share one (0-3).
            job_id = f"{fields['ArrayJobId']}_{task}" if task.isdigit() else f"{fields['ArrayJobId']}_[{task}]"
        raw = fields.get("JobState", "")
        state = _slurm_state(raw)
        jobs[job_id] = JobInfo(state=state, raw_state=raw, exit_code=fields.get("ExitCode", ""),
                               elapsed_seconds=parse_duration_text(fields.get("RunTime", "")),
                               reason=_word(fields.get("Reason", "")),
                               start_estimate=_estimate(fields.get("StartTime", "")) if state in WAITING else "")
    return jobs


def _add_waiting_details(found: dict[str, JobInfo], ids: list[str]) -> None:
    """Why each waiting job of ``ids`` waits, and its start estimate: one ``squeue --start``
    call for all of them, none when no job waits. Jobs sacct does not list yet are asked too:
    slurmdbd learns of a job seconds after its submission (later still for one that waits for
    its begin time), and a job that squeue lists as waiting is pending. Without an answer the
    states stand alone."""
    waiting = [job_id for job_id in ids if job_id not in found or found[job_id].state in WAITING]
    if not waiting:
        return
    try:
        proc = run_command(["squeue", "--start", "-h", "-j", ",".join(waiting), "-o", "%i|%S|%r"],
                           timeout=30, check=False)
    except SchedulerError:
        return
    # Exit 1 with only ids it no longer knows; with some known ones it prints those and exits 0.
    starts = _for_ids(_parse_squeue_start(proc.stdout), waiting) if proc.returncode == 0 else {}
    for job_id in waiting:
        if job_id not in starts:
            continue
        known = found.get(job_id) or JobInfo(state="pending", raw_state="PENDING")
        found[job_id] = replace(known, reason=starts[job_id].reason or known.reason,
                                start_estimate=starts[job_id].start_estimate)


def slurm_jobs(job_ids: list[str]) -> dict[str, JobInfo]:
    """One ``sacct`` call, and one ``squeue --start`` call when a job waits or sacct does not
    list it (sacct knows neither why a job waits nor until when); without accounting one
    ``scontrol show job`` call, which tells both."""
    ids = ids_of(job_ids)
    if not ids:
        return {}
    # Array parents too: sacct lists the tasks that have not started only under theirs (7_[0-3]).
    asked = ids_of(ids + [job_id.split("_")[0] for job_id in ids if "_" in job_id])
    try:
        proc = run_command(["sacct", "-X", "-n", "-P", "-j", ",".join(asked),
                            "-o", "JobID,State,ExitCode,ElapsedRaw,Reason"], timeout=30)
    except SchedulerError as err:
        if "accounting storage is disabled" not in err.stderr.lower() and err.returncode != 127:
            raise
    else:
        found = _for_ids(_parse_sacct(proc.stdout), ids)
        _add_waiting_details(found, ids)
        return found
    proc = run_command(["scontrol", "show", "job", "-o"], timeout=30)
    known = {k: v for k, v in _parse_scontrol(proc.stdout).items() if k.split("_")[0] in ids or k in ids}
    return _for_ids(known, ids)


# ---------------------------------------------------------------- inside the job


def node_address(node: str) -> str:
    """The address slurmctld reaches ``node`` at (its ``NodeAddr``), for the rendezvous.

    Node names need not resolve from the compute nodes, and several nodes may report the
    same hostname (on the test cluster both hold; on real clusters neither is guaranteed),
    so MASTER_ADDR is the node's address as the scheduler knows it: slurmd is reached there,
    so the node's other ranks reach rank 0 there too. When scontrol does not answer:
    the address of the node srun was started on (the batch step runs on the first node,
    where rank 0 is), else the name itself.
    """
    proc = run_command(["scontrol", "show", "node", "-o", node], timeout=30, check=False)
    for item in proc.stdout.split():
        key, _, value = item.partition("=")
        if key == "NodeAddr" and value and proc.returncode == 0:
            return value
    return os.environ.get("SLURM_LAUNCH_NODE_IPADDR") or node


def last_ended_incarnation(job_id: str) -> tuple[str, str] | None:
    """(state, node list) of the job's latest ended incarnation (``sacct --duplicates``: a
    requeued job keeps one row per incarnation), or None without accounting or rows."""
    proc = run_command(["sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "State,NodeList"],
                       timeout=30, check=False)
    ended = [line.split("|")[:2] for line in proc.stdout.splitlines() if line.count("|") >= 1]
    ended = [(state.split()[0], nodes) for state, nodes in ended
             if state.strip() and state.split()[0] not in ("RUNNING", "PENDING", "REQUEUED")]
    return tuple(ended[-1]) if proc.returncode == 0 and ended else None  # type: ignore[return-value]


def failed_nodes(nodes: str) -> str:
    """Those of ``nodes`` that Slurm now calls down, drained or failed (the one that failed);
    ``nodes`` itself when none is (the node is back already)."""
    proc = run_command(["sinfo", "-h", "-N", "-n", nodes, "-t", "down,drain,fail,no_respond", "-o", "%N"],
                       timeout=30, check=False)
    down = sorted(set(proc.stdout.split())) if proc.returncode == 0 else []
    return ",".join(down) or nodes


def note_node_failure(run: Run, spec: JobSpec, job_id: str, resume: dict[str, Any] | None) -> None:
    """After Slurm requeued the job because a node failed (``--requeue``: state NODE_FAIL, the
    job goes back to the queue and starts on nodes that are up), record it in run.json:
    the node, the step the run had reached (progress.json, rewritten every few seconds), the
    checkpoint step it resumes from and where. More than ``scheduler.max_node_failures``
    fails the run instead: a job that keeps losing nodes should not keep the queue busy."""
    from cluster.runs import now_iso
    from train.contract import rundir

    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    if not restart.isdigit() or int(restart) < 1:
        return
    ended = last_ended_incarnation(job_id)
    if ended is None or ended[0] != "NODE_FAIL":
        return
    try:
        reached = rundir.read_object(run.path, PROGRESS_FILE).get("global_step")
    except (OSError, RunFileError):
        reached = None
    resumed_from = resume.get("global_step", 0) if resume else 0
    # progress.json is rewritten every few seconds only: the run got at least as far as its checkpoint.
    reached = max(reached, resumed_from) if isinstance(reached, int) else resumed_from
    failure = {"job_id": job_id, "restart": int(restart), "node": failed_nodes(ended[1]), "nodes": ended[1],
               "failed_at_step": reached, "resumed_from_step": resumed_from,
               "resumed_on": os.environ.get("SLURM_JOB_NODELIST", ""), "detected": now_iso()}
    limit = spec.scheduler.max_node_failures
    count = run.add_node_failure(failure)
    if count > limit:
        why = f"more than scheduler.max_node_failures ({limit})"
        message = (f"node {failure['node']} failed; {count} node failure{'s' if count != 1 else ''} in this run, "
                   f"{why}; continue with: cluster resume {run.path}")

        def give_up(record: dict[str, Any]) -> None:  # the failure just recorded is the last one
            record["node_failures"][-1]["gave_up"] = why
            record.update(state="failed", updated=now_iso(), error=message, ended=now_iso())

        run.update(give_up)
        sys.stderr.write(f"cluster-train: {message}\n")  # the job's log: no CLI in a job
        sys.exit(1)


def requeue_refusal(job_id: str) -> str | None:
    """``scontrol requeue`` of the job: None when Slurm took it, else why not (its message).

    Sites may forbid users to requeue (``scontrol`` answers e.g. "Access/permission denied")."""
    try:
        proc = run_command(["scontrol", "requeue", job_id], timeout=60, check=False)
    except SchedulerError as err:
        return err.stderr.strip() or str(err)
    if proc.returncode == 0:
        return None
    text = (proc.stderr or proc.stdout).strip()
    return text.splitlines()[-1][:300] if text else f"exit status {proc.returncode}"


# Set for this job by Slurm (SLURM_*) and by the launcher (torch's rendezvous): a continuation
# submitted from inside the job must get its own, not these (a stale SLURM_RESTART_COUNT would
# count requeues the new job never had). SLURM_CONF names the cluster: it stays.
_JOB_OWN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                      "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE")


def continuation_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment sbatch runs in for a continuation: the job's, less what is the job's own."""
    environ = dict(os.environ if environ is None else environ)
    return {key: value for key, value in environ.items()
            if key not in _JOB_OWN_VARIABLES and (not key.startswith("SLURM_") or key == "SLURM_CONF")}


def submit_continuation(job_key: str, folder: Path) -> str:
    """The next link of a dependency chain: ``sbatch --dependency=afterany:<job>`` of the job's
    saved submission script, its submission pickle copied under the new job's id (submitit
    reads it there; the new job cannot start before this one ends). An array task continues
    as the same index of a one-task array, so its id, log names and pickle keep their form.
    Returns the new job's key."""
    parent, _, task = job_key.partition("_")
    script = folder / f"{job_key}_submission.sh"
    if not script.exists():
        script = folder / f"{parent}_submission.sh"  # an array's script is saved under its parent id
    cmd = ["sbatch", "--parsable", f"--dependency=afterany:{job_key}"]
    if task:
        cmd.append(f"--array={task}")
    proc = run_command([*cmd, str(script.resolve())], env=continuation_environment())
    new_id = proc.stdout.strip().split(";")[0]
    new_key = f"{new_id}_{task}" if task else new_id
    carry_submission(folder, job_key, new_key, script)
    return new_key


def continue_job(env: Any, run: Run, spec: JobSpec, say: Callable[[str], None]) -> str | None:
    """Requeue the job (``continuation: requeue``) or, where Slurm refuses that or the spec asks
    for ``chain``, submit the next link of a dependency chain; record a refusal in run.json."""
    from cluster.runs import now_iso

    job_id = str(env.job_id)
    if spec.scheduler.continuation == "requeue":
        say(f"requeueing job {job_id}")
        refused = requeue_refusal(job_id)
        if refused is None:
            return None
        say(f"scontrol requeue refused ({refused}); continuing through a dependency chain")
        run.update(lambda record: record.setdefault("requeue_refused", []).append(
            {"job_id": job_id, "message": refused, "when": now_iso()}))
    return submit_continuation(job_id, run.logs_dir)


# ---------------------------------------------------------------- doctor


def _partitions() -> list[str]:
    proc = run_command(["sinfo", "-h", "-o", "%P"], timeout=15)
    return [p.strip().rstrip("*") for p in proc.stdout.split() if p.strip()]


def _scheduler_checks(spec: JobSpec) -> list[Check]:
    missing = [c for c in COMMANDS if not shutil.which(c)]
    if missing:
        return [Check("FAIL", "scheduler", f"Slurm commands missing: {', '.join(missing)}",
                      "load the Slurm module or add its bin directory to PATH")]
    try:
        partitions = _partitions()
    except SchedulerError as err:
        return [Check("FAIL", "scheduler", f"sinfo does not answer ({err})",
                      "is slurmctld up and SLURM_CONF right? try: sinfo")]
    checks = [Check("ok", "scheduler", f"Slurm answers (partitions: {', '.join(partitions) or 'none'})")]
    queue = spec.resources.queue
    if queue and queue not in partitions:
        checks.append(Check("FAIL", "partition", f"resources.queue {queue!r} is not a partition here",
                            f"use one of: {', '.join(partitions)}"))
    elif queue:
        checks.append(Check("ok", "partition", f"{queue} exists"))
    return checks


def _accounting_check() -> Check:
    hint = "status falls back to scontrol, which forgets jobs minutes after they end"
    if not shutil.which("sacct"):
        return Check("warn", "accounting", "sacct not found", hint)
    try:
        run_command(["sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID"], timeout=20)
    except SchedulerError as err:
        return Check("warn", "accounting", f"sacct does not work ({err})", hint)
    return Check("ok", "accounting", "sacct answers")


def max_array_size() -> int | None:
    """The site's MaxArraySize (``scontrol show config``): an array's task indices must stay
    below it (0 disables arrays: one task per job). None when scontrol does not say."""
    proc = run_command(["scontrol", "show", "config"], timeout=30, check=False)
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)\s*$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not found:
        return None
    return max(1, int(found.group(1)))


# ---------------------------------------------------------------- the backend


class SlurmBackend(Backend):
    kind = "slurm"
    dialects = ("slurm",)
    prefix = PREFIX
    detect_order = 10

    def available(self) -> bool:
        return answers(["sinfo", "-h", "-o", "%P"])

    def directives(self, spec: JobSpec, options: JobOptions, dialect: str) -> list[str]:
        return directives(spec, options)

    def requeue_lines(self, spec: JobSpec, dialect: str) -> list[str]:
        return requeue_lines(spec)

    def executor(self, spec: JobSpec, run_dir: Path, *, array_parallelism: int | None = None) -> Any:
        from cluster.backends.slurm_executor import SlurmExecutor  # submitit: only when submitting

        return SlurmExecutor(run_dir / LOGS_DIR, spec, run_dir, self, array_parallelism=array_parallelism)

    def query(self, job_ids: list[str], records: list[dict[str, Any]]) -> dict[str, JobInfo]:
        return slurm_jobs(job_ids)

    def accounting(self, job_ids: list[str], records: list[dict[str, Any]]) -> dict[str, list[Usage]] | None:
        from cluster.backends.slurm_sacct import sacct_usage

        usages = sacct_usage(job_ids)
        for incarnation in (u for found in (usages or {}).values() for u in found):
            incarnation.normal_state = _slurm_state(incarnation.state)
        return usages

    def cancel(self, job_id: str, run: Run) -> None:
        run_command(["scancel", job_id])

    def max_array_size(self) -> int | None:
        return max_array_size()

    def doctor_checks(self, spec: JobSpec) -> list[Check]:
        return _scheduler_checks(spec) + [_accounting_check()]

    def probe_submit(self, script: Path) -> str:
        return run_command(["sbatch", "--parsable", str(script)]).stdout.strip().split(";")[0]

    def probe_state(self, job_id: str) -> str | None:
        proc = run_command(["squeue", "-h", "-j", job_id, "-o", "%T %r"], timeout=20, check=False)
        return proc.stdout.strip() or None

    def inspect_hint(self, job_id: str) -> str:
        return f"squeue -j {job_id}"

    def note_restart(self, run: Run, spec: JobSpec, job_id: str, resume: dict[str, Any] | None) -> None:
        note_node_failure(run, spec, job_id, resume)

    def rendezvous_address(self, first_node: str) -> str:
        return node_address(first_node)

    def continue_job(self, env: Any, run: Run, spec: JobSpec, remaining: int,
                     say: Callable[[str], None]) -> str | None:
        return continue_job(env, run, spec, say)


BACKEND = SlurmBackend()
