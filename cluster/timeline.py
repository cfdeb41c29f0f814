"""``timeline.png`` (``cluster collect``): every attempt of a run, or every run of a sweep, as bars
on one time axis: queued, setting up (start to the first step), training, and the training that
was redone later, each attempt labelled with how it ended.

matplotlib is imported inside :func:`plot_timeline` only: the login path stays light.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from cluster.report import AttemptRow, RunReport
from cluster.runs import Run
from train.contract import write_atomic

COLOURS = {"queued": "#c9c9c9", "setup": "#f2c14e", "training": "#3a7d44", "redone": "#d1495b"}


def _at(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _spans(row: AttemptRow, now: dt.datetime) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(kind, start, end) of the parts of one attempt's bar."""
    started = _at(row.started)
    if started is None:
        return []
    ended = _at(row.ended) or (started + dt.timedelta(seconds=row.elapsed_seconds) if row.elapsed_seconds is not None
                               else now)
    spans = []
    submitted = _at(row.submitted)
    if submitted and submitted < started:
        spans.append(("queued", submitted, started))
    first = started + dt.timedelta(seconds=row.first_step_seconds or 0)
    first = min(max(first, started), ended)
    if first > started:
        spans.append(("setup", started, first))
    if row.steps and row.steps_redone:
        redone_from = first + (ended - first) * ((row.steps - min(row.steps_redone, row.steps)) / row.steps)
        spans += [("training", first, redone_from), ("redone", redone_from, ended)]
    else:
        spans.append(("training", first, ended))
    return spans


def plot_timeline(reports: list[RunReport], path: Path, title: str) -> None:
    """Write the timeline of ``reports`` to ``path`` (PNG, atomically): one lane per attempt for
    a single run, one lane per run (its attempts side by side) for several.

    Raises ImportError when matplotlib is not installed."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a login node
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    now = dt.datetime.now().astimezone()
    single = len(reports) == 1
    lanes: list[tuple[str, list[AttemptRow]]] = (
        [(f"attempt {a.number or '-'} (job {a.job_id})", [a]) for a in reports[0].attempts] if single
        else [(r.run_id, r.attempts) for r in reports])
    starts = [s for _, rows in lanes for row in rows for _, s, _ in _spans(row, now)]
    origin = min(starts) if starts else now
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * max(1, len(lanes))))
    for lane, (_, rows) in enumerate(lanes):
        y = len(lanes) - 1 - lane  # the first attempt on top
        for index, row in enumerate(rows):
            spans = _spans(row, now)
            for kind, start, end in spans:
                left = (start - origin).total_seconds() / 60
                ax.barh(y, (end - start).total_seconds() / 60, left=left, height=0.6, color=COLOURS[kind],
                        edgecolor="white", linewidth=0.5)
            if not spans:
                continue
            right = (spans[-1][2] - origin).total_seconds() / 60
            if single:
                redone = f", {row.steps_redone} steps redone" if row.steps_redone else ""
                ax.text(right, y, f" {row.ended_by}{redone}", va="center", fontsize=8)
            elif index == len(rows) - 1:  # a run's lane: how it ended, its attempts and redone work
                redone = sum(r.steps_redone or 0 for r in rows)
                more = f"{len(rows)} attempts" if len(rows) > 1 else ""
                extra = ", ".join(x for x in (more, f"{redone} steps redone" if redone else "") if x)
                ax.text(right, y, f" {row.ended_by}" + (f" ({extra})" if extra else ""), va="center", fontsize=8)
    ax.set_yticks(range(len(lanes)), [name for name, _ in reversed(lanes)], fontsize=8)
    ax.set_xlabel(f"minutes since {origin.strftime('%Y-%m-%d %H:%M:%S')}")
    ax.set_title(title)
    ax.margins(x=0.15 if single else 0.3)  # room for the labels after the last bar
    fig.legend(handles=[Patch(color=c, label=k) for k, c in COLOURS.items()], loc="lower center", ncol=4,
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))  # room for the legend below the axis label
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def write_timelines(runs: list[Run], dests: list[Path], root: Path) -> list[Path]:
    """``timeline.png`` of each run in its ``dests`` folder, and of all of them in ``root`` when
    there are several (a sweep): one accounting query for all. The paths written."""
    from cluster.report import build_report

    report = build_report(runs)
    by_path = {r.path: r for r in report.runs}
    written = []
    for run, dest in zip(runs, dests):
        one = by_path.get(str(run.path))
        if one is not None and one.attempts:
            dest.mkdir(parents=True, exist_ok=True)
            plot_timeline([one], dest / "timeline.png", f"{one.run_id} ({one.state}; source: {one.source})")
            written.append(dest / "timeline.png")
    if len(report.runs) > 1:
        root.mkdir(parents=True, exist_ok=True)
        sweeps = sorted({r.sweep for r in report.runs if r.sweep})
        title = f"{Path(sweeps[0]).name}: {len(report.runs)} runs" if len(sweeps) == 1 else f"{len(report.runs)} runs"
        plot_timeline(report.runs, root / "timeline.png", title)
        written.append(root / "timeline.png")
    return written
