"""Benchmark: what importing a user's task module in a subprocess (train/contract/task_probe.py)
adds to ``cluster check``, beside the same check importing it in-process.

Three commands, fresh processes, run in alternation (the machine's load falls on all alike):
``cluster check`` of a spec whose task is a small module outside the toolkit, probed (what users
get); the same with the probe turned off (``isolate_task_imports(False)``: the module imported
in-process, as before); and ``jobs/signal_cnn.yaml``, a shipped task, which needs no probe.
Bytecode is cached (``PYTHONDONTWRITEBYTECODE`` removed), as on a user's machine.

    .venv/bin/python tests/benchmarks/bench_task_import.py [--runs 7]
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

REPO = Path(__file__).resolve().parents[2]

TASK = '''
from dataclasses import dataclass


class T:
    @dataclass(frozen=True)
    class Options:
        hidden: int = 16

    def data(self): ...
    def model(self): ...
    def loss(self, output, target, reduction): ...
'''

CHECK = ("import sys\nfrom cluster.cli import main\nfrom train.contract.task_probe import isolate_task_imports\n"
         "with isolate_task_imports(sys.argv[2] == 'probe'):\n    rc = main(['check', sys.argv[1]])\nsys.exit(rc)\n")


def wall_time(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHECK, *args], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command (default 7)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "benchtask").mkdir()
        (root / "benchtask" / "__init__.py").write_text("")
        (root / "benchtask" / "small.py").write_text(TASK)
        spec = root / "job.yaml"
        spec.write_text(json.dumps({"name": "j", "train": {"task": "benchtask.small:T", "options": {"hidden": 3}}}))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPATH"] = str(root)
        commands = {"user task, probed": [str(spec), "probe"], "user task, in-process": [str(spec), "in-process"],
                    "shipped task (signal_cnn)": [str(REPO / "jobs/signal_cnn.yaml"), "probe"]}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():
            wall_time(command, env)  # warm the caches; not timed
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(wall_time(command, env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:28s} median {value * 1e3:7.1f} ms (min {min(times[name]) * 1e3:.1f})")
    probed, local = medians["user task, probed"], medians["user task, in-process"]
    print(f"probe / in-process: {probed / local:.2f} (+{(probed - local) * 1e3:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
