"""Sweeps: a grid over ``train.*`` keys (``vars.*`` for a command job), submitted as ONE array job.

A sweep directory ``runs/<name>-sweep-<stamp>-<id>/`` holds ``sweep.json`` and one
ordinary run directory per task (``000-lr=0.001``...), each with its own resolved
spec and run.json, so status, logs, collect, resume and cancel work on a task
alone or on the sweep as a whole. On Slurm the tasks are ``--array=0-N%cap``; on
PBS ``-J`` (PBS Pro) or ``-t`` (Torque); on the local executor they run in turn.
A task that times out requeues alone (``scontrol requeue <array>_<task>``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import submitit

from cluster import backends
from cluster.backends.base import poll
from cluster.errors import SpecError
from cluster.job import TrainJob, job_for
from cluster.pyyaml import yaml
from cluster.runs import Run, make_durable, new_run_dir, now_iso, write_atomic
from cluster.spec import MAX_SWEEP_POINTS, JobSpec, SpecTexts, apply_overrides, cut, parse_yaml
from cluster.submit import new_record, scheduler_refusals
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

    A task's files are written without an fsync each (one :func:`make_durable` commits them
    all), but every create and rename is still a metadata update the filesystem's journal
    serialises: on a busy disk each waits milliseconds, and threads wait together. The
    tasks' files are independent (each run.json has its own lock). Results in order; the
    first exception is raised, as the loop would, once the tasks already started have
    finished (the rest are not started).
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
    """Create the sweep's run directories and submit them as array jobs: one array, or, where
    the scheduler caps an array's size (Slurm's MaxArraySize), the fewest arrays that fit."""
    grid = [(k, list(v)) for k, v in spec.sweep] + parse_sweep_args(sweep_args)
    check_grid_size(grid, "sweep" if spec.sweep and sweep_args else "--sweep", spec.source)
    section = "vars" if spec.command else "train"
    for key, _ in grid:
        if not key.startswith(f"{section}."):
            raise SpecError(f"--sweep {key}", f"sweep keys must be dotted keys under {section} "
                            "(the tasks of one array job share its resources)", spec.source)
    points = grid_points(grid)
    backend = backends.resolve(executor or spec.scheduler.kind)
    runs_root = Path(spec.runs_dir_path())
    made_root = not runs_root.exists()
    sweep_dir = new_run_dir(runs_root, f"{spec.name}-sweep")
    arrays: list[str] = []
    try:
        tasks = _prepare_tasks(spec, backend.kind, sweep_dir, points)
        jobs = _submit_tasks(spec, backend, sweep_dir, tasks, arrays)
    except BaseException:
        for array_id in arrays:  # a later array refused: the earlier ones must not run without their tasks
            with contextlib.suppress(Exception):
                backend.cancel(array_id, Run(sweep_dir))
        shutil.rmtree(sweep_dir, ignore_errors=True)
        if made_root:  # nothing left behind: not even the runs/ folder this sweep made
            with contextlib.suppress(OSError):
                runs_root.rmdir()  # only while empty
        raise
    runs = [task.run for task in tasks]
    script = sweep_dir / LOGS_DIR / f"{arrays[0]}_submission.sh"
    if script.is_file() and not script.is_symlink():  # the sweep directory's own copy: its first array's
        write_atomic(Run(sweep_dir).script_path, script.read_bytes())
    write_atomic(sweep_dir / SWEEP_JSON, json.dumps({
        "name": spec.name, "scheduler": backend.kind, "created": now_iso(), "job_id": arrays[0],
        "job_ids": arrays, "grid": {k: v for k, v in grid},
        "tasks": [{"index": i, "point": p, "run_dir": r.path.name, "job_id": j.job_id}
                  for i, (p, r, j) in enumerate(zip(points, runs, jobs))],
    }, indent=2) + "\n")
    return Sweep(sweep_dir, backend.kind, arrays[0], runs)


@dataclass
class _Task:
    """A task being submitted: its run directory and the run.json it is to get."""

    run: Run
    record: dict[str, Any]


def _prepare_tasks(spec: JobSpec, kind: str, sweep_dir: Path, points: list[dict[str, Any]]) -> list[_Task]:
    """Every task's folder and spec.yaml, made durable at once; their run.json is written as
    their job is submitted (:func:`_submit_tasks`).

    A sweep's cost on the login node is its files (each new file, on a busy disk, waits for
    the filesystem's journal), so a task gets only what it needs before it starts: its
    folder, spec.yaml and run.json (its checkpoints/ the job makes; its logs are the
    sweep's). Until its run.json exists a folder is no run that any command lists or reads,
    so spec.yaml is written straight to its name; one syncfs commits them all
    (:func:`make_durable`). Each point is the base spec with its swept keys set, only the
    swept section validated again (:func:`apply_overrides`); its spec.yaml is the base's
    text but where the values differ (:class:`SpecTexts`).
    """
    texts = SpecTexts(spec)
    logs = str(sweep_dir / LOGS_DIR)

    def prepare_task(task: tuple[int, dict[str, Any]]) -> _Task:
        index, point = task
        try:
            task_spec = apply_overrides(spec, point)
        except SpecError as err:  # which point: the grid's values are checked one point at a time
            words = " ".join(f"{k}={v}" for k, v in point.items())
            where = f"sweep point {index}: {cut(words, 80)}"
            raise SpecError(err.key, err.message, f"{spec.source} ({where})" if spec.source else where) from None
        run = Run(sweep_dir / _task_name(index, point))
        run.path.mkdir()
        with open(run.spec_path, "x", encoding="utf-8") as handle:
            handle.write(texts.of(task_spec))
        return _Task(run, new_record(task_spec, kind, run.id, {
            "sweep": {"dir": str(sweep_dir), "index": index, "point": point}, "logs_dir": logs}))

    (sweep_dir / LOGS_DIR).mkdir()
    tasks = _for_each_task(prepare_task, enumerate(points))
    make_durable(sweep_dir)
    return tasks


def _submit_tasks(spec: JobSpec, backend: backends.Backend, sweep_dir: Path, tasks: list[_Task],
                  arrays: list[str]) -> list[submitit.Job]:
    """Submit the tasks: one sbatch (qsub) per array; each array's id is appended to ``arrays``
    as soon as it exists. Without arrays (the local executor) one job trains them in turn.

    An array's tasks get their run.json once the scheduler has named their jobs, and before
    any of them can start: a task waits for its array's pickle (``cluster.backends.array_task``),
    which is put in place only after (``before_start``). A job that may start at once (the
    local executor's, an array of one) gets its run.json before it is submitted."""
    executor = backend.executor(spec, sweep_dir, array_parallelism=ARRAY_PARALLELISM)
    with scheduler_refusals("sweep"):
        if not backend.runs_arrays:
            _write_records(tasks)
            job = executor.submit(LocalSweepJob([str(t.run.path) for t in tasks]))
            arrays.append(job.job_id)
            _for_each_task(lambda task: task.run.add_job(job.job_id, "submit", durable=False), tasks)
            make_durable(sweep_dir)
            return [job] * len(tasks)
        jobs: list[submitit.Job] = []
        for chunk in array_chunks(tasks, backend.max_array_size()):
            if len(chunk) == 1:  # a single job (no array of one): it may start at once
                _write_records(chunk)
                job = executor.submit(job_for(spec, str(chunk[0].run.path)))
                arrays.append(job.job_id)
                chunk[0].run.add_job(job.job_id, "submit")
                jobs.append(job)
                continue

            def before_start(submitted: list[submitit.Job], chunk: list[_Task] = chunk) -> None:
                arrays.append(submitted[0].job_id.split("_")[0])  # cancelled if anything fails from here
                _record_jobs(sweep_dir, chunk, submitted)

            executor.before_start = before_start
            with executor.batch():
                jobs += [executor.submit(job_for(spec, str(t.run.path))) for t in chunk]
    return jobs


def _write_records(tasks: list[_Task]) -> None:
    """The tasks' run.json, for jobs that may start as soon as they are submitted."""
    _for_each_task(lambda task: write_atomic(task.run.record_path, json.dumps(task.record, indent=2) + "\n",
                                             durable=False), tasks)
    make_durable(tasks[0].run.path.parent)


def array_chunks(items: list[_T], limit: int | None) -> list[list[_T]]:
    """``items`` in the fewest consecutive chunks of at most ``limit`` (None: no limit), of
    sizes as even as possible (1001 tasks under a limit of 1000: 501 and 500, not 1000 and 1)."""
    count = 1 if not limit or len(items) <= limit else -(-len(items) // limit)
    size, extra = divmod(len(items), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def _record_jobs(sweep_dir: Path, tasks: list[_Task], jobs: list[submitit.Job]) -> None:
    """An array's tasks' run.json, each with its job, and the array's script as each task's
    submitted.sh (a hard link to the script in the sweep's logs/, never written to; a copy
    where links fail), all made durable at once. Called between the submission and the
    moment the tasks can start (``before_start``), so no job writes run.json yet."""
    array_id = jobs[0].job_id.split("_")[0]
    script = sweep_dir / LOGS_DIR / f"{array_id}_submission.sh"
    linkable = script.is_file() and not script.is_symlink()
    submitted = now_iso()

    def record(pair: tuple[_Task, submitit.Job]) -> None:
        task, job = pair
        task.record.update(state="pending", jobs=[{"job_id": str(job.job_id), "submitted": submitted,
                                                   "reason": "submit"}])
        write_atomic(task.run.record_path, json.dumps(task.record, indent=2) + "\n", durable=False)
        if linkable:
            _link_or_copy(script, task.run.script_path)

    _for_each_task(record, zip(tasks, jobs))
    make_durable(sweep_dir)


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` names ``source``'s bytes: a hard link (one directory entry, no new file), or,
    where the filesystem refuses links, an atomic copy. Never through an existing ``target``."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # no hard links here (EPERM, EMLINK...), or a name there already
        write_atomic(target, source.read_bytes(), durable=False)


def wait_for_sweep(sweep: Sweep, interval: float = 2.0) -> list:
    """Wait until every task has ended; their final status rows."""
    from cluster.runs import TERMINAL_STATES
    from cluster.status import rows_for

    return poll(lambda: rows_for(sweep.runs), lambda rows: all(r.state in TERMINAL_STATES for r in rows),
                interval=interval)
