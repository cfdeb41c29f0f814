"""Benchmark: how long `cluster render` takes next to `python -c "import torch"`, on this machine.

The login-node commands must not import torch or numpy (tests/test_cli.py checks that);
this prints what it buys. Both commands run as fresh subprocesses, alternating, and the
median of the runs is compared. Target: render / import torch <= 0.10.

    .venv/bin/python tests/benchmarks/bench_cli.py [--runs 5]

Exits 1 when the ratio misses the target, so that run_all.sh shows it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET = 0.10


def cluster_script() -> list[str]:
    """The console script users run (beside this interpreter), else ``python -m cluster.cli``."""
    script = Path(sys.executable).with_name("cluster")
    if script.exists():
        return [str(script)]
    found = shutil.which("cluster")
    return [found] if found else [sys.executable, "-m", "cluster.cli"]


def wall_time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command (default 5)")
    args = parser.parse_args()

    render = cluster_script() + ["render", "jobs/seed_convnet.yaml"]
    torch = [sys.executable, "-c", "import torch"]
    for cmd in (render, torch):  # warm the page cache; not timed
        wall_time(cmd)
    times: dict[str, list[float]] = {"render": [], "torch": []}
    for _ in range(args.runs):  # alternate, so that a slow moment of the machine hits both
        times["render"].append(wall_time(render))
        times["torch"].append(wall_time(torch))
    render_s = statistics.median(times["render"])
    torch_s = statistics.median(times["torch"])
    ratio = render_s / torch_s

    print(f"cluster render jobs/seed_convnet.yaml   median {render_s * 1000:8.1f} ms  "
          f"(min {min(times['render']) * 1000:.1f}, max {max(times['render']) * 1000:.1f}; {args.runs} runs)")
    print(f'python -c "import torch"                 median {torch_s * 1000:8.1f} ms  '
          f"(min {min(times['torch']) * 1000:.1f}, max {max(times['torch']) * 1000:.1f}; {args.runs} runs)")
    print(f"ratio render / import torch: {ratio:.3f}  (target <= {TARGET:.2f}: {'met' if ratio <= TARGET else 'MISSED'})")
    print(f"command: {' '.join(render)}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
