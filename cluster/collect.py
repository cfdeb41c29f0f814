"""``cluster collect``: gather what runs produced into one folder, with curves and a comparison.

For each run, ``DIR/<run_id>/`` receives::

    checkpoints/final.pt, checkpoints/best.pt   (those that exist)
    metrics.jsonl        complete lines only (a running trainer may be mid-line)
    logs/*.out, *.err    every attempt's stdout and stderr
    tensorboard/events.* TensorBoard event files (train.tensorboard: true)
    submitted.sh, spec.yaml, run.json
    summary.json         the run's own summary (if it completed) plus run facts
    curves.png           losses and validation metrics per epoch (needs matplotlib)
    timeline.png         every attempt on one time axis: queued, setup, training, redone
                         (needs matplotlib; also DIR/timeline.png of all the runs together)

A command job's run (``command:`` in its spec) gets every file its program wrote in the run
directory (checkpoints and results included) instead of the trainer's two checkpoints, and its
``vars`` as the hyper-parameters.

and, for several runs, ``DIR/comparison.csv``: one row per run, sorted by the chosen
validation metric (best first), also printed.

Collecting again is safe: every file is copied to a temporary name beside its target and
renamed into place, so a reader never sees half a file, and unchanged files are skipped.
A run that is still going is collected as it stands, and the report says so.

Login-node code: standard library and yaml only; matplotlib is imported inside
:func:`plot_curves`, and its absence only skips the plot.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from cluster.errors import ClusterError
from cluster.runs import RUN_LOCK, Run, now_iso, printable, write_atomic
from cluster.units import format_table
from train.contract import (BEST_CHECKPOINT, CHECKPOINT_DIR, FINAL_CHECKPOINT, LOGS_DIR, METRICS_FILE, RUN_JSON,
                            SCRIPT_FILE, SPEC_FILE, SUMMARY_FILE, SWEEP_JSON, TENSORBOARD_DIR, TMP_PREFIX,
                            TRAINER_LOCK, rundir)
from train.contract.rundir import RunFileError

log = logging.getLogger("cluster")

FINAL = f"{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}"
BEST = f"{CHECKPOINT_DIR}/{BEST_CHECKPOINT}"
FILES = (FINAL, BEST, SCRIPT_FILE, SPEC_FILE, RUN_JSON)
"""Copied as they are, when they exist (metrics.jsonl and logs are handled on their own)."""

LOG_PATTERNS = ("*.out", "*.err")
LIVE_STATES = ("pending", "running", "requeued", "submitting")
LOSS_KEYS = ("train_loss", "val_loss")
VAL_KEYS = ("val_auc", "val_accuracy", "val_balanced_accuracy")
TABLE_METRICS = ("val_loss", "val_auc", "val_accuracy", "val_balanced_accuracy", "train_loss")


# ---------------------------------------------------------------- atomic copies


def copy_atomic(base: Path, relative: str, dst: Path) -> bool:
    """Copy the run's file ``base/relative`` (opened without following links: a regular file
    of the run itself) to a temporary name beside ``dst``, then rename; False when ``dst``
    already has this version (same size and mtime: copies keep the mtime)."""
    fd = rundir.open_fd(base, relative)
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(fd)
        try:
            have = dst.stat()
            if have.st_size == info.st_size and have.st_mtime_ns == info.st_mtime_ns:
                return False
        except OSError:
            pass
        dst.parent.mkdir(parents=True, exist_ok=True)
        out_fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
        try:
            with os.fdopen(out_fd, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
            os.utime(tmp, ns=(info.st_atime_ns, info.st_mtime_ns))
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return True


# ---------------------------------------------------------------- reading a run


def read_metrics(run: Run) -> tuple[list[dict[str, Any]], bytes | None, int]:
    """The parsed per-epoch records, the bytes of the complete lines (a torn last line is left
    out; None without a metrics.jsonl) and how many complete lines were skipped (not JSON objects)."""
    try:
        raw = rundir.read_bytes(run.path, METRICS_FILE, rundir.MAX_METRICS_BYTES)
    except FileNotFoundError:
        return [], None, 0
    records, skipped = rundir.metrics_records(raw)
    return records, raw[: raw.rfind(b"\n") + 1], skipped


def _read_json(run: Run, name: str) -> dict[str, Any] | None:
    """A JSON object file of the run (None when missing); a RunFileError when malformed."""
    try:
        return rundir.read_object(run.path, name)
    except FileNotFoundError:
        return None


def _flatten(data: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}"))
    return out


def hyperparameters(run: Run) -> dict[str, Any]:
    """The ``train:`` section of the run's resolved spec as dotted keys (``train.lr``, ``train.sampler.positive_weight``);
    a command job's ``vars`` (``vars.lr``)."""
    from cluster.spec import parse_yaml

    try:
        data = parse_yaml(rundir.read_text(run.path, SPEC_FILE))
    except FileNotFoundError:
        return {}
    except RunFileError:
        raise
    except Exception:  # noqa: BLE001 - a broken spec's YAML only loses the hyper-parameter columns
        return {}
    if isinstance(data, dict) and isinstance(data.get("vars"), dict) and "command" in data:
        return _flatten(data["vars"], "vars")
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        return {}
    return _flatten(data["train"], "train")


