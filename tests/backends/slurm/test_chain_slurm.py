"""Sites that forbid ``scontrol requeue``: the run goes on through a dependency chain.

A ``scontrol`` wrapper first on PATH stands in for the site policy: it refuses ``requeue``
(and logs every call) and passes everything else to the real one. sbatch exports the
submitting environment, so the job sees the same wrapper. Each link of the chain is a new job
(``sbatch --dependency=afterany:<job>`` of the saved submission script), counted against
``scheduler.max_requeues`` and recorded in run.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from cluster.backends import render
from cluster.runs import Run
from cluster.spec import load_spec

from support import slurm as sh
from support.runs import (FIRST_EPOCH_TIMEOUT, REPO, cluster_cmd, epochs, last_run, reference_sha, slurm_walltime,
                          wait_until)

pytestmark = pytest.mark.slurm

SMOKE = REPO / "jobs/smoke.yaml"
REFUSAL = "scontrol: error: Requeue of job {job} failed: Access/permission denied (site policy: no user requeue)"


def scontrol_wrapper(directory: Path, refuse_requeue: bool) -> Path:
    """``directory/scontrol``: logs its arguments, refuses ``requeue`` when asked to; the log."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "scontrol.log"
    log.touch()
    real = shutil.which("scontrol")
    assert real
    refuse = (f'if [ "$1" = requeue ]; then echo "{REFUSAL.format(job="$2")}" >&2; exit 1; fi\n'
              if refuse_requeue else "")
    wrapper = directory / "scontrol"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n{refuse}exec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return log


