"""`cluster report` on the real two-node test Slurm: one run with two requeues and one node
failure, reported from ``sacct --duplicates`` (one call) and, with accounting off, from the run's
own records; its timeline; a 100-run sweep reported with one sacct call; and right-sizing from a
job whose peak memory is known.

The requeues are ``scontrol requeue`` of the running job (SIGTERM: the trainer checkpoints and
stops; Slurm starts the job again by itself ~10 s later), the node failure is
``support.slurm.crash_node`` (as tests/multinode does): the work since the last periodic
checkpoint is lost and redone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.runs import Run
from train.contract import read_attempt_events
from train.runfiles import resume_point

from support import slurm as sh
from support.runs import REPO, calls, cluster_cmd, counting_wrappers, last_run, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.serial]  # the scenario crashes a node under every job beside it

SPEC = REPO / "jobs/ddp_smoke.yaml"
# One task with one (fake) GPU on the gpu partition, trained on the CPU, one epoch of 5,000
# steps and no periodic checkpoints: the only checkpoints are those written when a requeue stops
# the trainer (and the one at the end). progress.json is written every 10 s, so any mid-run
# progress record of attempt 3 is past its checkpoint, and a node crash then loses the steps in
# between, which attempt 4 redoes. The epoch takes ~17 s at 300 steps/s, ~80 s on a loaded
# machine: attempt 3 reaches its first progress record (10 s in) with the run still going.
# (Twelve epochs of 400 steps, as before, left a fraction of a second between a mid-epoch
# record and the next epoch's checkpoint, and a loaded machine missed it.)
SCENARIO = ["--set", "resources.tasks_per_node=1", "--set", "resources.queue=gpu", "--set",
            "resources.gpus_per_node=1", "--set", "train.device=cpu", "--set", "train.epochs=1", "--set",
            "train.data.samples=200000", "--set", "train.checkpoint.every_steps=0", "--set",
            "train.checkpoint.every_minutes=0", "--set", "scheduler.max_requeues=5"]


def _report(*args: str, cwd: Path, env_path: str | None = None) -> dict:
    env = dict(os.environ, PATH=env_path) if env_path else None
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "report", *args, "--json"], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _training(run: Run, attempt: int) -> bool:
    """The run's ``attempt``-th attempt has done its first optimizer step."""
    return any(e.get("attempt") == attempt and e.get("event") == "first_step" for e in read_attempt_events(run.path))


def _progress_past_checkpoint(run: Run) -> bool:
    """progress.json records steps past the newest checkpoint (a crash now loses them), mid-epoch
    (the record at the epoch's end comes with that epoch's checkpoint)."""
    try:
        progress = json.loads((run.path / "progress.json").read_text())
        reached, in_epoch = progress["global_step"], progress["step"]
    except (OSError, ValueError, KeyError):
        return False
    return in_epoch >= 10 and reached > (resume_point(run.path) or {}).get("global_step", 0) + 10


