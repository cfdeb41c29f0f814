"""Benchmark (issue 7): `cluster status` over 100 runs on the local Slurm.

Measures the wall time of `cluster status --runs-dir DIR --json` (the console script, as a
subprocess; median of the runs) and the scheduler commands it issues, counted through
wrappers on PATH (sacct, squeue, scontrol, sinfo: tests/support/runs.py).

Two directories of 100 runs each, timed alternately, whose run.json files are written by
`cluster.submit.prepare_run` (as `cluster submit` writes them) and point at real jobs:

- pending: the tasks of one `sbatch --hold --array=0-99` (never run; cancelled at the end);
- ended:   the tasks of one `sbatch --array=0-99` of `true`, whose logs land in each run's
           logs/ as submitit's would. The job ended without training, so every run shows
           as failed, with a diagnosis read from its logs (the slow path of a row).

Targets, for each directory: wall time <= 1 s on this machine; scheduler commands <= 2.

    .venv/bin/python tests/benchmarks/bench_status.py [--runs 5] [--tasks 100]

Sets up the Slurm environment itself (tests/slurm/cluster.sh env); exits 0 with
"skipped: no Slurm" when sinfo does not answer, 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _slurm import REPO, calls, cluster_script, counting_wrappers, spread, use_slurm, wait_gone, wait_idle

TIME_TARGET = 1.0
CALLS_TARGET = 2
COMMANDS = ["sacct", "squeue", "scontrol", "sinfo"]


def make_runs(root: Path, tasks: int, sbatch_args: list[str], log_pattern: str | None) -> str:
    """``tasks`` run directories under ``root``, one per task of a real array job; returns its id."""
    from cluster.spec import load_spec
    from cluster.submit import prepare_run

    spec = load_spec(REPO / "jobs" / "smoke.yaml", ["train.epochs=1"])
    root.mkdir()
    runs = []
    for i in range(tasks):
        run_dir = root / f"smoke-bench-{i:03d}"
        run_dir.mkdir()
        runs.append(prepare_run(spec, "slurm", run_dir))
    script = root.parent / "true.sbatch"
    script.write_text("#!/bin/bash\ntrue\n")
    logs = ([f"--output={root}/{log_pattern}.out", f"--error={root}/{log_pattern}.err"] if log_pattern
            else ["--output=/dev/null"])
    proc = subprocess.run(["sbatch", "--parsable", "--partition=cpu", "--mem=100M", "--time=1",
                           "--job-name=bench-status", f"--array=0-{tasks - 1}", *logs, *sbatch_args, str(script)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
    array_id = proc.stdout.strip().split(";")[0]
    for i, run in enumerate(runs):
        run.add_job(f"{array_id}_{i}", "submit")
    return array_id


def status_once(root: Path, path_env: str, log: Path) -> tuple[float, dict[str, int], Counter]:
    log.write_text("")
    cmd = cluster_script() + ["status", "--runs-dir", str(root), "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PATH=path_env))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cluster status failed ({proc.returncode}): {proc.stderr.strip()}")
    states = Counter(row["state"] for row in json.loads(proc.stdout))
    return wall, calls(log), states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of cluster status per directory (default 5)")
    parser.add_argument("--tasks", type=int, default=100, help="run directories per directory (default 100)")
    args = parser.parse_args()
    use_slurm("bench_status")

    held = None
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        work = Path(tmp)
        try:
            wait_idle()
            ended = make_runs(work / "ended", args.tasks, [], "smoke-bench-%3a/logs/%A_%a_0_log")
            held = make_runs(work / "pending", args.tasks, ["--hold"], None)
            wait_gone([ended])  # the ended array runs now; measure once it is over
            path_env, log = counting_wrappers(work / "wrappers", COMMANDS)

            kinds = {"pending": work / "pending", "ended": work / "ended"}
            for root in kinds.values():  # warm the page cache; not timed
                status_once(root, path_env, log)
            walls: dict[str, list[float]] = {k: [] for k in kinds}
            counted: dict[str, list[dict[str, int]]] = {k: [] for k in kinds}
            states: dict[str, Counter] = {}
            for _ in range(args.runs):  # alternate, so that a slow moment of the machine hits both
                for kind, root in kinds.items():
                    wall, used, states[kind] = status_once(root, path_env, log)
                    walls[kind].append(wall)
                    counted[kind].append(used)
        finally:
            if held:
                subprocess.run(["scancel", held], capture_output=True)

    print(f"cluster status --runs-dir DIR --json over {args.tasks} runs of real Slurm jobs (accounting on)")
    for kind in walls:
        wall = statistics.median(walls[kind])
        most = max(counted[kind], key=lambda c: sum(c.values()))
        total = sum(most.values())
        shown = ", ".join(f"{c} {most.get(c, 0)}" for c in COMMANDS)
        met = wall <= TIME_TARGET and total <= CALLS_TARGET
        ok = ok and met
        print(f"  {kind:8s} wall {spread(walls[kind])}")
        print(f"  {'':8s} scheduler commands per status: {total} ({shown})")
        print(f"  {'':8s} states: {dict(states[kind])}")
        print(f"  {'':8s} wall / target {wall / TIME_TARGET:.2f} (target <= {TIME_TARGET:.0f} s), commands "
              f"{total} (target <= {CALLS_TARGET}): {'met' if met else 'MISSED'}")
    print(f"machine: {os.cpu_count()} CPUs; Slurm config {os.environ.get('SLURM_CONF')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