@pytest.fixture
def site_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install the wrapper on PATH (for cluster submit, and so for the job); yields a function
    of ``refuse_requeue`` returning the call log."""
    def install(refuse_requeue: bool) -> Path:
        log = scontrol_wrapper(tmp_path / "site-bin", refuse_requeue)
        monkeypatch.setenv("PATH", f"{log.parent}{os.pathsep}{os.environ['PATH']}")
        return log

    return install


def job_ids(run: Run) -> list[str]:
    return [job["job_id"] for job in run.read()["jobs"]]


def start_end(jobs: list[str]) -> dict[str, tuple[str, str]]:
    """{job: (Start, End)} from sacct (ISO times: they compare as text)."""
    proc = sh.run(["sacct", "-X", "-n", "-P", "-j", ",".join(jobs), "-o", "JobID,Start,End"])
    found = {line.split("|")[0]: tuple(line.split("|")[1:3]) for line in proc.stdout.splitlines() if "|" in line}
    assert set(jobs) <= set(found), found
    return found  # type: ignore[return-value]


def wait_for_chain(run: Run, timeout: float) -> None:
    """Until the run ends; cancels every job of the run if it does not."""
    try:
        wait_until(lambda: run.read().get("state") in ("completed", "failed"), timeout, "the chain to finish",
                   poll=1)
    finally:
        for job in job_ids(run):
            if run.read().get("state") != "completed":
                sh.scancel(job)


def test_refused_requeue_continues_a_short_walltime_run_through_a_dependency_chain(workdir: Path,
                                                                                     site_policy) -> None:
    # A 1-minute walltime, Slurm warns 45 s before (later on a loaded machine: slurm_walltime; the
    # trainer's own deadline is the backstop); the work is about three jobs' worth, measured here
    # and now (before the site refuses requeue). Slurm sends the warning up to a minute early, so
    # one job may train many times what the measured one did: a run that needed no second job is
    # tried again with three times the work.
    steps, walltime = slurm_walltime(workdir, str(SMOKE), 20000)
    n_epochs = max(3, -(-3 * steps // 500))  # 500 steps per epoch of 20,000 samples
    log = site_policy(refuse_requeue=True)
    for _ in range(3):
        sets = [f"train.epochs={n_epochs}", "train.data.samples=20000", *walltime, "scheduler.max_requeues=40"]
        proc = cluster_cmd("submit", str(SMOKE), "--executor", "slurm", *[a for s in sets for a in ("--set", s)],
                           cwd=workdir)
        assert proc.returncode == 0, proc.stderr
        run = last_run(workdir)
        wait_for_chain(run, 2400)
        assert run.read()["state"] == "completed", run.read()
        if len(job_ids(run)) >= 2:
            break
        n_epochs *= 3  # a run of one job never asked for requeue: the call log stays right

    record = run.read()
    assert record["state"] == "completed", record
    jobs = job_ids(run)
    assert len(jobs) >= 2 and len(set(jobs)) == len(jobs)  # each link is a new job
    assert [j["reason"] for j in record["jobs"][1:]] == ["continue"] * (len(jobs) - 1)
    assert record["requeues"] == len(jobs) - 1  # each link counted against max_requeues
    refused = record["requeue_refused"]
    assert [r["job_id"] for r in refused] == jobs[:-1]
    assert all("Access/permission denied" in r["message"] for r in refused)
    assert log.read_text().count("requeue ") == len(jobs) - 1  # the job tried requeue first, every time
    # Each link started only after the previous one ended, and no epoch was lost or repeated.
    assert epochs(run) == list(range(1, n_epochs + 1))
    times = start_end(jobs)
    for before, after in zip(jobs, jobs[1:]):
        assert times[after][0] >= times[before][1], times
    first_log = (run.logs_dir / f"{jobs[0]}_0_log.out").read_text()
    assert "scontrol requeue refused (" in first_log and f"continuing as job {jobs[1]}" in first_log
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(SMOKE, sets[:2])
    status = cluster_cmd("status", str(run.path), cwd=workdir)
    assert status.returncode == 0 and "completed" in status.stdout


def test_continuation_chain_asked_by_the_spec_never_requeues(workdir: Path, site_policy) -> None:
    log = site_policy(refuse_requeue=False)
    sets = ["train.epochs=10", "train.data.samples=20000", "scheduler.continuation=chain"]
    proc = cluster_cmd("submit", str(SMOKE), "--executor", "slurm", *[a for s in sets for a in ("--set", s)],
                       cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = last_run(workdir)
    first = run.current_job_id()
    wait_until(lambda: (run.path / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the first epoch")
    sh.run(["scancel", "--signal=USR2", first])  # what Slurm sends before the walltime
    wait_for_chain(run, 300)

    record = run.read()
    assert record["state"] == "completed", record
    assert len(job_ids(run)) == 2 and "requeue_refused" not in record
    assert "requeue" not in log.read_text().split()
    assert sh.wait_job(first, timeout=60) == "COMPLETED"  # the first link ended cleanly after its checkpoint
    assert epochs(run) == list(range(1, 11))
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(SMOKE, sets[:2])


def test_rendered_script_submitted_by_hand_chains_itself(workdir: Path, site_policy) -> None:
    """``cluster render`` + ``sbatch``, no submitit: the script resubmits itself (``$0``) after
    a refused requeue, with the run directory and the link count in the new job's environment."""
    site_policy(refuse_requeue=True)
    sets = ["train.epochs=10", "train.data.samples=20000", f"environment.python={sys.executable}",
            "environment.tmpdir=" + str(workdir / "tmp")]
    script = workdir / "job.sh"
    script.write_text(render(load_spec(SMOKE, sets), "slurm"))
    run_dir = workdir / "run"
    out = workdir / "slurm-%j.out"
    first = sh.sbatch(script, f"--output={out}", f"--export=ALL,CLUSTER_RUN_DIR={run_dir}", cwd=workdir)
    second = None
    try:
        wait_until(lambda: (run_dir / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the first epoch")
        sh.run(["scancel", "--signal=USR2", "--batch", first])  # the batch shell forwards it to the trainer
        assert sh.wait_job(first, timeout=120) == "COMPLETED"
        first_out = (workdir / f"slurm-{first}.out").read_text()
        assert "scontrol requeue refused; continuing through a dependency chain" in first_out, first_out
        second = first_out.split("continuing as job ")[1].split()[0]
        assert sh.wait_job(second, timeout=300) == "COMPLETED"
    finally:
        for job in (first, second):
            if job:
                sh.scancel(job)
    assert epochs(Run(run_dir)) == list(range(1, 11))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(SMOKE, sets[:2])


def test_a_sweep_task_continues_as_the_same_index_of_a_new_array(workdir: Path, site_policy) -> None:
    """An array task's link is ``--array=<its index>`` of the saved array script: only that task
    runs again, its pickle and logs under the new id's ``<job>_<index>`` form."""
    site_policy(refuse_requeue=True)
    sets = ["train.epochs=10", "train.data.samples=20000"]
    proc = cluster_cmd("submit", str(SMOKE), "--executor", "slurm", "--sweep", "train.lr=0.001,0.0003",
                       *[a for s in sets for a in ("--set", s)], cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    (sweep_dir,) = list((workdir / "runs").glob("smoke-sweep-*"))
    runs = sorted((Run(p.parent) for p in sweep_dir.glob("*/run.json")), key=lambda r: r.current_job_id())
    assert len(runs) == 2
    stopped = runs[1]
    task_job = stopped.current_job_id()
    assert task_job.endswith("_1")
    wait_until(lambda: (stopped.path / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "task 1's first epoch")
    sh.run(["scancel", "--signal=USR2", task_job])
    for run in runs:
        wait_for_chain(run, 300)

    assert [r.read()["state"] for r in runs] == ["completed", "completed"]
    assert len(job_ids(runs[0])) == 1  # the other task was not run again
    first, second = job_ids(stopped)
    assert second.endswith("_1") and second.split("_")[0] != first.split("_")[0]
    assert epochs(stopped) == list(range(1, 11))
    summary = json.loads((stopped.path / "summary.json").read_text())
    lr = load_spec(stopped.spec_path).train.lr
    assert summary["weights_sha256"] == reference_sha(SMOKE, [*sets, f"train.lr={lr}"])
