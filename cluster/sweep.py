"""Sweeps: a grid over ``train.*`` keys (``vars.*`` for a command job), submitted as ONE array job.

A sweep directory ``runs/<name>-sweep-<stamp>-<id>/`` holds ``sweep.json`` and one
ordinary run directory per task (``000-lr=0.001``...), each with its own resolved
spec and run.json, so status, logs, collect, resume and cancel work on a task
alone or on the sweep as a whole. On Slurm the tasks are ``--array=0-N%cap``; on
PBS ``-J`` (PBS Pro) or ``-t`` (Torque); on the local executor they run in turn.
A task that times out requeues alone (``scontrol requeue <array>_<task>``).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import submitit
import yaml

from cluster import backends
from cluster.backends.base import poll
from cluster.errors import SpecError
from cluster.job import TrainJob, job_for
from cluster.runs import Run, new_run_dir, now_iso, write_atomic
from cluster.spec import MAX_SWEEP_POINTS, JobSpec, apply_overrides, cut, parse_yaml
from cluster.submit import prepare_run, scheduler_refusals
from train.contract import LOGS_DIR, SUMMARY_FILE, SWEEP_JSON
from train.contract.task_probe import isolate_task_imports

ARRAY_PARALLELISM = 16
"""At most this many tasks of one sweep run at once (Slurm's ``--array=...%N``)."""

TASK_WRITERS = 8
"""Threads that write the tasks' files (spec.yaml, run.json, submitted.sh) at once."""

_T = TypeVar("_T")
_R = TypeVar("_R")


def _for_each_task(func: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """``[func(item) for item in items]``, on a few threads.

    Every file a task gets is fsynced before it is renamed into place (cluster.runs.write_atomic):
    one after another, a 100-task sweep waits on 500 fsyncs, seconds on a plain disk. The tasks'
    files are independent (each run.json has its own lock), so they are written at once, and the
    filesystem commits the fsyncs that wait together in one go. Results in order; the first
    exception is raised, as the loop would, once the tasks already started have finished (the
    rest are not started).
    """
    pool = ThreadPoolExecutor(max_workers=TASK_WRITERS, thread_name_prefix="sweep-task")
    try:
        return list(pool.map(func, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def parse_sweep_args(items: list[str]) -> list[tuple[str, list[Any]]]:
    """``train.lr=1e-3,3e-4`` -> ("train.lr", [0.001, 0.0003])."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SpecError("--sweep", f"expected dotted.key=v1,v2,... (got {cut(item, 60)!r})")
        grid.append((key.strip(), [_sweep_value(key.strip(), v) for v in values.split(",")]))
    check_grid_size(grid, "--sweep")
    return grid


def check_grid_size(grid: list[tuple[str, list[Any]]], key: str, file: str | None = None) -> None:
    """At most :data:`MAX_SWEEP_POINTS` tasks, each key once: for the whole grid (the spec's
    ``sweep:`` and ``--sweep`` together), counted without building it."""
    seen: set[str] = set()
    points = 1
    for name, values in grid:
        if name in seen:
            raise SpecError(f"--sweep {cut(name, 60)}", "is swept twice (in the spec's sweep: and by --sweep; "
                            "allowed: each key once)", file)
        seen.add(name)
        points *= len(values)
        if points > MAX_SWEEP_POINTS:  # stop multiplying: 100 keys of 100 values is a 200-digit number
            total = "more than" if len(seen) < len(grid) else "makes"
            raise SpecError(key, f"{total} {points} tasks (allowed: at most {MAX_SWEEP_POINTS} in one sweep)", file)


def _sweep_value(key: str, text: str) -> Any:
    """One value of ``--sweep KEY=v1,v2``: YAML where it parses, else the text itself."""
    try:
        return parse_yaml(text)
    except SpecError as err:
        raise SpecError(f"--sweep {cut(key, 60)}", err.message) from None
    except yaml.YAMLError:
        return text


def grid_points(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    keys = [k for k, _ in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in grid))]


def _task_name(index: int, point: dict[str, Any]) -> str:
    label = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())
    return f"{index:03d}-" + re.sub(r"[^A-Za-z0-9.=,_-]", "_", label)[:60]


class LocalSweepJob(TrainJob):
    """Without a scheduler, one local job trains (or runs, for a command job) the sweep's tasks in turn."""

    def __init__(self, run_dirs: list[str]) -> None:
        super().__init__(run_dirs[0])
        self.run_dirs = list(run_dirs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(LocalSweepJob(self.run_dirs))

    def __call__(self) -> list[dict[str, Any]]:
        results = []
        from cluster.spec import load_spec

        for run_dir in self.run_dirs:
            run = Run(run_dir)
            if (Path(run_dir) / SUMMARY_FILE).exists() or run.read().get("state") == "completed":
                continue  # done before a requeue
            with isolate_task_imports(False):  # in the job, as TrainJob loads it
                spec = load_spec(run.spec_path)
            if spec.command:
                results.append(job_for(spec, run_dir)())
                continue
            self.run_dir = run_dir
            results.append(super().__call__())
        return results


@dataclass
class Sweep:
    """A submitted sweep: its directory, backend kind, array job id and task runs."""

    path: Path
    kind: str
    job_id: str
    runs: list[Run]


def submit_sweep(spec: JobSpec, sweep_args: list[str], executor: str | None = None) -> Sweep:
    """Create the sweep's run directories and submit them as one array job."""
    grid = [(k, list(v)) for k, v in spec.sweep] + parse_sweep_args(sweep_args)
    check_grid_size(grid, "sweep" if spec.sweep and sweep_args else "--sweep", spec.source)
    section = "vars" if spec.command else "train"
    for key, _ in grid:
        if not key.startswith(f"{section}."):
            raise SpecError(f"--sweep {key}", f"sweep keys must be dotted keys under {section} "
                            "(the tasks of one array job share its resources)", spec.source)
    points = grid_points(grid)
    backend = backends.resolve(executor or spec.scheduler.kind)
    sweep_dir = new_run_dir(spec.runs_dir_path(), f"{spec.name}-sweep")

    def prepare_task(task: tuple[int, dict[str, Any]]) -> Run:
        index, point = task
        task_dir = sweep_dir / _task_name(index, point)
        task_dir.mkdir()
        return prepare_run(apply_overrides(spec, point), backend.kind, task_dir, extra={
            "sweep": {"dir": str(sweep_dir), "index": index, "point": point}, "logs_dir": str(sweep_dir / LOGS_DIR)})

    try:
        runs = _for_each_task(prepare_task, enumerate(points))
        array = backend.executor(spec, sweep_dir, array_parallelism=ARRAY_PARALLELISM)
        with scheduler_refusals("sweep"):
            if backend.runs_arrays:
                with array.batch():
                    jobs = [array.submit(job_for(spec, str(r.path))) for r in runs]
            else:
                jobs = [array.submit(LocalSweepJob([str(r.path) for r in runs]))] * len(runs)
    except BaseException:
        shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    _for_each_task(lambda task: task[0].add_job(task[1].job_id, "submit"), zip(runs, jobs))
    array_id = jobs[0].job_id.split("_")[0]
    script = sweep_dir / LOGS_DIR / f"{array_id}_submission.sh"
    if script.exists():
        text = script.read_text()
        _for_each_task(lambda run: write_atomic(run.script_path, text), [Run(sweep_dir)] + runs)
    write_atomic(sweep_dir / SWEEP_JSON, json.dumps({
        "name": spec.name, "scheduler": backend.kind, "created": now_iso(), "job_id": array_id,
        "grid": {k: v for k, v in grid},
        "tasks": [{"index": i, "point": p, "run_dir": r.path.name, "job_id": j.job_id}
                  for i, (p, r, j) in enumerate(zip(points, runs, jobs))],
    }, indent=2) + "\n")
    return Sweep(sweep_dir, backend.kind, array_id, runs)


def wait_for_sweep(sweep: Sweep, interval: float = 2.0) -> list:
    """Wait until every task has ended; their final status rows."""
    from cluster.runs import TERMINAL_STATES
    from cluster.status import rows_for

    return poll(lambda: rows_for(sweep.runs), lambda rows: all(r.state in TERMINAL_STATES for r in rows),
                interval=interval)
