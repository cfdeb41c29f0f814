"""Shared test helpers: run the `cluster` command, find runs, reference weights, counting PATH wrappers."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

from cluster.runs import Run

REPO = Path(__file__).resolve().parents[2]
CLUSTER = [sys.executable, "-m", "cluster.cli"]


def cluster_cmd(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `cluster` command as a user would, in ``cwd``."""
    return subprocess.run([*CLUSTER, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def last_run(workdir: Path) -> Run:
    runs = sorted((workdir / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime)
    assert runs, f"no run under {workdir}/runs"
    return Run(runs[-1].parent)


def epochs(run: Run) -> list[int]:
    """The epochs of the run's metrics.jsonl, in file order (each once, in order, for a run
    that lost and repeated nothing)."""
    return [json.loads(line)["epoch"] for line in (run.path / "metrics.jsonl").read_text().splitlines()]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.3) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def drive(run: Run, timeout: float) -> dict:
    """Wait for a Slurm run to end, letting each requeued job start at once (not after Slurm's
    ~2 minute hold); its run.json. Fails when it has not ended within ``timeout`` seconds."""
    from support import slurm as sh

    deadline = time.time() + timeout
    while time.time() < deadline:
        record = run.read()
        if record.get("state") in ("completed", "failed"):
            return record
        sh.skip_requeue_hold(run.current_job_id(record))
        time.sleep(1)
    raise AssertionError(f"run not ended after {timeout:.0f} s: {run.read()}")


def session_scratch() -> Path:
    """A directory for this test session's reference runs, shared by its pytest-xdist workers
    (named by CLUSTER_TEST_SESSION, which tests/conftest.py sets before the workers start),
    under CLUSTER_TEST_SCRATCH (default: the system's temporary directory). Removed when the
    session ends (conftest.py); a later session never reads an earlier one's shas."""
    base = Path(os.environ.get("CLUSTER_TEST_SCRATCH") or tempfile.gettempdir())
    session = os.environ.get("CLUSTER_TEST_SESSION") or f"pid{os.getpid()}"
    return base / f"cluster-train-ref-{session}"


@lru_cache(maxsize=None)
def _reference(spec: str, overrides: tuple[str, ...], scratch: str) -> str:
    """Train the reference once per session: the first worker to ask trains it (under a lock),
    the others wait for it and read its sha (it is the same run, bit for bit)."""
    key = hashlib.sha256(json.dumps([spec, overrides]).encode()).hexdigest()[:16]
    done = Path(scratch) / f"ref-{key}.sha256"
    with open(Path(scratch) / f"ref-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return done.read_text()
        work = Path(tempfile.mkdtemp(prefix=f"ref-{key}-", dir=scratch))  # never a half-trained earlier run
        args = [a for o in overrides for a in ("--set", o)]
        check = subprocess.run([*CLUSTER, "check", spec, *args], capture_output=True, text=True, check=True)
        (work / "spec.yaml").write_text(check.stdout)
        subprocess.run([sys.executable, "-m", "train", "--config", str(work / "spec.yaml"), "--run-dir",
                        str(work / "run")], check=True, capture_output=True, timeout=1800)
        sha = json.loads((work / "run" / "summary.json").read_text())["weights_sha256"]
        done.write_text(sha)
        return sha


def reference_sha(spec: Path, overrides: list[str], scratch: Path | None = None) -> str:
    """weights_sha256 of an uninterrupted local `python -m train` run of the spec (once per session)."""
    only_train = tuple(o for o in overrides if o.startswith("train."))
    scratch = scratch or session_scratch()
    scratch.mkdir(parents=True, exist_ok=True)
    return _reference(str(spec), only_train, str(scratch))


class NothingTrained(AssertionError):
    """No calibration attempt trained a step before it was stopped."""


def steps_per_attempt(workdir: Path, spec: str, args: list[str], samples: int, tries: int = 3) -> int:
    """Measured here and now: how many optimizer steps one attempt of a short-walltime job
    trains before it stops (``args`` carry the executor and the walltime settings).

    Tests that need a given number of requeues size their work from this, not from the
    speed of the machine they were written on. An attempt may train nothing (Slurm may send
    its warning up to a minute early; a loaded machine may still be importing torch when the
    warning comes): then it is measured again, up to ``tries`` attempts in all.
    """
    from train.runfiles import resume_point

    for n in range(tries):
        calibrate = workdir / f"calibrate-{n}"
        calibrate.mkdir(parents=True, exist_ok=True)
        sets = ["train.epochs=100000", f"train.data.samples={samples}", "scheduler.max_requeues=0"]
        proc = cluster_cmd("submit", spec, *args, *[a for s in sets for a in ("--set", s)], "--wait",
                           cwd=calibrate, timeout=1800)
        assert proc.returncode != 0 and "out of requeues (0)" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        point = resume_point(last_run(calibrate).path)
        if point and point["global_step"] > 0:
            return point["global_step"]
    raise NothingTrained(f"{tries} calibration attempt(s) trained nothing before they stopped")


def short_walltime(workdir: Path, spec: str, samples: int, executor: str,
                   warnings: tuple[int, ...]) -> tuple[int, list[str]]:
    """The shortest attempts of a 1-minute walltime that train something here and now: the
    warning ``warnings[0]`` seconds before the walltime, or, when such an attempt ends before its
    first step (a loaded machine still importing torch; Slurm sending its warning up to a minute
    early), each later value in turn.

    Returns the steps one attempt trained and the ``--set`` values of that walltime.
    """
    for n, seconds in enumerate(warnings):
        sets = ["resources.time=1", f"scheduler.signal_seconds={seconds}"]
        args = ["--executor", executor, *[a for s in sets for a in ("--set", s)]]
        try:
            return steps_per_attempt(workdir / f"warn-{n}-{seconds}", spec, args, samples, tries=1), sets
        except NothingTrained:
            continue
    raise NothingTrained(f"attempts of the {executor} executor warned {', '.join(map(str, warnings))} s "
                         "before a 1-minute walltime all trained nothing")


def local_walltime(workdir: Path, spec: str, samples: int) -> tuple[int, list[str]]:
    """The local executor's short attempts: the warning 48 s before a 1-minute walltime
    (12-second attempts), then 36 and 24 s before it."""
    return short_walltime(workdir, spec, samples, "local", (48, 36, 24))


def slurm_walltime(workdir: Path, spec: str, samples: int) -> tuple[int, list[str]]:
    """Slurm's short attempts: the warning 45 s before a 1-minute walltime (at most 15-second
    attempts; Slurm may warn up to a minute early), tried twice, then 30 and 15 s before it."""
    return short_walltime(workdir, spec, samples, "slurm", (45, 45, 30, 15))


# How long a test waits for a submitted job's first epoch: the job may queue behind the other
# pytest workers' jobs for the test cluster's CPUs, then import torch on a loaded machine.
# A deadline for a hang, not a measure of speed (a quiet machine takes 5-15 s).
FIRST_EPOCH_TIMEOUT = 600


def counting_wrappers(directory: Path, commands: list[str]) -> tuple[str, Path]:
    """Wrappers on PATH that log each call of ``commands`` and run the real one.

    Returns the PATH to use and the log file (one line per call: the command name).
    """
    import shutil

    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "calls.log"
    log.touch()
    for name in commands:
        real = shutil.which(name)
        assert real, f"{name} not on PATH"
        wrapper = directory / name
        wrapper.write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec "{real}" "$@"\n')
        wrapper.chmod(0o755)
    return f"{directory}{os.pathsep}{os.environ['PATH']}", log


def calls(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text().split():
        counts[line] = counts.get(line, 0) + 1
    return counts
