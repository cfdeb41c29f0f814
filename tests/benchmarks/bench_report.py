"""Benchmark (issue 23): `cluster report` over a 100-run sweep on the local Slurm, beside
`cluster status` over the same runs.

The sweep directory holds 100 runs whose run.json files `cluster.submit.prepare_run` writes (as
`cluster submit` does), each pointing at one task of one real array job of `true`
(`support.slurm.sweep_of_true_jobs`): sacct has a row for every task, no trainer runs. Measured,
alternately so that a slow moment of the machine hits both: the wall time of
`cluster report SWEEP --json` and of `cluster status SWEEP --json` (the console script, as a
subprocess; median of the runs), and the scheduler commands each issues, counted through
wrappers on PATH.

Target: the report makes ONE scheduler call (sacct), however many runs; its wall time is
printed as a ratio to status's (no target: it reads more files per run).

    .venv/bin/python tests/benchmarks/bench_report.py [--runs 5] [--tasks 100]

Sets up the Slurm environment itself (tests/slurm/cluster.sh env); exits 0 with
"skipped: no Slurm" when sinfo does not answer, 1 when the target is missed. Runs with the
environment's PYTHONDONTWRITEBYTECODE as it is (said in the output).
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
from pathlib import Path

from _slurm import REPO, calls, cluster_script, counting_wrappers, spread, use_slurm, wait_gone

from support import slurm as sh  # noqa: E402  (_slurm put tests/ on sys.path)

COMMANDS = ["sacct", "squeue", "scontrol", "sinfo"]
CALLS_TARGET = 1


def once(command: str, sweep: Path, path_env: str, log: Path) -> tuple[float, dict[str, int], int]:
    log.write_text("")
    cmd = cluster_script() + [command, str(sweep), "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PATH=path_env))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cluster {command} failed ({proc.returncode}): {proc.stderr.strip()}")
    data = json.loads(proc.stdout)
    return wall, calls(log), len(data["runs"] if command == "report" else data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command (default 5)")
    parser.add_argument("--tasks", type=int, default=100, help="runs in the sweep (default 100)")
    args = parser.parse_args()
    use_slurm("bench_report")

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        work = Path(tmp)
        sweep = work / "sweep"
        array_id = sh.sweep_of_true_jobs(sweep, args.tasks, REPO / "jobs" / "smoke.yaml", ["train.epochs=1"])
        wait_gone([array_id])
        deadline = time.monotonic() + 120  # slurmdbd records each end a moment after squeue forgets it
        while time.monotonic() < deadline:
            out = sh.run(["sacct", "-X", "-n", "-P", "-j", array_id, "-o", "State"], check=False).stdout
            if out.count("COMPLETED") >= args.tasks:
                break
            time.sleep(0.5)
        path_env, log = counting_wrappers(work / "wrappers", COMMANDS)
        for command in ("report", "status"):  # warm the page cache; not timed
            once(command, sweep, path_env, log)
        walls: dict[str, list[float]] = {"report": [], "status": []}
        used: dict[str, dict[str, int]] = {}
        counted: dict[str, int] = {}
        for _ in range(args.runs):
            for command in walls:
                wall, used[command], counted[command] = once(command, sweep, path_env, log)
                walls[command].append(wall)

    bytecode = "without" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "with"
    print(f"cluster report/status SWEEP --json over a sweep of {args.tasks} runs of real Slurm jobs "
          f"(accounting on; {bytecode} a bytecode cache)")
    for command in walls:
        shown = ", ".join(f"{c} {used[command].get(c, 0)}" for c in COMMANDS)
        print(f"  {command:7s} wall {spread(walls[command])}; {counted[command]} runs; scheduler commands: {shown}")
    ratio = statistics.median(walls["report"]) / statistics.median(walls["status"])
    total = sum(used["report"].values())
    met = total <= CALLS_TARGET and used["report"].get("sacct", 0) == 1
    print(f"  report / status wall: {ratio:.2f}")
    print(f"  report scheduler commands {total} (target: {CALLS_TARGET}, sacct): {'met' if met else 'MISSED'}")
    print(f"machine: {os.cpu_count()} CPUs; Slurm config {os.environ.get('SLURM_CONF')}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
