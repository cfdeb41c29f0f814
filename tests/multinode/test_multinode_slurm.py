"""Beyond one node, on the real two-node test cluster (n1, n2 on this one machine).

Data-parallel runs across both nodes (srun places the ranks; the rendezvous uses the first
node's NodeAddr, since node names do not resolve here and every task sees the same
hostname), exact resume after ``scontrol requeue`` of the whole 2-node job, and a node that
crashes under a 1-node run: Slurm requeues the job on the other node, the run resumes from its
last checkpoint by itself, and run.json and ``cluster status`` say what happened.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.runs import Run
from train.runfiles import resume_point

from support import slurm as sh
from support.runs import FIRST_EPOCH_TIMEOUT, REPO, cluster_cmd, last_run, reference_sha, wait_until

# One worker under pytest -n (--dist loadgroup): the module fixture `two_node_reference` runs a 2-node job once.
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("multinode")]

SPEC = REPO / "jobs/ddp_smoke.yaml"
TWO_NODES = ["--set", "resources.nodes=2", "--set", "resources.tasks_per_node=1"]
# About 10 s of training for two ranks on 2 cores: long enough to interrupt mid-training.
LONGER = ["--set", "train.epochs=4", "--set", "train.data.samples=8000"]


def submit(workdir: Path, *args: str) -> Run:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = cluster_cmd("submit", str(SPEC), "--executor", "slurm", *args, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return last_run(workdir)


def rank_nodes(job_id: str) -> dict[int, str]:
    """{rank: SLURMD_NODENAME} of the job's live training processes (read from /proc)."""
    found = {}
    for pid in sh._pids_with_env("SLURM_JOB_ID", job_id):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            environ = dict(e.split(b"=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e)
        except OSError:
            continue
        if "python" in Path(argv0).name and b"SLURM_PROCID" in environ and b"SLURM_STEP_ID" in environ:
            found[int(environ[b"SLURM_PROCID"])] = environ[b"SLURMD_NODENAME"].decode()
    return found


def finish(run: Run, job_id: str, timeout: float = 300, watch: dict[int, str] | None = None) -> None:
    """Wait for the run to complete (a requeued job starts again by itself ~10 s later: the test
    cluster's credential lifetime); ``watch`` collects where each rank ran meanwhile."""
    def done() -> bool:
        if watch is not None:
            watch.update(rank_nodes(job_id))
        return run.read().get("state") in ("completed", "failed")

    wait_until(done, timeout, f"run {run.path.name} to end", poll=0.3)
    assert run.read()["state"] == "completed", run.read()
    assert sh.wait_job(job_id, timeout=60) == "COMPLETED"


def shas(run: Run, ranks: int) -> set[str]:
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["world_size"] == ranks
    ranked = range(ranks) if ranks > 1 else ()  # a one-task run writes no ranks/ files
    return {(run.path / "ranks" / f"rank-{r}.sha256").read_text().strip() for r in ranked} | {
        summary["weights_sha256"]}


@pytest.fixture(scope="module")
def two_node_reference(slurm_cluster, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted 2-node x 1-task run of LONGER, submitted once; call it for its sha."""
    run = submit(tmp_path_factory.mktemp("two-node-reference"), *TWO_NODES, *LONGER)
    job_id = run.current_job_id()

    def sha() -> str:
        finish(run, job_id)
        (only,) = shas(run, 2)
        return only

    yield sha
    sh.scancel(job_id)


@pytest.mark.parametrize("tasks_per_node", [1, 2])
def test_ranks_train_on_both_nodes(tmp_path: Path, tasks_per_node: int) -> None:
    run = submit(tmp_path, "--set", "resources.nodes=2", "--set", f"resources.tasks_per_node={tasks_per_node}")
    job_id = run.current_job_id()
    placed: dict[int, str] = {}
    finish(run, job_id, watch=placed)
    ranks = 2 * tasks_per_node
    assert len(shas(run, ranks)) == 1  # every rank ended with the same weights
    # srun put the first tasks_per_node ranks on n1, the others on n2.
    assert placed == {r: ("n1", "n2")[r // tasks_per_node] for r in range(ranks)}, placed


def test_scontrol_requeue_of_a_two_node_job_resumes_exactly(tmp_path: Path, two_node_reference) -> None:
    run = submit(tmp_path, *TWO_NODES, *LONGER)
    job_id = run.current_job_id()
    wait_until(lambda: (run.path / "metrics.jsonl").exists() and len(rank_nodes(job_id)) == 2, 180,
               "the first epoch on both nodes")
    sh.run(["scontrol", "requeue", job_id])  # SIGTERM to the ranks on both nodes
    finish(run, job_id)

    record = run.read()
    assert record["requeues"] >= 1 and record["attempts"][-1]["resumed_from_step"]
    for rank in (0, 1):  # both ranks stopped at the same step, and resumed from rank 0's checkpoint
        log = (run.logs_dir / f"{job_id}_{rank}_log.out").read_text()
        assert "stopping (SIGTERM)" in log and "resumed from ckpt-" in log
    stops = {line for rank in (0, 1) for line in (run.logs_dir / f"{job_id}_{rank}_log.out").read_text().splitlines()
             if line.startswith("stopping (")}
    assert len(stops) == 1, stops
    assert list((run.path / "checkpoints").glob("*.pt"))  # written once, by rank 0, in the run directory
    assert shas(run, 2) == {two_node_reference()}


def test_a_signal_to_one_node_stops_every_rank_at_the_same_step(tmp_path: Path, two_node_reference) -> None:
    """USR2 to the rank on n2 only (as when one node's slurmd warns first): both ranks stop at
    the same step, rank 0 checkpoints and requeues, and the run ends as the uninterrupted one."""
    run = submit(tmp_path, *TWO_NODES, *LONGER)
    job_id = run.current_job_id()
    wait_until(lambda: (run.path / "metrics.jsonl").exists() and len(rank_nodes(job_id)) == 2, 180,
               "the first epoch on both nodes")
    on_n2 = [pid for pid in sh._pids_with_env("SLURM_JOB_ID", job_id)
             if pid in sh._pids_with_env("SLURMD_NODENAME", "n2") and pid in sh._pids_with_env("SLURM_PROCID", "1")
             and "python" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()]
    assert on_n2, "no rank-1 python process on n2"
    for pid in on_n2:
        sh._signal(pid, "USR2")
    finish(run, job_id)

    logs = [(run.logs_dir / f"{job_id}_{rank}_log.out").read_text() for rank in (0, 1)]
    stops = [[line for line in log.splitlines() if line.startswith("stopping (")] for log in logs]
    assert stops[0] and stops[0] == stops[1], stops  # the same reason, epoch and step on both ranks
    assert f"requeueing job {job_id}" in logs[0] and "resumed from ckpt-" in logs[1]
    assert run.read()["requeues"] >= 1
    assert shas(run, 2) == {two_node_reference()}


@pytest.mark.serial  # n2 down: every other test's job on it would be killed
def test_a_two_node_job_that_cannot_fit_waits_and_status_says_why(tmp_path: Path) -> None:
    # Alone in the queue: a job queued ahead of it would make Slurm's reason "Priority".
    wait_until(lambda: not sh.run(["squeue", "-h", "-o", "%i"]).stdout.strip(), 300, "an empty queue")
    sh.run(["scontrol", "update", "NodeName=n2", "State=DOWN", "Reason=maintenance"], timeout=20)
    try:
        run = submit(tmp_path, *TWO_NODES)
        job_id = run.current_job_id()
        wait_until(lambda: (sh.show_job(job_id) or {}).get("Reason", "None") != "None", 60, "a pending reason")
        status = cluster_cmd("status", str(run.path), "--json", cwd=tmp_path)
        (row,) = json.loads(status.stdout)
        text = cluster_cmd("status", str(run.path), cwd=tmp_path).stdout
    finally:
        sh.restore_node("n2")
    try:
        assert row["state"] == "pending", row
        # Slurm's words for it change as the scheduler looks again: "ReqNodeNotAvail,
        # UnavailableNodes:n2", then "Nodes required for job are DOWN, DRAINED or reserved ...".
        waits = ("ReqNodeNotAvail", "Nodes required for job are DOWN", "Resources")
        assert row["wait_reason"].startswith(waits), row
        assert any(line.startswith(tuple(f"{run.id}: pending ({w}" for w in waits)) for line in text.splitlines()), text
        finish(run, job_id)  # n2 back: the job starts and completes
    finally:
        sh.scancel(job_id)


@pytest.mark.serial  # a node's slurmd killed under every job running on it
def test_a_crashed_node_resumes_the_run_on_the_other_node(tmp_path: Path) -> None:
    one_task = ["--set", "resources.tasks_per_node=1", "--set", "train.epochs=6", "--set", "train.data.samples=8000",
                "--set", "train.checkpoint.every_steps=40"]
    run = submit(tmp_path, *one_task)
    job_id = run.current_job_id()
    # Crash once a periodic checkpoint (not step 0's) exists: the work since it is lost.
    wait_until(lambda: (resume_point(run.path) or {}).get("global_step", 0) > 0, FIRST_EPOCH_TIMEOUT,
               "a periodic checkpoint", poll=0.1)
    node = sh.job_nodes(job_id)
    other = {"n1": "n2", "n2": "n1"}[node]
    sh.crash_node(node, job_id)
    try:
        finish(run, job_id, timeout=300)
        status = cluster_cmd("status", str(run.path), cwd=tmp_path)
    finally:
        sh.restore_node(node)

    (failure,) = run.read()["node_failures"]
    assert failure["node"] == node and failure["resumed_on"] == other
    assert 0 < failure["resumed_from_step"] <= failure["failed_at_step"]
    assert f"node {node} failed at step {failure['failed_at_step']}; resumed on {other}" in status.stdout
    # The resumed run is the uninterrupted one, bit for bit.
    assert shas(run, 1) == {reference_sha(SPEC, [o for o in one_task if o.startswith("train.")])}


@pytest.mark.serial  # a node's slurmd killed under every job running on it
def test_more_node_failures_than_allowed_fail_the_run_with_a_resume_hint(tmp_path: Path) -> None:
    run = submit(tmp_path, "--set", "resources.tasks_per_node=1", "--set", "train.epochs=6",
                 "--set", "train.data.samples=8000", "--set", "train.checkpoint.every_steps=40",
                 "--set", "scheduler.max_node_failures=0")
    job_id = run.current_job_id()
    wait_until(lambda: (resume_point(run.path) or {}).get("global_step", 0) > 0, FIRST_EPOCH_TIMEOUT,
               "a periodic checkpoint", poll=0.1)
    node = sh.job_nodes(job_id)
    sh.crash_node(node, job_id)
    try:
        wait_until(lambda: run.read().get("state") in ("completed", "failed"), 300, "the run to end", poll=0.3)
        assert sh.wait_job(job_id, timeout=60) == "FAILED"
        status = cluster_cmd("status", str(run.path), cwd=tmp_path)
    finally:
        sh.restore_node(node)
        sh.scancel(job_id)

    record = run.read()
    assert record["state"] == "failed"
    assert record["error"] == (f"node {node} failed; 1 node failure in this run, more than scheduler.max_node_failures (0); "
                               f"continue with: cluster resume {run.path}")
    (failure,) = record["node_failures"]
    assert failure["node"] == node
    assert "summary.json" not in {p.name for p in run.path.iterdir()}  # it did not train on
    assert f"node {node} failed at step {failure['failed_at_step']}; not resumed: more than " \
           "scheduler.max_node_failures (0)" in status.stdout
    assert "failed" in status.stdout and f"cluster resume {run.path}" in status.stdout, status.stdout
