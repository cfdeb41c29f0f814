"""``cluster.status.decide_state``: the run's own record against what the scheduler says; and the
line ``cluster status`` prints for a waiting run (why it waits, the start estimate).

One table, no scheduler: each row is a run record, whether the run directory holds a
``summary.json``, the scheduler's answer (a ``JobInfo``, or ``None`` when it no longer knows
the job) and the state ``cluster status`` must show. The rows follow decide_state's rules in
order of precedence; a rule's extra rows show it winning over a later rule or where it stops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cluster.backends import JobInfo
from cluster.cli import status_lines
from cluster.runs import Run
from cluster.status import Row, _row, decide_state


class Case(NamedTuple):
    own: str  # record["state"], what the job itself last wrote
    job: JobInfo | None  # the scheduler's answer; None: it has forgotten the job
    expected: str
    scheduler: str = "slurm"
    summary: bool = False  # the trainer wrote summary.json
    requeues: int = 0
    last_job_cancelled: bool = False  # `cluster cancel` marked the current job


def job(state: str) -> JobInfo:
    return JobInfo(state=state, raw_state=state.upper())


CASES = {
    # 1. The run's own "completed", or its summary.json, wins over anything the scheduler says.
    "own-completed-wins": Case("completed", job("failed"), "completed"),
    "summary-json-wins": Case("running", job("failed"), "completed", summary=True),
    "summary-json-wins-over-cancelled": Case("cancelled", job("cancelled"), "completed", summary=True),
    # 2. Cancelled (by the record, or the current job marked cancelled) wins over the scheduler.
    "own-cancelled-wins": Case("cancelled", job("running"), "cancelled"),
    "cancelled-job-wins": Case("running", job("running"), "cancelled", last_job_cancelled=True),
    # 3. The scheduler forgot the job (or said "unknown"): the run's files tell.
    "forgotten-terminal-keeps-own": Case("timeout", None, "timeout"),
    "forgotten-slurm-running-keeps-own": Case("running", None, "running"),
    "unknown-counts-as-forgotten": Case("failed", job("unknown"), "failed"),
    "forgotten-local-running-is-failed": Case("running", None, "failed", scheduler="local"),
    "forgotten-local-requeued-is-failed": Case("requeued", job("unknown"), "failed", scheduler="local"),
    "forgotten-local-pending-keeps-own": Case("pending", None, "pending", scheduler="local"),
    # 4. A local controller that ended (or a PBS job qstat calls finished): failed unless the run ended itself.
    "ended-controller-running-is-failed": Case("running", job("ended"), "failed", scheduler="local"),
    "ended-controller-keeps-own-terminal": Case("timeout", job("ended"), "timeout", scheduler="local"),
    # 5. Pending again after requeues shows as requeued.
    "pending-after-requeues-is-requeued": Case("requeued", job("pending"), "requeued", requeues=2),
    "pending-without-requeues-is-pending": Case("pending", job("pending"), "pending"),
    # 6. The scheduler says completed but the trainer did not finish (stopped on a signal).
    "scheduler-completed-trainer-not-is-failed": Case("running", job("completed"), "failed"),
    "scheduler-completed-while-requeued-is-requeued": Case("requeued", job("completed"), "requeued"),
    # 7. Otherwise the scheduler's state.
    "otherwise-scheduler-running": Case("pending", job("running"), "running"),
    "otherwise-scheduler-timeout": Case("running", job("timeout"), "timeout"),
    "otherwise-scheduler-out-of-memory": Case("running", job("out-of-memory"), "out-of-memory"),
}


def _record(case: Case) -> dict[str, Any]:
    current = {"job_id": "1234", **({"cancelled": True} if case.last_job_cancelled else {})}
    return {"state": case.own, "scheduler": case.scheduler, "requeues": case.requeues,
            "jobs": [{"job_id": "1200"}, current]}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decide_state(case: Case, tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "smoke-20250101-000000-abcdef"
    run_dir.mkdir(parents=True)
    if case.summary:
        (run_dir / "summary.json").write_text(json.dumps({"weights_sha256": "0" * 64}))
    assert decide_state(_record(case), case.job, Run(run_dir)) == case.expected


# ---------------------------------------------------------------- why a waiting run waits

RUN_ID = "smoke-20261202-155923-0ffe30"


@pytest.mark.parametrize("own, job_state, requeues, reason, estimate, line", [
    ("pending", "pending", 0, "Resources", "2026-12-02T16:06:01",
     f"{RUN_ID}: pending (Resources), start estimate 2026-12-02T16:06:01"),
    ("pending", "pending", 0, "Dependency", "", f"{RUN_ID}: pending (Dependency)"),
    ("pending", "pending", 0, "", "2026-12-02T16:56:02", f"{RUN_ID}: pending, start estimate 2026-12-02T16:56:02"),
    ("requeued", "pending", 1, "BeginTime", "2026-12-02T15:57:28",
     f"{RUN_ID}: requeued, pending (BeginTime), start estimate 2026-12-02T15:57:28"),
    ("pending", "pending", 0, "", "", None),  # the scheduler says neither: no line
    ("running", "running", 0, "Resources", "2026-12-02T16:06:01", None),  # not waiting: no line
])
def test_waiting_line(own: str, job_state: str, requeues: int, reason: str, estimate: str, line: str | None,
                      tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    record = {"state": own, "scheduler": "slurm", "requeues": requeues, "name": "smoke", "jobs": [{"job_id": "6"}]}
    info = {("slurm", "6"): JobInfo(state=job_state, raw_state=job_state.upper(), reason=reason,
                                    start_estimate=estimate)}
    row = _row(Run(run_dir), record, info, "val_auc")
    lines = status_lines([row])
    waiting = [text for text in lines if text.startswith(f"{RUN_ID}:")]
    assert waiting == ([line] if line else []), lines
    data = row.to_dict()  # cluster status --json carries both
    assert (data["wait_reason"], data["start_estimate"]) == ((reason, estimate) if line else ("", ""))


def test_waiting_line_comes_before_notes_and_diagnoses() -> None:
    rows = [Row(run_id="a", name="a", scheduler="slurm", job_id="1", state="pending", wait_reason="Priority",
                notes=["node n1 failed at step 3; resumed on n2 from step 2"]),
            Row(run_id="b", name="b", scheduler="slurm", job_id="2", state="failed", diagnosis="Python error",
                action="cluster resume b")]
    assert status_lines(rows)[-3:] == ["a: pending (Priority)", "a: node n1 failed at step 3; resumed on n2 from step 2",
                                       "b: Python error -> cluster resume b"]


def test_node_failure_notes_say_whether_the_run_resumed() -> None:
    from cluster.status import node_failure_notes

    record = {"node_failures": [
        {"node": "n1", "failed_at_step": 40, "resumed_from_step": 40, "resumed_on": "n2"},
        {"node": "n2", "failed_at_step": 90, "resumed_from_step": 80, "resumed_on": "n1",
         "gave_up": "more than scheduler.max_node_failures (1)"},
        "not a dict"]}
    assert node_failure_notes(record) == [
        "node n1 failed at step 40; resumed on n2 from step 40",
        "node n2 failed at step 90; not resumed: more than scheduler.max_node_failures (1)"]
