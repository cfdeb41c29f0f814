"""`cluster submit` on submitit's local executor: completion, its own timeout + requeue, SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from cluster.runs import Run
from cluster.status import rows_for
from train.runfiles import resume_point
from support.runs import REPO, cluster_cmd, last_run, local_walltime, reference_sha, wait_until

SMOKE = str(REPO / "jobs/smoke.yaml")


@pytest.mark.slow  # trains on the local executor, and its reference
def test_local_run_completes(workdir: Path) -> None:
    proc = cluster_cmd("submit", SMOKE, "--executor", "local", "--wait", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted to local as job" in proc.stdout and "completed" in proc.stdout
    run = last_run(workdir)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", [])
    assert [json.loads(l)["epoch"] for l in (run.path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def _sets_args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


# A 1-minute walltime with the warning 48 s before it (support.runs.local_walltime): the local
# executor sends USR2 12 s into each attempt; the trainer checkpoints and exits for requeue; the
# controller starts it again.
SAMPLES = 20000
STEPS_PER_EPOCH = 500  # 16,000 training samples (a fifth is the validation split), batches of 32


def _timeout_run(workdir: Path, epochs: int, walltime: list[str]) -> Run:
    """Submit ``epochs`` epochs with the short attempts and wait; check the run ended exactly."""
    sets = [f"train.epochs={epochs}", f"train.data.samples={SAMPLES}", *walltime, "scheduler.max_requeues=60"]
    proc = cluster_cmd("submit", SMOKE, "--executor", "local", *_sets_args(sets), "--wait", cwd=workdir,
                       timeout=2400)
    run = last_run(workdir)
    record = run.read()
    assert proc.returncode == 0, proc.stdout + proc.stderr + json.dumps(record)
    assert len(record["attempts"]) == record["requeues"] + 1
    epochs_seen = [json.loads(l)["epoch"] for l in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert epochs_seen == list(range(1, epochs + 1)), "an epoch was lost or repeated"
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", sets[:2])
    return run


@pytest.mark.slow  # trains on the local executor, and its reference
def test_local_timeout_requeues_and_resumes_exactly(workdir: Path) -> None:
    # The executor's own timeout warning ends each attempt: the work is six times what one
    # attempt trains on this machine now, about six attempts. At least three are asked for (two
    # timeouts, each resumed): a machine that speeds up threefold or more between the
    # measurement and the run (other work ended) may need fewer, and then the work is sized
    # again from what the run itself did per attempt, and the run repeated. That our controller
    # starts more attempts than submitit's own (six) is shown, deterministically, by
    # test_local_requeues_honour_max_requeues[8] (nine attempts).
    steps, walltime = local_walltime(workdir, SMOKE, SAMPLES)
    tried = []
    for _ in range(3):
        epochs = -(-6 * steps // STEPS_PER_EPOCH)
        attempts = len(_timeout_run(workdir, epochs, walltime).read()["attempts"])
        tried.append(f"{epochs} epochs: {attempts} attempts")
        if attempts >= 3:
            return
        steps = max(1, epochs * STEPS_PER_EPOCH // attempts)
    raise AssertionError(f"never needed three attempts ({'; '.join(tried)})")


# Deterministic stops: USR2 to the task as soon as each attempt has finished an epoch, whatever
# the machine's speed. 8 stops need 9 attempts: more than submitit's own local controller ever
# starts (six), so the run completes only because ours restarts it up to the run's budget.
STOP_SETS = ["train.epochs=12", "train.data.samples=8000"]  # 4 epochs to spare after the 8 stops
STOPS = 8


def _stop_every_attempt(run: Run, stops: int) -> None:
    """Send USR2 to the task of attempts 1..stops, each once it has written an epoch line of its own."""
    metrics = run.path / "metrics.jsonl"

    def lines() -> int:
        return metrics.read_text().count("\n") if metrics.exists() else 0

    def ended() -> bool:
        return run.read().get("state") in ("failed", "completed")

    def between_attempts(attempt: int) -> bool:
        # While the controller restarts the job, status must not call the run failed (it is not).
        if len(run.read().get("attempts", [])) >= attempt or ended():
            return True
        row = rows_for([run])[0]
        assert row.state in ("running", "requeued", "pending"), f"between attempts, status said {row.state}"
        return False

    for attempt in range(1, stops + 1):
        # The attempt is recorded once its trainer runs (the previous one has exited by then).
        wait_until(lambda: between_attempts(attempt), 300, f"attempt {attempt}")
        if ended():
            return
        before = lines()
        wait_until(lambda: (lines() > before and _task_pids(run)) or ended(), 300,
                   f"attempt {attempt} to finish an epoch", poll=0.05)
        if ended():
            return
        for pid in _task_pids(run):
            os.kill(pid, signal.SIGUSR2)


@pytest.mark.slow  # trains on the local executor, and its reference
@pytest.mark.parametrize("max_requeues", [STOPS, 2])
def test_local_requeues_honour_max_requeues(workdir: Path, max_requeues: int) -> None:
    sets = [*STOP_SETS, f"scheduler.max_requeues={max_requeues}"]
    proc = cluster_cmd("submit", SMOKE, "--executor", "local", *_sets_args(sets), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = last_run(workdir)
    _stop_every_attempt(run, STOPS)
    wait_until(lambda: json.loads(cluster_cmd("status", str(run.path), "--json", cwd=workdir).stdout)[0]["state"]
               in ("completed", "failed"), 900, "the run to end")
    row = json.loads(cluster_cmd("status", str(run.path), "--json", cwd=workdir).stdout)[0]
    record = run.read()
    if max_requeues >= STOPS:
        assert row["state"] == "completed", json.dumps(record)
        assert len(record["attempts"]) == STOPS + 1 and record["requeues"] == STOPS
        summary = json.loads((run.path / "summary.json").read_text())
        assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", STOP_SETS)
        epochs_seen = [json.loads(l)["epoch"] for l in (run.path / "metrics.jsonl").read_text().splitlines()]
        assert epochs_seen == list(range(1, 13))
    else:
        assert row["state"] == "failed", json.dumps(record)
        assert len(record["attempts"]) == max_requeues + 1
        message = f"out of requeues ({max_requeues}); continue with: cluster resume {run.path}"
        assert record["error"] == message
        assert row["diagnosis"] and "out of requeues" in row["diagnosis"], row
        assert not _task_pids(run) and not (run.path / "summary.json").exists()


def _task_pids(run: Run) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"submitit.core._submit {run.logs_dir}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.slow  # trains on the local executor, and its reference
def test_local_sigkill_then_resume(workdir: Path) -> None:
    sets = ["train.epochs=6", "train.data.samples=20000"]  # killed after the first of six (the reference is shared)
    args = [a for s in sets for a in ("--set", s)]
    proc = cluster_cmd("submit", SMOKE, "--executor", "local", *args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = last_run(workdir)
    wait_until(lambda: resume_point(run.path) and _task_pids(run), 600, "a first checkpoint")
    for pid in _task_pids(run):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: json.loads(cluster_cmd("status", str(run.path), "--json", cwd=workdir).stdout)[0]["state"]
               == "failed", 300, "the run to show as failed")
    resumed = cluster_cmd("resume", str(run.path), "--wait", cwd=workdir, timeout=1800)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    record = run.read()
    assert [j["reason"] for j in record["jobs"]] == ["submit", "resume"]
    assert record["attempts"][-1]["resumed_from_step"]
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", sets)


def test_two_runs_submitted_at_once_never_share_a_directory(workdir: Path) -> None:
    from cluster.runs import new_run_dir
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: new_run_dir(workdir / "runs", "same"), range(64)))
    assert len(set(dirs)) == 64


@pytest.mark.slow  # trains on the local executor, and its reference
def test_killing_the_local_controller_takes_its_trainer_with_it(workdir: Path) -> None:
    sets = ["train.epochs=6", "train.data.samples=20000"]  # killed after the first of six epochs
    proc = cluster_cmd("submit", SMOKE, "--executor", "local", *_sets_args(sets), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = last_run(workdir)
    wait_until(lambda: resume_point(run.path) and _task_pids(run), 600, "a first checkpoint")
    os.kill(int(run.current_job_id(run.read())), signal.SIGKILL)
    # The task gets SIGTERM from the kernel (PR_SET_PDEATHSIG): it checkpoints and exits.
    wait_until(lambda: not _task_pids(run), 300, "the orphaned trainer to exit")
    wait_until(lambda: json.loads(cluster_cmd("status", str(run.path), "--json", cwd=workdir).stdout)[0]["state"]
               == "failed", 300, "the run to show as failed")
    resumed = cluster_cmd("resume", str(run.path), "--wait", cwd=workdir, timeout=1800)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    epochs_seen = [json.loads(l)["epoch"] for l in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert epochs_seen == list(range(1, 7)), "an epoch was lost or written twice"
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", sets)
