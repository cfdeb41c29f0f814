"""`cluster report`'s arithmetic on recorded output: sacct --duplicates of a real run (two requeues
and a node failure, tests/backends/slurm/fixtures/report_requeues_node_failure/, recorded from
the two-node test cluster with that run's own files), PBS Pro's qstat -x -f fixture, and the
right-sizing rules. The live versions are tests/backends/slurm/test_report_slurm.py."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from cluster.backends.pbs.usage import parse_usage
from cluster.backends.slurm_sacct import parse_sacct_duplicates
from cluster.report import AttemptRow, RunReport, right_sizing, run_report
from cluster.runs import Run

FIXTURES = Path(__file__).resolve().parent / "backends"
RECORDED = FIXTURES / "slurm/fixtures/report_requeues_node_failure"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch):
    """sacct prints the cluster's local time without a zone; it was recorded on a UTC machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def recorded_run(tmp_path: Path) -> Run:
    run_dir = tmp_path / "ddp-smoke-20261206-205239-da1d19"
    shutil.copytree(RECORDED, run_dir, ignore=shutil.ignore_patterns("sacct.txt"))
    return Run(run_dir)


def test_sacct_duplicates_keep_every_incarnation_with_its_steps_usage() -> None:
    (usages,) = parse_sacct_duplicates((RECORDED / "sacct.txt").read_text()).values()
    assert [u.state for u in usages] == ["REQUEUED", "REQUEUED", "NODE_FAIL", "COMPLETED"]
    assert [u.elapsed_seconds for u in usages] == [13, 16, 27, 46]
    assert {(u.cpus, u.gpus, u.mem_mb) for u in usages} == {(1, 1, 1024)}
    assert usages[0].peak_rss_mb == pytest.approx(346800 / 1024)  # the larger of .batch and step 0
    assert usages[0].cpu_seconds_used == pytest.approx(0.009 + 5.561)  # the steps' TotalCPU, summed
    assert usages[2].peak_rss_mb is None and usages[2].cpu_seconds_used is None  # killed with its node
    assert usages[3].nodes == "n2" and usages[3].started.isoformat() == "2026-12-06T20:54:49+00:00"


def test_the_ledger_of_a_run_with_two_requeues_and_a_node_failure(recorded_run: Run) -> None:
    record = recorded_run.read()
    usages = parse_sacct_duplicates((RECORDED / "sacct.txt").read_text())
    report = run_report(recorded_run, record, "completed", usages, "sacct")
    rows = report.attempts
    assert [r.ended_by for r in rows] == ["requeued", "requeued", "node-failure", "completed"]
    assert [r.gpu_hours for r in rows] == pytest.approx([13 / 3600, 16 / 3600, 27 / 3600, 46 / 3600])
    assert [r.queue_seconds for r in rows] == [1, 28, 24, 12]  # Start - Submit of each incarnation
    (failure,) = record["node_failures"]
    assert [r.steps_redone for r in rows] == [0, 0, failure["failed_at_step"] - failure["resumed_from_step"], 0]
    final = json.loads((recorded_run.path / "metrics.jsonl").read_text().splitlines()[-1])["global_step"]
    assert report.totals.steps - report.totals.steps_redone == final
    assert report.totals.gpu_hours == pytest.approx(102 / 3600) and report.totals.unit == "GPU"
    # Useful: the redone attempt counts nothing, the others less their time before the first step.
    assert rows[2].useful_hours == 0
    assert rows[3].useful_hours == pytest.approx(46 / 3600 * (1 - rows[3].first_step_seconds / 46))
    assert report.totals.useful_share == pytest.approx(sum(r.useful_hours for r in rows) / (102 / 3600), abs=1e-3)
    assert report.advice == []  # asked 1G for a 390 MB peak and 10 minutes: nothing far above


def test_without_accounting_the_ledger_comes_from_the_runs_own_records(recorded_run: Run) -> None:
    report = run_report(recorded_run, recorded_run.read(), "completed", None, "sacct")
    assert report.source == "run records" and {r.source for r in report.attempts} == {"run records"}
    assert [r.ended_by for r in report.attempts] == ["requeued", "requeued", "node-failure", "completed"]
    # The checkpointed stops' own times; the crashed attempt has no end of its own.
    assert report.attempts[0].elapsed_seconds is not None and report.attempts[2].elapsed_seconds is None
    assert {(r.cpus, r.gpus) for r in report.attempts} == {(1, 1)}  # the spec's request
    assert report.advice == []


def _measured(peak_mb: float | None, elapsed: int, efficiency: float | None) -> AttemptRow:
    return AttemptRow(number=1, job_id="1", ended_by="completed", elapsed_seconds=elapsed, cpus=4, gpus=1,
                      peak_rss_mb=peak_mb, cpu_efficiency=efficiency, source="sacct")


REQUEST = {"mem_mb": 16 * 1024, "time_seconds": 7200, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 4,
           "gpus_per_node": 1}