def _is_command_run(run: Run) -> bool:
    try:
        return run.read().get("kind") == "command"
    except ClusterError:
        return False


def program_files(run: Run) -> list[str]:
    """What a command job's program wrote in its run directory (relative paths, sorted): every
    regular file but the toolkit's own (run.json, the spec, the script, logs, metrics) and
    half-written temporaries. Links (to files or folders) are not followed and not listed."""
    own = {RUN_JSON, SPEC_FILE, SCRIPT_FILE, METRICS_FILE, SUMMARY_FILE, TRAINER_LOCK, RUN_LOCK}
    found = []
    for top, dirs, files in os.walk(run.path, followlinks=False):
        relative_top = Path(top).relative_to(run.path)
        dirs[:] = [d for d in dirs if not (relative_top == Path(".") and d == LOGS_DIR)
                   and not os.path.islink(os.path.join(top, d))]
        for name in files:
            relative = relative_top / name
            if str(relative) in own or name.startswith(TMP_PREFIX):
                continue
            if os.path.isfile(os.path.join(top, name)) and not os.path.islink(os.path.join(top, name)):
                found.append(str(relative))
    return sorted(found)


_LOG = re.compile(r"[^/]*\.(?:out|err)")
_EVENTS = re.compile(r"events\.out\.tfevents\..*")


def _board_files(run: Run) -> list[str]:
    """train.tensorboard's event files (every attempt's), the folder reached without links."""
    try:
        folder = rundir.check_dir(run.path, TENSORBOARD_DIR)
    except FileNotFoundError:
        return []
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if _EVENTS.fullmatch(e.name))  # a link among them: refused


def copy_plan(run: Run, command_job: bool) -> list[tuple[Path, str, str]]:
    """(base, its relative source, relative destination) of every file collect copies, each
    opened once here (a link, a FIFO or a directory where a file should be is a RunFileError
    before anything of the run is written)."""
    plan = []
    for name in dict.fromkeys((*FILES, *program_files(run))) if command_job else FILES:
        plan.append((run.path, name, name))
    plan += [(run.logs_base, f"{LOGS_DIR}/{name}", f"{LOGS_DIR}/{name}") for name in run.log_names(_LOG)]
    if not command_job:
        plan += [(run.path, f"{TENSORBOARD_DIR}/{n}", f"{TENSORBOARD_DIR}/{n}") for n in _board_files(run)]
    checked = []
    for base, relative, target in plan:
        try:
            os.close(rundir.open_fd(base, relative))
        except FileNotFoundError:
            continue
        checked.append((base, relative, target))
    return checked


# ---------------------------------------------------------------- plotting


def plot_curves(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training and validation loss (left) and validation metrics (right) per epoch, as a PNG.

    Raises ImportError when matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a login node
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    try:
        for ax, keys, label in ((left, LOSS_KEYS, "loss"), (right, VAL_KEYS, "validation metric")):
            for key in keys:
                points = [(r["epoch"], r[key]) for r in records
                          if isinstance(r.get("epoch"), (int, float)) and isinstance(r.get(key), (int, float))]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker="o", label=key)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        fig.suptitle(title)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    write_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------- one run


def _state_rows(runs: list[Run], metric: str) -> dict[str, tuple[str, str | None]]:
    """Each run's (state, diagnosis), asking the scheduler once; its own files when it does not answer."""
    from cluster.status import decide_state, rows_for

    try:
        return {row.path: (row.state, row.diagnosis) for row in rows_for(runs, metric)}
    except ClusterError as err:
        log.warning("warning: the scheduler did not answer (%s); states come from the run directories", err)
    out = {}
    for run in runs:
        try:
            out[str(run.path)] = (decide_state(run.read(), None, run), None)
        except (ClusterError, RunFileError) as err:
            out[str(run.path)] = ("unknown", str(err))
    return out


