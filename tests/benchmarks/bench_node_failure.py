"""Benchmark (issue 15): a node fails under a run; how long until it trains again on the
healthy node, and how much work is redone, beside the checkpoint interval.

For each checkpoint interval (``train.checkpoint.every_steps``, side by side, alternating
trials), a 1-task run of jobs/ddp_smoke.yaml is submitted to the two-node test cluster; once
it has written two periodic checkpoints (intervals dividing the 4,000-step epoch, whose end
also checkpoints), the node it runs on is crashed at a random moment
of a checkpoint interval (tests/support/slurm.py ``crash_node``: its slurmd killed, the
job's processes frozen then killed, the node set DOWN). Slurm requeues the job (NODE_FAIL),
it starts on the other node and resumes from the last checkpoint. Measured per trial:

- recovery: from the crash to the first optimizer step of the resumed attempt (its
  progress.json time stamp), split into crash -> attempt started (run.json, written as the
  new incarnation starts: scheduler detection, requeue hold, scheduling) and attempt
  started -> first step (Python and torch start-up, checkpoint load);
- work lost: the seconds trained since the last checkpoint (crash time minus that
  checkpoint's sidecar time) and the steps that were (that time x the steps/s measured between
  the two previous checkpoints), against the interval itself.

The test cluster holds a requeued job back for its credential lifetime (AuthInfo
cred_expire=10; Slurm's default is 120 s, so expect ~110 s more on a default site).

    .venv/bin/python tests/benchmarks/bench_node_failure.py [--trials 2] [--intervals 500,2000]

Skips (exit 0) when the test cluster is down; exit 1 when a trial does not recover.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _slurm import REPO, cluster_script, use_slurm, wait_idle

from support import slurm as sh  # noqa: E402  (on sys.path via _slurm)

SPEC = REPO / "jobs/ddp_smoke.yaml"


def submit(workdir: Path, every_steps: int) -> Path:
    # 160,000 samples: 4,000 steps per epoch, a multiple of each interval, so that the epoch-end
    # checkpoint falls on the interval's grid (every checkpoint is then `every_steps` apart).
    sets = ["resources.tasks_per_node=1", "train.epochs=50", "train.data.samples=160000",
            f"train.checkpoint.every_steps={every_steps}", "train.checkpoint.keep=3"]
    proc = subprocess.run([*cluster_script(), "submit", str(SPEC), "--executor", "slurm",
                           *[a for s in sets for a in ("--set", s)]], cwd=workdir, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"bench_node_failure: submit failed: {proc.stderr.strip()}")
    (run_dir,) = (workdir / "runs").glob("*/run.json")
    return run_dir.parent


def checkpoints(run_dir: Path) -> list[tuple[int, float]]:
    """(global step, time written) of the run's complete checkpoints (their sidecars), oldest first."""
    found = []
    for sidecar in (run_dir / "checkpoints").glob("*.json"):
        try:
            data = json.loads(sidecar.read_text())
            found.append((int(data["global_step"]), float(data.get("time") or sidecar.stat().st_mtime)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(found)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"no {what} after {timeout:.0f} s")


def trial(every_steps: int, rng: random.Random) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-node-failure-"))
    run_dir = submit(workdir, every_steps)
    job_id = json.loads((run_dir / "run.json").read_text())["jobs"][0]["job_id"]
    node = None
    try:
        # Two periodic checkpoints: their spacing gives this machine's steps/s now.
        points = wait_for(lambda: (c := checkpoints(run_dir)) and len([s for s, _ in c if s > 0]) >= 2 and c,
                          600, "two periodic checkpoints")
        (s1, t1), (s2, t2) = [p for p in points if p[0] > 0][-2:]
        rate = (s2 - s1) / max(t2 - t1, 1e-6)
        interval_s = every_steps / rate
        time.sleep(rng.uniform(0, interval_s))  # a random moment of an interval
        node = sh.job_nodes(job_id)
        crashed = time.time()
        sh.crash_node(node, job_id)
        last_step, last_time = checkpoints(run_dir)[-1]
        lost_s = max(crashed - last_time, 0.0)

        def attempt_started():
            attempts = json.loads((run_dir / "run.json").read_text()).get("attempts", [])
            return len(attempts) >= 2 and attempts[-1]

        wait_for(attempt_started, 600, "second attempt", poll=0.1)
        started = time.time()

        def trained_again():
            try:
                progress = json.loads((run_dir / "progress.json").read_text())
            except (OSError, ValueError):
                return None
            return progress if progress.get("time", 0) > crashed else None

        progress = wait_for(trained_again, 600, "training step after the crash")
        record = json.loads((run_dir / "run.json").read_text())
        resumed_from = record["attempts"][-1]["resumed_from_step"] or 0
        failure = (record.get("node_failures") or [{}])[-1]
        return {"interval_steps": every_steps, "interval_s": interval_s, "rate": rate,
                "recovery_s": progress["time"] - crashed, "to_attempt_s": started - crashed,
                "startup_s": progress["time"] - started, "lost_s": lost_s, "lost_steps": lost_s * rate,
                "resumed_from": resumed_from, "checkpoint_step": last_step,
                "recorded": bool(failure.get("node") == node)}
    finally:
        sh.scancel(job_id)
        if node:
            sh.restore_node(node)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2, help="trials per checkpoint interval")
    parser.add_argument("--intervals", default="500,2000", help="train.checkpoint.every_steps values")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    use_slurm("bench_node_failure")
    sh.cluster_env()  # noqa: B018  (fails early if cluster.sh env does not answer)
    rng = random.Random(args.seed)
    intervals = [int(v) for v in args.intervals.split(",")]
    results: dict[int, list[dict[str, float]]] = {k: [] for k in intervals}
    failed = False
    for _ in range(args.trials):
        for every in intervals:  # alternating: a slow moment of the machine hits both
            wait_idle()
            try:
                result = trial(every, rng)
            except TimeoutError as err:
                print(f"  every {every} steps: did not recover: {err}")
                failed = True
                continue
            results[every].append(result)
            print(f"  every {every:>4} steps ({result['interval_s']:.1f} s at {result['rate']:.0f} steps/s): recovery {result['recovery_s']:.1f} s "
                  f"(to attempt {result['to_attempt_s']:.1f} s + start-up {result['startup_s']:.1f} s), lost "
                  f"{result['lost_s']:.1f} s = ~{result['lost_steps']:.0f} steps, resumed from step "
                  f"{result['resumed_from']:.0f}, run.json node_failures: {'yes' if result['recorded'] else 'NO'}")
            failed |= not result["recorded"] or result["resumed_from"] != result["checkpoint_step"]
    print()
    print(f"{'checkpoint every':>24} | {'recovery s (median)':>19} | {'lost s (median)':>15} | "
          f"{'steps lost (median)':>19} | lost / interval")
    for every, rows in results.items():
        if not rows:
            continue
        med = {k: statistics.median(r[k] for r in rows) for k in ("interval_s", "recovery_s", "lost_s", "lost_steps")}
        print(f"{every:>8} steps ({med['interval_s']:>5.1f} s) | {med['recovery_s']:>19.1f} | {med['lost_s']:>15.1f} | "
              f"{med['lost_steps']:>19.0f} | {med['lost_steps'] / every:.2f}")
    print("(recovery includes the test cluster's 10 s credential hold of a requeued job; Slurm's default is 120 s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
