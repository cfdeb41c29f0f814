"""Benchmark: how long `cluster render` takes next to `python -c "import torch"`, on this machine.

The login-node commands must not import torch or numpy (tests/test_cli.py checks that);
this prints what it buys, twice:

- with bytecode cached (``PYTHONDONTWRITEBYTECODE`` unset, as on most users' machines: the
  first, untimed run writes the project's ``__pycache__``);
- with ``PYTHONDONTWRITEBYTECODE=1`` (as this machine's environment sets it) and no bytecode of
  the project's own: ``cluster/__pycache__`` and ``train/__pycache__`` are removed first, so
  every command compiles the modules it imports, as an editable install does there. torch's
  bytecode, written by pip at install time, is read in both cases.

Both commands run as fresh subprocesses, alternating, and the median of the runs is compared.
Targets: render / import torch <= 0.05 with bytecode cached, <= 0.08 without.

    .venv/bin/python tests/benchmarks/bench_cli.py [--runs 5]

Exits 1 when a ratio misses its target, so that run_all.sh shows it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGETS = {"bytecode cached": 0.05, "PYTHONDONTWRITEBYTECODE=1": 0.08}
PACKAGES = ("cluster", "train")


def cluster_script() -> list[str]:
    """The console script users run (beside this interpreter), else ``python -m cluster.cli``."""
    script = Path(sys.executable).with_name("cluster")
    if script.exists():
        return [str(script)]
    found = shutil.which("cluster")
    return [found] if found else [sys.executable, "-m", "cluster.cli"]


def drop_project_bytecode() -> None:
    """Remove the project's own ``__pycache__`` folders (build outputs git ignores)."""
    for package in PACKAGES:
        for cache in (REPO / package).rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)


def wall_time(cmd: list[str], env: dict[str, str], before=None) -> float:
    if before:
        before()
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def compare(label: str, env: dict[str, str], runs: int, before=None) -> float:
    """Median wall times of render and import torch in one environment; prints and returns the ratio."""
    render = cluster_script() + ["render", "jobs/seed_convnet.yaml"]
    torch = [sys.executable, "-c", "import torch"]
    for cmd in (render, torch):  # warm the page cache (and, with bytecode, write it); not timed
        wall_time(cmd, env)
    times: dict[str, list[float]] = {"render": [], "torch": []}
    for _ in range(runs):  # alternate, so that a slow moment of the machine hits both
        times["render"].append(wall_time(render, env, before))
        times["torch"].append(wall_time(torch, env))
    render_s = statistics.median(times["render"])
    torch_s = statistics.median(times["torch"])
    ratio = render_s / torch_s
    target = TARGETS[label]
    print(f"[{label}]")
    print(f"  cluster render jobs/seed_convnet.yaml   median {render_s * 1000:8.1f} ms  "
          f"(min {min(times['render']) * 1000:.1f}, max {max(times['render']) * 1000:.1f}; {runs} runs)")
    print(f'  python -c "import torch"                 median {torch_s * 1000:8.1f} ms  '
          f"(min {min(times['torch']) * 1000:.1f}, max {max(times['torch']) * 1000:.1f}; {runs} runs)")
    print(f"  ratio render / import torch: {ratio:.3f}  (target <= {target:.2f}: "
          f"{'met' if ratio <= target else 'MISSED'})")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command (default 5)")
    args = parser.parse_args()

    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    uncached = {**cached, "PYTHONDONTWRITEBYTECODE": "1"}
    ratios = {
        "bytecode cached": compare("bytecode cached", cached, args.runs),
        "PYTHONDONTWRITEBYTECODE=1": compare("PYTHONDONTWRITEBYTECODE=1", uncached, args.runs,
                                             before=drop_project_bytecode),
    }
    print(f"command: {' '.join(cluster_script())} render jobs/seed_convnet.yaml")
    return 0 if all(ratios[k] <= TARGETS[k] for k in TARGETS) else 1


if __name__ == "__main__":
    sys.exit(main())