def _destinations(runs: list[Run], to: Path) -> list[Path]:
    """``to/<run_id>``; runs that share an id (tasks of two sweeps) are told apart by their parent's name."""
    ids = [run.id for run in runs]
    return [to / (run.id if ids.count(run.id) == 1 else f"{run.path.parent.name}-{run.id}") for run in runs]


FACT_KEYS = ("run_id", "name", "state", "scheduler", "job_ids", "requeues", "run_dir", "collected_at", "complete",
             "hyperparameters", "collected_files", "path")
"""What collect itself states about a run: a summary.json of the run's cannot override them
(the trainer's own summary has none of these keys)."""


def collect_run(run: Run, dest: Path, state: str, plot: bool = True) -> dict[str, Any]:
    """Copy one run's files into ``dest`` and write its summary.json (and curves.png); return that summary.

    Everything is read and checked first: a broken file of the run (a link, a FIFO, malformed
    JSON) is a one-line error before anything of the run is written.
    """
    record = run.read()
    command_job = record.get("kind") == "command"
    plan = copy_plan(run, command_job)
    records, complete, skipped = read_metrics(run)
    own = _read_json(run, SUMMARY_FILE)
    params = hyperparameters(run)

    dest.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    for base, relative, target in plan:
        try:
            copy_atomic(base, relative, dest / target)
        except FileNotFoundError:  # removed since the plan (a rotated checkpoint): nothing to copy
            continue
        copied.append(target)
    if complete is not None:
        target = dest / METRICS_FILE
        if not (target.is_file() and target.read_bytes() == complete):
            write_atomic(target, complete)
        copied.append(METRICS_FILE)

    facts: dict[str, Any] = {
        "run_id": run.id,
        "name": record.get("name", ""),
        "state": state,
        "scheduler": record.get("scheduler", ""),
        "job_ids": [job.get("job_id") for job in record.get("jobs") or []],
        "requeues": record.get("requeues", 0),
        "run_dir": str(run.path),
        "collected_at": now_iso(),
        # A command job's program completes by exiting 0; it writes no summary of ours.
        "complete": own is not None or (command_job and state == "completed"),
        "hyperparameters": params,
        "collected_files": copied,
    }
    if own is None:
        facts["last_metrics"] = records[-1] if records else None
    if skipped:
        facts["skipped_metrics_lines"] = skipped
    # The run's own summary adds its values; collect's facts about the run stay collect's.
    summary = {**facts, **{k: v for k, v in (own or {}).items() if k not in FACT_KEYS}}
    write_atomic(dest / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=False) + "\n")

    if plot and records:
        name = record.get("name") or ""
        title = run.id if not name or run.id.startswith(name) else f"{name} {run.id}"
        plot_curves(records, dest / "curves.png", f"{printable(title)} ({state})")
    return summary


def _is_run_folder(folder: Path) -> bool:
    """A run or sweep directory, not a copy an earlier collect made (which holds run.json too,
    with a summary.json of collect's naming another folder as the run's)."""
    if os.path.lexists(folder / SWEEP_JSON):
        return True
    if not os.path.lexists(folder / RUN_JSON):
        return False
    try:
        summary = rundir.read_object(folder, SUMMARY_FILE)
    except (OSError, RunFileError):
        return True
    return not ("collected_at" in summary and summary.get("run_dir") not in (str(folder), None))


def check_destination(to: Path, runs: list[Run], dests: list[Path]) -> None:
    """Refuse a destination inside a run or sweep directory (the runs collected or any other),
    or one that is such a directory: collect must never write into a run (a summary.json
    written there would make a failed run look completed)."""
    collected = [run.path.resolve() for run in runs]
    for place in [to, *dests]:
        path = place.expanduser().resolve()
        for folder in [path, *path.parents]:
            if folder in collected or _is_run_folder(folder):
                raise ClusterError(f"--to {to}: {place} is inside the run directory {folder}; collect into a "
                                   "folder outside every run (e.g. --to results)")


# ---------------------------------------------------------------- comparison


def _metric_value(summary: dict[str, Any], key: str) -> Any:
    if key in summary:
        return summary[key]
    return (summary.get("last_metrics") or {}).get(key)


def _lower_is_better(metric: str) -> bool:
    return "loss" in metric or metric.endswith(("error", "seconds"))