def test_right_sizing_lines_from_a_measured_peak_and_elapsed() -> None:
    report = RunReport(run_id="r", name="seed", path="/r", scheduler="slurm", state="completed", source="sacct",
                       attempts=[_measured(215.0, 250, 0.22), _measured(180.0, 100, 0.25)], requested=REQUEST)
    assert right_sizing(report) == [
        "asked mem 16G, peak 0.21 GB per node: `resources.mem: 1G` would do",
        'walltime 02:00:00, longest attempt 0:04:10 (the whole run 0:05:50): `resources.time: "00:10:00"` would do',
        "cpus_per_task 4, 0.9 busy on average (CPU efficiency 23%): `resources.cpus_per_task: 2` would do",
    ]
    # Two tasks per node share the node's memory: the peak counts twice against the request.
    one = RunReport(**{**report.__dict__, "attempts": [_measured(300.0, 250, 0.22)],
                       "requested": {**REQUEST, "mem_mb": 2048}})
    assert right_sizing(one)[0] == "asked mem 2G, peak 0.29 GB per node: `resources.mem: 1G` would do"
    two = RunReport(**{**one.__dict__, "requested": {**REQUEST, "tasks_per_node": 2, "mem_mb": 2048}})
    assert not any(line.startswith("asked mem") for line in right_sizing(two))  # 2 x 0.29 GB: 2G is right


def test_nothing_is_suggested_without_measurements() -> None:
    unmeasured = AttemptRow(number=1, job_id="1", ended_by="completed", elapsed_seconds=250, cpus=4, gpus=1)
    report = RunReport(run_id="r", name="seed", path="/r", scheduler="slurm", state="completed",
                       source="run records", attempts=[unmeasured], requested=REQUEST)
    assert right_sizing(report) == []
    # Measured, but the run has not completed: how long it needs is not known yet.
    running = RunReport(**{**report.__dict__, "state": "running", "attempts": [_measured(None, 250, None)]})
    assert right_sizing(running) == []


def test_pbs_history_gives_allocation_and_usage() -> None:
    usages = parse_usage((FIXTURES / "pbs/fixtures/pbspro_qstat_xf.json").read_text(), "pbspro")
    (running,) = usages["101.pbs"]
    assert (running.cpus, running.gpus, running.elapsed_seconds) == (8, 1, 602)
    assert running.cpu_seconds_allocated == 8 * 602 and running.cpu_seconds_used == 581
    assert running.peak_rss_mb == pytest.approx(2314520 / 1024)
    assert running.normal_state == "running" and running.started is not None
    (finished,) = usages["104.pbs"]
    assert finished.normal_state == "ended" and finished.elapsed_seconds == 10


def test_timeline_png_of_the_recorded_run(recorded_run: Run, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from cluster.timeline import plot_timeline

    usages = parse_sacct_duplicates((RECORDED / "sacct.txt").read_text())
    report = run_report(recorded_run, recorded_run.read(), "completed", usages, "sacct")
    plot_timeline([report], tmp_path / "timeline.png", "recorded")
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"


PROBE = """
import json, sys
import cluster.cli
code = cluster.cli.main(json.loads(sys.argv[1]))
heavy = sorted(m for m in ("torch", "numpy", "submitit", "matplotlib") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def test_report_and_doctor_import_no_torch_numpy_or_matplotlib(recorded_run: Run, tmp_path: Path) -> None:
    import subprocess
    import sys

    record = recorded_run.read()
    record["scheduler"] = "local"  # no scheduler is asked here (nor the machine's default Slurm)
    recorded_run.record_path.write_text(json.dumps(record))
    repo = Path(__file__).resolve().parents[1]
    for argv in (["report", str(recorded_run.path), "--json"], ["report", str(recorded_run.path)],
                 ["doctor", str(recorded_run.path / "spec.yaml")]):
        proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        probe = json.loads(proc.stderr.strip().splitlines()[-1])
        # (doctor imports submitit for its own checks, with or without earlier runs)
        assert [m for m in probe["heavy"] if argv[0] == "report" or m != "submitit"] == [], (argv, probe)
        if argv[0] == "report":
            assert probe["code"] == 0 and "requeued" in proc.stdout, proc.stdout + proc.stderr


def test_how_each_attempt_ended_from_the_runs_records(tmp_path: Path) -> None:
    """Requeue on the walltime warning, a chain link, a resume by hand, and a failure, from
    run.json and attempts.jsonl alone."""
    run = Run(tmp_path / "run")
    run.path.mkdir()
    start = "2026-12-06T10:00:0{}+00:00"
    record = {"name": "x", "scheduler": "local", "state": "failed", "ended": "2026-12-06T10:00:09+00:00",
              "jobs": [{"job_id": "1", "reason": "submit"}, {"job_id": "2", "reason": "continue"},
                       {"job_id": "3", "reason": "resume"}],
              "attempts": [{"job_id": "1", "started": start.format(0), "resumed_from_step": None},
                           {"job_id": "1", "started": start.format(2), "resumed_from_step": 10},
                           {"job_id": "2", "started": start.format(4), "resumed_from_step": 20},
                           {"job_id": "3", "started": start.format(6), "resumed_from_step": 25}]}
    events = [{"attempt": 1, "event": "stop", "global_step": 10, "reason": "SIGUSR2"},
              {"attempt": 2, "event": "stop", "global_step": 20, "reason": "deadline"},
              {"attempt": 3, "event": "stop", "global_step": 30, "reason": "SIGTERM"}]
    (run.path / "attempts.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    report = run_report(run, record, "failed", None, "run records")
    assert [a.ended_by for a in report.attempts] == ["walltime", "walltime, chain-link", "resumed", "failed"]
    # Attempt 3 stopped at 30 but the resume found only the checkpoint of step 25.
    assert [a.steps_redone for a in report.attempts[:3]] == [0, 0, 5]
