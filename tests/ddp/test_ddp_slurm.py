"""Data-parallel jobs on the real local Slurm: 2 tasks started by srun, DDP over gloo on the CPU.

Each rank writes its final weights fingerprint to ``ranks/rank-<r>.sha256``; rank 0 writes
summary.json. Interrupted runs are compared with an uninterrupted 2-task run of the same
spec (submitted alongside), bitwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from cluster.runs import Run

from support import slurm as sh
from support.runs import FIRST_EPOCH_TIMEOUT, REPO, cluster_cmd, epochs, last_run, wait_until

# One worker under pytest -n (--dist loadgroup): the module fixture `reference` runs a 2-task job once.
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("ddp-slurm")]

SPEC = REPO / "jobs/ddp_smoke.yaml"
# About 10 s of training for the two tasks on 2 cores: long enough to interrupt mid-training.
LONGER = ["--set", "train.epochs=4", "--set", "train.data.samples=8000"]


def submit(workdir: Path, *args: str, wait: bool = False) -> Run:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = cluster_cmd("submit", str(SPEC), "--executor", "slurm", *args, *(["--wait"] if wait else []),
                       cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return last_run(workdir)


def rank_sha256s(run: Run) -> list[str]:
    return [(run.path / "ranks" / f"rank-{r}.sha256").read_text().strip() for r in range(2)]


def summary(run: Run) -> dict:
    return json.loads((run.path / "summary.json").read_text())


def task_pids(run: Run) -> dict[int, int]:
    """{rank: pid} of the run's live training processes (srun's own process excluded)."""
    found = {}
    out = subprocess.run(["pgrep", "-f", f"submitit.core._submit {run.logs_dir}"], capture_output=True, text=True)
    for pid in map(int, out.stdout.split()):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        if b"python" not in Path(argv0.decode()).name.encode():
            continue
        ranks = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"SLURM_PROCID=")]
        if ranks:
            found[int(ranks[0])] = pid
    return found


def finish(run: Run, job_id: str, timeout: float = 240) -> None:
    """Wait for the run to complete, letting requeued incarnations start at once."""
    def done() -> bool:
        sh.skip_requeue_hold(job_id)
        return run.read().get("state") in ("completed", "failed")

    wait_until(done, timeout, f"run {run.path.name} to end", poll=1)
    sh.wait_job(job_id, timeout=60)
    assert run.read()["state"] == "completed", run.read()


@pytest.fixture(scope="module")
def reference(slurm_cluster, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted 2-task run of the LONGER spec, submitted once for the module's tests;
    call it for its weights_sha256 (waits for it)."""
    run = submit(tmp_path_factory.mktemp("ddp-reference"), *LONGER)
    job_id = run.current_job_id()

    def sha() -> str:
        finish(run, job_id)
        shas = rank_sha256s(run)
        assert shas[0] == shas[1] == summary(run)["weights_sha256"]
        return shas[0]

    yield sha
    sh.scancel(job_id)


def test_two_task_job_completes_with_the_same_weights_on_both_ranks(tmp_path: Path) -> None:
    run = submit(tmp_path, wait=True)
    record = run.read()
    assert record["state"] == "completed" and record["requeues"] == 0
    result = summary(run)
    assert result["world_size"] == 2 and result["threads"] == 1
    assert rank_sha256s(run) == [result["weights_sha256"]] * 2
    assert epochs(run) == [1, 2, 3]
    # srun started both tasks; each resumed nothing and trained one half of every batch.
    job_id = run.current_job_id()
    for rank in (0, 1):
        log = (run.logs_dir / f"{job_id}_{rank}_log.out").read_text()
        assert f"rank {rank} of 2" in log and "done: 3 epochs, 45 steps" in log
    assert result["samples"] == 3 * 480  # the ranks together consumed one draw per epoch, not one each
    assert sh.wait_job(job_id, timeout=60) == "COMPLETED"
    assert not task_pids(run)


def test_scontrol_requeue_mid_training_resumes_exactly(tmp_path: Path, reference) -> None:
    run = submit(tmp_path, *LONGER)
    job_id = run.current_job_id()
    wait_until(lambda: (run.path / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the first epoch")
    sh.run(["scontrol", "requeue", job_id])  # SIGTERM to both tasks, then requeued by Slurm
    sh.wait_state(job_id, ["PENDING"], timeout=60)
    wait_until(lambda: not task_pids(run), 30, "both ranks to exit after the requeue")
    finish(run, job_id)

    record = run.read()
    assert record["requeues"] >= 1
    assert len(record["attempts"]) >= 2 and record["attempts"][-1]["resumed_from_step"]
    first = (run.logs_dir / f"{job_id}_1_log.out").read_text()
    assert "stopping (SIGTERM)" in first and "resumed from ckpt-" in first  # rank 1 stopped and resumed too
    shas = rank_sha256s(run)
    assert shas[0] == shas[1] == summary(run)["weights_sha256"] == reference()
    assert summary(run)["resumes"] >= 1
    assert epochs(run) == [1, 2, 3, 4]
    assert not task_pids(run)


def test_usr2_to_one_rank_stops_both_at_the_same_step_and_the_job_requeues_itself(tmp_path: Path, reference) -> None:
    run = submit(tmp_path, *LONGER)
    job_id = run.current_job_id()
    wait_until(lambda: (run.path / "metrics.jsonl").exists() and len(task_pids(run)) == 2, FIRST_EPOCH_TIMEOUT,
               "the first epoch")
    os.kill(task_pids(run)[1], signal.SIGUSR2)  # as if Slurm's warning reached rank 1 first
    finish(run, job_id)

    record = run.read()
    assert record["requeues"] == 1 and record["attempts"][-1]["resumed_from_step"]
    stopped = [line for rank in (0, 1) for line in (run.logs_dir / f"{job_id}_{rank}_log.out").read_text().splitlines()
               if line.startswith("stopping (")]
    assert len(stopped) == 2, stopped
    # Both ranks stopped at the same step, for rank 1's reason; rank 0 requeued the job.
    assert stopped[0] == stopped[1] and stopped[0].startswith("stopping (SIGUSR2)"), stopped
    assert f"requeueing job {job_id}" in (run.logs_dir / f"{job_id}_0_log.out").read_text()
    shas = rank_sha256s(run)
    assert shas[0] == shas[1] == summary(run)["weights_sha256"] == reference()
    assert epochs(run) == [1, 2, 3, 4]
    assert not task_pids(run)