def comparison_rows(summaries: list[dict[str, Any]], metric: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows (best first by ``metric``; runs without it last) of the comparison table."""
    differing = sorted({key for s in summaries for key in s.get("hyperparameters", {})
                        if len({json.dumps(t.get("hyperparameters", {}).get(key)) for t in summaries}) > 1})
    columns = ["run_id", "state", "epochs", metric] + [m for m in TABLE_METRICS if m != metric]
    columns += ["best_epoch", "wall_seconds", "samples_per_second"] + differing + ["path"]
    rows = []
    for s in summaries:
        row: dict[str, Any] = {"run_id": s["run_id"], "state": s["state"], "path": s["path"]}
        row["epochs"] = s.get("epochs", _metric_value(s, "epoch"))
        for key in columns:
            if key not in row and key not in differing:
                row[key] = _metric_value(s, key)
        for key in differing:
            row[key] = s.get("hyperparameters", {}).get(key)
        rows.append(row)

    def key(row: dict[str, Any]) -> tuple[int, float]:
        value = row.get(metric)
        if not isinstance(value, (int, float)) or value != value:
            return (1, 0.0)
        return (0, value if _lower_is_better(metric) else -value)

    rows.sort(key=key)
    return columns, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def write_comparison(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    write_atomic(path, buffer.getvalue())


def table_lines(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    shown = [c for c in columns if c != "path"]
    return format_table([shown] + [[_cell(row.get(c)) or "-" for c in shown] for row in rows])


# ---------------------------------------------------------------- command


def collect(runs: list[str], to: str, echo: Callable[[str], None], metric: str = "val_auc") -> int:
    """Collect runs (sweep directories stand for their tasks) into ``to``; ``echo`` what was done."""
    from cluster.status import discover_runs

    found = discover_runs(runs)
    if not found:
        raise ClusterError(f"no runs found in {' '.join(runs)}")
    dest_root = Path(to)
    destinations = _destinations(found, dest_root)
    check_destination(dest_root, found, destinations)
    states = _state_rows(found, metric)
    plot = importlib.util.find_spec("matplotlib") is not None
    if not plot:
        echo("matplotlib is not installed (pip install 'cluster-train[plot]'): skipping curves.png")
    summaries, failed = [], 0
    collected: list[tuple[Run, Path]] = []
    for run, dest in zip(found, destinations):
        state, diagnosis = states.get(str(run.path), ("unknown", None))
        try:
            summary = collect_run(run, dest, state, plot=plot)
        except (RunFileError, ClusterError) as err:  # a broken file of this run: one line, the others go on
            failed += 1
            log.error("cluster collect: %s; run %s not collected", printable(err), printable(run.id))
            continue
        summary["path"] = str(dest)
        summaries.append(summary)
        collected.append((run, dest))

        value = _metric_value(summary, metric)
        shown = f"{metric} {value:.4f}" if isinstance(value, (int, float)) else f"no {metric} yet"
        if not isinstance(value, (int, float)) and _is_command_run(run):
            own_files = program_files(run)
            shown = "its files: " + (", ".join(own_files[:5]) + (", ..." if len(own_files) > 5 else "") or "none")
        if summary["complete"]:
            note = ""
        elif state in LIVE_STATES:
            note = f" -- still {state}: collected what exists so far; collect again when it ends"
        else:
            note = f" -- ended {state} without a summary" + (f" ({diagnosis})" if diagnosis else "")
        missing = [n for n in (FINAL, BEST) if n not in summary["collected_files"]]
        if missing and summary["complete"] and not _is_command_run(run):
            note += f" (missing: {', '.join(missing)})"
        if summary.get("skipped_metrics_lines"):
            note += f" ({summary['skipped_metrics_lines']} {METRICS_FILE} line(s) skipped: not JSON objects)"
        echo(printable(f"run {run.id} ({state}): {dest}  {shown}{note}"))

    if plot:  # each attempt on one time axis (per run, and of all runs together)
        from cluster.timeline import write_timelines

        # Only the runs collected: a refused run gets nothing written, not even a timeline.
        for path in write_timelines([r for r, _ in collected], [d for _, d in collected], dest_root):
            echo(f"timeline: {path}")

    if len(summaries) > 1:
        columns, rows = comparison_rows(summaries, metric)
        if not any(isinstance(r.get(metric), (int, float)) for r in rows):
            echo(f"warning: no run has a value for {metric!r}; the table keeps the order of the runs")
        write_comparison(dest_root / "comparison.csv", columns, rows)
        echo("")
        for line in table_lines(columns, rows):
            echo(printable(line))
        echo(f"\ncomparison (sorted by {metric}, best first): {dest_root / 'comparison.csv'}")
    return 1 if failed else 0