@pytest.fixture(scope="module")
def scenario(slurm_cluster, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The run: attempts 1 and 2 end by ``scontrol requeue``, attempt 3 by a node crash, attempt 4
    completes."""
    workdir = tmp_path_factory.mktemp("report-scenario")
    proc = cluster_cmd("submit", str(SPEC), "--executor", "slurm", *SCENARIO, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(workdir)
    job_id = run.current_job_id()
    crashed = None
    try:
        for attempt in (1, 2):
            wait_until(lambda: _training(run, attempt), 240, f"attempt {attempt} to train", poll=0.1)
            sh.run(["scontrol", "requeue", job_id])
        wait_until(lambda: _training(run, 3) and _progress_past_checkpoint(run), 240,
                   "attempt 3 to train past its checkpoint", poll=0.05)
        crashed = sh.job_nodes(job_id)
        sh.crash_node(crashed, job_id)
        wait_until(lambda: run.read().get("state") in ("completed", "failed"), 1200, "the run to end", poll=0.5)
        assert sh.wait_job(job_id, timeout=60) == "COMPLETED"
    finally:
        if crashed:
            sh.restore_node(crashed)
        sh.scancel(job_id)
    assert run.read()["state"] == "completed", run.read()
    return run


def _sacct_rows(job_id: str) -> list[dict[str, str]]:
    """The job's incarnations as sacct prints them, read here independently of the report."""
    fields = ["State", "ElapsedRaw", "AllocTRES", "CPUTimeRAW"]
    out = sh.run(["sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", ",".join(fields)]).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def test_report_lists_every_attempt_with_its_reason_hours_and_redone_steps(scenario: Run, tmp_path: Path) -> None:
    run = scenario
    record = run.read()
    job_id = record["jobs"][0]["job_id"]
    path_env, log = counting_wrappers(tmp_path / "wrappers", ["sacct", "squeue", "scontrol", "sinfo"])
    (report,) = _report(str(run.path), cwd=tmp_path, env_path=path_env)["runs"]
    assert calls(log) == {"sacct": 1}, calls(log)  # one accounting query, nothing else

    assert report["source"] == "sacct" and report["state"] == "completed"
    attempts = report["attempts"]
    assert [a["ended_by"] for a in attempts] == ["requeued", "requeued", "node-failure", "completed"], attempts
    assert [a["job_id"] for a in attempts] == [job_id] * 4
    assert [a["scheduler_state"] for a in attempts] == ["REQUEUED", "REQUEUED", "NODE_FAIL", "COMPLETED"]

    # Allocated hours: the fake GRES count (1 GPU) and the CPUs x the elapsed sacct reports, per incarnation.
    rows = _sacct_rows(job_id)
    assert len(rows) == 4, rows
    for attempt, row in zip(attempts, rows):
        tres = dict(item.split("=", 1) for item in row["AllocTRES"].split(","))
        assert attempt["gpus"] == int(tres["gres/gpu"]) == 1
        assert attempt["elapsed_seconds"] == int(row["ElapsedRaw"])
        assert attempt["gpu_hours"] == pytest.approx(int(tres["gres/gpu"]) * int(row["ElapsedRaw"]) / 3600)
        assert attempt["cpu_hours"] == pytest.approx(int(row["CPUTimeRAW"]) / 3600)
        assert attempt["cpu_hours"] == pytest.approx(int(tres["cpu"]) * int(row["ElapsedRaw"]) / 3600)
    totals = report["totals"]
    assert totals["gpu_hours"] == pytest.approx(sum(int(r["ElapsedRaw"]) for r in rows) / 3600)
    assert totals["unit"] == "GPU" and 0 < totals["useful_share"] < 1

    # Redone steps: none after the checkpointed stops; after the node failure, what the progress
    # record reached (run.json's node failure) past the checkpoint attempt 4 resumed from.
    (failure,) = record["node_failures"]
    assert [a["steps_redone"] for a in attempts[:2]] == [0, 0]
    assert attempts[2]["steps_redone"] == failure["failed_at_step"] - record["attempts"][3]["resumed_from_step"] > 0
    assert attempts[3]["start_step"] == failure["resumed_from_step"]
    final_step = json.loads((run.path / "metrics.jsonl").read_text().splitlines()[-1])["global_step"]
    assert totals["steps"] - totals["steps_redone"] == final_step
    assert all(a["first_step_seconds"] is not None and a["first_step_seconds"] > 0 for a in attempts)
    # Usage: a Python with torch loaded; a step killed with its node records none (sacct has no MaxRSS).
    # (CPU efficiency may pass 1: torch's threads beyond the allocated CPU, on an idle machine.)
    measured = [(a["peak_rss_mb"], a["cpu_efficiency"]) for i, a in enumerate(attempts) if i != 2]
    assert all(rss > 50 and 0 < eff < 8 for rss, eff in measured), measured
    assert attempts[2]["peak_rss_mb"] is None and attempts[2]["cpu_efficiency"] is None

    text = cluster_cmd("report", str(run.path), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "source: sacct" in text.stdout and "node-failure" in text.stdout and "total: 4 attempts" in text.stdout


def test_timeline_of_the_requeued_run(scenario: Run, tmp_path: Path) -> None:
    proc = cluster_cmd("collect", str(scenario.path), "--to", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png = tmp_path / "results" / scenario.id / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    keep = Path("/tmp") / "report-timeline-run.png"  # for a look by eye after the test
    keep.write_bytes(png.read_bytes())


def test_report_without_accounting_comes_from_the_runs_own_records(scenario: Run, slurm_no_accounting,
                                                                  tmp_path: Path) -> None:
    record = scenario.read()
    (report,) = _report(str(scenario.path), cwd=tmp_path)["runs"]
    assert report["source"] == "run records"
    attempts = report["attempts"]
    assert all(a["source"] == "run records" for a in attempts)
    assert [a["ended_by"] for a in attempts] == ["requeued", "requeued", "node-failure", "completed"]
    (failure,) = record["node_failures"]
    assert [a["steps_redone"] for a in attempts] == [0, 0, failure["failed_at_step"] - failure["resumed_from_step"], 0]
    # The allocation is the spec's request (1 task x 1 CPU, 1 GPU) over the attempts' own times.
    assert {(a["cpus"], a["gpus"]) for a in attempts} == {(1, 1)}
    assert attempts[0]["elapsed_seconds"] is not None and attempts[0]["elapsed_seconds"] > 0
    assert all(a["peak_rss_mb"] is None for a in attempts)  # nothing measured...
    assert report["advice"] == []  # ...so nothing suggested
    text = cluster_cmd("report", str(scenario.path), cwd=tmp_path)
    assert "source: run records" in text.stdout and "times from the run's own records" in text.stdout, text.stdout


def test_a_report_over_a_100_run_sweep_makes_one_sacct_call(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    array_id = sh.sweep_of_true_jobs(sweep, 100, REPO / "jobs/smoke.yaml")
    wait_until(lambda: not sh.run(["squeue", "-h", "-j", array_id], check=False).stdout.strip(), 300,
               "the array to end")
    # slurmdbd hears of each task's end a moment after squeue forgets it.
    wait_until(lambda: sh.run(["sacct", "-X", "-n", "-P", "-j", array_id, "-o", "State"]).stdout.count("COMPLETED")
               == 100, 120, "sacct to record every task")
    path_env, log = counting_wrappers(tmp_path / "wrappers", ["sacct", "squeue", "scontrol", "sinfo"])
    report = _report(str(sweep), cwd=tmp_path, env_path=path_env)
    assert calls(log) == {"sacct": 1}, calls(log)

    runs = report["runs"]
    assert len(runs) == 100 and {r["source"] for r in runs} == {"sacct"}
    # No trainer ran: each task's one incarnation is in the ledger, numbered 0, allocation counted.
    for r in runs:
        (row,) = r["attempts"]
        assert row["number"] == 0 and row["ended_by"] == "completed" and row["job_id"].startswith(f"{array_id}_")
        assert row["cpus"] == 1 and row["elapsed_seconds"] is not None and row["steps"] == 0
    (totals,) = report["sweeps"].values()
    assert totals["attempts"] == 100
    assert totals["cpu_hours"] == pytest.approx(sum(r["totals"]["cpu_hours"] for r in runs))


PEAK_MB = 300
HOLD = (f"import time; block = b'x' * ({PEAK_MB} << 20); time.sleep(8)")  # written, so resident; sampled every 2 s


def test_right_sizing_comes_from_the_measured_peak_and_elapsed(tmp_path: Path) -> None:
    """A command job that holds PEAK_MB resident for 8 s, asking 4G, 4 CPUs and an hour."""
    spec = tmp_path / "hold.yaml"
    spec.write_text("name: hold\nscheduler: {kind: slurm}\nresources: {queue: cpu, cpus_per_task: 4, mem: 4G, "
                    f"time: '01:00:00'}}\ncommand: [python3, -c, \"{HOLD}\"]\n")
    proc = cluster_cmd("submit", str(spec), "--executor", "slurm", "--wait", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(tmp_path)
    job_id = run.current_job_id()
    wait_until(lambda: "COMPLETED" in sh.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"]).stdout, 60,
               "sacct to record the job's end")
    (report,) = _report(str(run.path), cwd=tmp_path)["runs"]
    (attempt,) = report["attempts"]
    assert PEAK_MB <= attempt["peak_rss_mb"] < PEAK_MB + 150, attempt  # the block plus two small Pythons
    assert 8 <= attempt["elapsed_seconds"] < 120
    peak_gb = attempt["peak_rss_mb"] / 1024
    assert report["advice"][0] == f"asked mem 4G, peak {peak_gb:.2f} GB per node: `resources.mem: 1G` would do"
    assert report["advice"][1].startswith("walltime 01:00:00, longest attempt ")
    assert report["advice"][1].endswith('`resources.time: "00:10:00"` would do')
    assert report["advice"][2].startswith("cpus_per_task 4, ") and "`resources.cpus_per_task: 1` would do" in \
        report["advice"][2]
    assert len(report["advice"]) == 3

    # cluster doctor SPEC shows the same lines for the spec whose run this was.
    doctor = cluster_cmd("doctor", str(spec), cwd=tmp_path)
    assert report["advice"][0] in doctor.stdout, doctor.stdout


def test_report_and_timeline_of_a_sweep(tmp_path: Path) -> None:
    """A real three-task sweep of the smoke job: per-sweep totals, and one timeline lane per run."""
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), "--executor", "slurm", "--sweep",
                       "train.lr=0.001,0.002,0.004", "--wait", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (sweep,) = [p for p in (tmp_path / "runs").iterdir() if (p / "sweep.json").is_file()]
    job_ids = [Run(p.parent).current_job_id() for p in sorted(sweep.glob("*/run.json"))]
    wait_until(lambda: sh.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "State"]).stdout.count(
        "COMPLETED") == 3, 60, "sacct to record the tasks' ends")
    report = _report(str(sweep), cwd=tmp_path)
    assert [r["state"] for r in report["runs"]] == ["completed"] * 3
    (totals,) = report["sweeps"].values()
    assert totals["attempts"] == 3
    assert totals["cpu_hours"] == pytest.approx(sum(r["totals"]["cpu_hours"] for r in report["runs"]))
    assert totals["steps"] == sum(r["totals"]["steps"] for r in report["runs"]) > 0

    proc = cluster_cmd("collect", str(sweep), "--to", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png = tmp_path / "results" / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"timeline: {png}" in proc.stdout
    (Path("/tmp") / "report-timeline-sweep.png").write_bytes(png.read_bytes())  # for a look by eye
