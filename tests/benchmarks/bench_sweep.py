"""Benchmark (issue 8): submitting a 100-point sweep to the local Slurm.

Runs `cluster submit jobs/smoke.yaml --executor slurm --sweep train.lr=<100 values>` (the
console script, as a subprocess) with counting wrappers on PATH for the scheduler's
commands (tests/support/runs.py), and prints its wall time and the sbatch calls
it made beside the targets; each sweep's array is cancelled (`scancel <array id>` from
sweep.json) as soon as the command returns, so that its tasks do not run.

Targets: sbatch calls per sweep == 1; wall time <= 3 s on this machine (median).

    .venv/bin/python tests/benchmarks/bench_sweep.py [--runs 3] [--points 100] [--profile]

--profile also runs one sweep under cProfile in this process and prints where its time
goes. Sets up the Slurm environment itself (tests/slurm/cluster.sh env); exits 0 with
"skipped: no Slurm" when sinfo does not answer, 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _slurm import REPO, calls, cluster_script, counting_wrappers, spread, use_slurm, wait_gone, wait_idle

TIME_TARGET = 3.0
SUBMIT_TARGET = 1
COMMANDS = ["sbatch", "sacct", "squeue", "scontrol", "sinfo"]
SPEC = REPO / "jobs" / "smoke.yaml"


def sweep_args(points: int) -> list[str]:
    values = ",".join(f"{1e-4 * (i + 1):.4g}" for i in range(points))
    return ["submit", str(SPEC), "--executor", "slurm", "--sweep", f"train.lr={values}"]


def newest_sweep(work: Path) -> Path:
    found = sorted((work / "runs").glob("*/sweep.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no sweep.json under {work}/runs")
    return found[-1].parent


def cancel(sweep_dir: Path) -> str:
    array_id = json.loads((sweep_dir / "sweep.json").read_text())["job_id"]
    subprocess.run(["scancel", array_id], capture_output=True)
    return array_id


def sweep_once(work: Path, points: int, path_env: str, log: Path) -> tuple[float, dict[str, int], Path]:
    log.write_text("")
    start = time.perf_counter()
    proc = subprocess.run(cluster_script() + sweep_args(points), cwd=work, capture_output=True, text=True,
                          env=dict(os.environ, PATH=path_env))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cluster submit --sweep failed ({proc.returncode}): {proc.stderr.strip()}")
    sweep_dir = newest_sweep(work)
    array_id = cancel(sweep_dir)
    wait_gone([array_id])
    return wall, calls(log), sweep_dir


def profile_once(work: Path, points: int) -> str:
    """One sweep under cProfile, in this process: the top of the cumulative profile."""
    import argparse as _argparse
    import cProfile
    import pstats

    from cluster.cli import build_parser

    args: _argparse.Namespace = build_parser().parse_args(sweep_args(points))
    cwd = os.getcwd()
    os.chdir(work)
    profiler = cProfile.Profile()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the sweep's own lines
            profiler.runcall(args.func, args)
    finally:
        os.chdir(cwd)
    wait_gone([cancel(newest_sweep(work))])
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    return "profile of one sweep (cumulative, top 25):\n" + out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed sweeps (default 3; each is cancelled at once)")
    parser.add_argument("--points", type=int, default=100, help="points of the sweep (default 100)")
    parser.add_argument("--profile", action="store_true", help="also profile one sweep and print where the time goes")
    args = parser.parse_args()
    use_slurm("bench_sweep")

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        path_env, log = counting_wrappers(work / "wrappers", COMMANDS)
        walls: list[float] = []
        used: list[dict[str, int]] = []
        script = profile = ""
        for _ in range(args.runs):
            wait_idle()
            wall, counted, sweep_dir = sweep_once(work, args.points, path_env, log)
            walls.append(wall)
            used.append(counted)
            tasks = len(list(sweep_dir.glob("*/run.json")))
            if tasks != args.points:
                raise SystemExit(f"{sweep_dir}: {tasks} task run directories, expected {args.points}")
            script = (sweep_dir / "submitted.sh").read_text() if (sweep_dir / "submitted.sh").exists() else ""
        if args.profile:
            wait_idle()
            profile = profile_once(work, args.points)

    wall = statistics.median(walls)
    sbatch = max(c.get("sbatch", 0) for c in used)
    others = {c: max(u.get(c, 0) for u in used) for c in COMMANDS[1:]}
    print(f"cluster submit jobs/smoke.yaml --executor slurm --sweep train.lr=<{args.points} values>")
    print(f"  wall   {spread(walls)}")
    print(f"  sbatch calls per sweep: {sbatch}  (other scheduler commands: "
          + ", ".join(f"{c} {n}" for c, n in others.items()) + ")")
    print(f"  wall / target {wall / TIME_TARGET:.2f} (target <= {TIME_TARGET:.0f} s): "
          f"{'met' if wall <= TIME_TARGET else 'MISSED'};  sbatch calls {sbatch} (target {SUBMIT_TARGET}): "
          f"{'met' if sbatch == SUBMIT_TARGET else 'MISSED'}")
    if script and "#SBATCH --partition=cpu" not in script:
        print("  NOTE: the array's script is not the spec's: it lacks '#SBATCH --partition=cpu' "
              "(resources.queue of jobs/smoke.yaml); see the sweep's submitted.sh")
    print(f"machine: {os.cpu_count()} CPUs; Slurm config {os.environ.get('SLURM_CONF')}")
    if profile:
        print(profile)
    return 0 if wall <= TIME_TARGET and sbatch == SUBMIT_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
