"""Why did a run fail, and what should the user do? One cause and one action per run."""

from __future__ import annotations

import re
from typing import Any

from cluster.runs import Run
from train.contract import CHECKPOINT_DIR, rundir
from train.contract.rundir import RunFileError

_STDERR = re.compile(r"[^/]*\.err")


def tail_log(run: Run, name: str, size: int = 65536) -> str:
    """The last ``size`` bytes of ``logs/NAME``; '' for a link, a FIFO or an unreadable file (a
    diagnosis is a best guess: it never stops status)."""
    try:
        with run.open_log(name) as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace")
    except (OSError, RunFileError):
        return ""


def stderr_text(run: Run) -> str:
    """The end of every stderr the run has (submitit's logs and PBS -e files)."""
    try:
        names = run.log_names(_STDERR)
    except (OSError, RunFileError):
        return ""
    return "\n".join(tail_log(run, name) for name in names)


def _has_checkpoint_files(run: Run) -> bool:
    try:
        folder = rundir.check_dir(run.path, CHECKPOINT_DIR)
    except (OSError, RunFileError):
        return False
    return any(folder.iterdir())


def last_python_error(text: str) -> str | None:
    """The ``SomeError: message`` line that ends the last traceback in ``text``."""
    last, in_traceback = None, False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", line):
            last, in_traceback = line.strip(), False
    return last


def diagnose(run: Run, record: dict[str, Any], state: str, job: Any) -> tuple[str | None, str | None]:
    """(cause, suggested action) for a run that did not complete."""
    resume = f"resume with: cluster resume {run.path}"
    err = stderr_text(run)
    if "cluster-train: 'module load" in err:
        line = next(l for l in err.splitlines() if "cluster-train: 'module load" in l)
        return line.replace("cluster-train: ", ""), "fix environment.modules (run `module avail` on the cluster)"
    if re.search(r"CUDA (is )?not available|no CUDA GPUs are available", err, re.I):
        return ("CUDA not available although GPUs were requested",
                "check resources.gpus_per_node, environment.modules (cuda) and `cluster doctor --probe`")
    if state == "out-of-memory" or re.search(r"exceeded (job )?memory limit|oom-kill|out of memory", err, re.I):
        return "out of memory", "raise resources.mem or lower train.batch_size"
    command_job = record.get("kind") == "command"
    error = record.get("error") or ""
    if state == "timeout" or "DUE TO TIME LIMIT" in err:
        if command_job and ("without a checkpoint" in error or not _has_checkpoint_files(run)):
            return ("hit the walltime without a checkpoint (the command did not save and exit 75 on "
                    "USR2/TERM or before CLUSTER_DEADLINE)",
                    f"follow the contract (README, Command jobs) or raise resources.time; {resume}")
        if command_job:
            return "hit the walltime", f"raise resources.time; {resume}"
        return "hit the walltime", f"raise resources.time or lower train.epochs; {resume}"
    if state == "node-fail":
        return "node failure", resume
    if state == "cancelled" or re.search(r"CANCELLED AT .* DUE TO PREEMPTION", err):
        if "PREEMPTION" in err:
            return "preempted", resume
        return "cancelled", resume
    if "out of requeues" in (record.get("error") or ""):
        return record["error"].split(";")[0], resume
    if command_job and error.startswith("command "):
        # The program's own last traceback, when it is a Python program that raised.
        raised = last_python_error(err)
        return error + (f" (last Python error: {raised})" if raised else ""), \
            f"see `cluster logs {run.path} --err`; fix the program, then {resume}"
    error = last_python_error(err) or record.get("error")
    if error:
        return f"Python error: {error}", f"fix the error, then {resume}"
    if state == "failed":
        code = getattr(job, "exit_code", "") if job else ""
        return (f"job failed (exit {code})" if code else "job failed"), f"see `cluster logs {run.path} --err`; {resume}"
    return None, None
