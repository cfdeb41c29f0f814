"""Benchmark: the regular expressions compiled by ``cluster render jobs/seed_convnet.yaml``.

Each run is a fresh subprocess in which ``re``'s compiler is timed (the cache is empty at
start, as in every command a user runs): it prints how many patterns were compiled, by
whose modules (the toolkit's, PyYAML's, the standard library's), their share of the
command's own wall time, and the same for ``import cluster.cli`` alone (what every
command pays before it parses its arguments). Bytecode is cached (``PYTHONDONTWRITEBYTECODE``
is removed from the environment), as on a user's machine.

    .venv/bin/python tests/benchmarks/bench_regex.py [--runs 5] [--base DIR]

``--base DIR``: a checkout of another commit (``git archive COMMIT | tar -x -C DIR``), measured
the same way in alternation, and the ratio of the two medians printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import contextlib, io, json, re, sys, time
start = time.perf_counter()
compile_, spent, seen = re._compile, [0.0], {}
def timed(pattern, flags):
    t = time.perf_counter()
    try:
        return compile_(pattern, flags)
    finally:
        key = (type(pattern), pattern, flags)
        if key not in seen:
            f = sys._getframe(1)
            while f and f.f_code.co_filename.endswith(("re/__init__.py", "re/_compiler.py")):
                f = f.f_back
            seen[key] = f.f_code.co_filename if f else "?"
            spent[0] += time.perf_counter() - t
re._compile = timed
if sys.argv[1] == "import":
    import cluster.cli
else:
    from cluster.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["render", "jobs/seed_convnet.yaml"])
    assert rc == 0
files = list(seen.values())
who = {"toolkit": sum("/cluster/" in f or "/train/" in f for f in files),
       "yaml": sum("/yaml/" in f for f in files)}
who["stdlib"] = len(files) - who["toolkit"] - who["yaml"]
print(json.dumps({"compiles": len(files), "who": who, "compile_ms": spent[0] * 1e3,
                  "wall_ms": (time.perf_counter() - start) * 1e3}))
"""


def one(what: str, tree: Path = REPO) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree)  # before the venv's own path to this checkout
    out = subprocess.run([sys.executable, "-c", PROBE, what], cwd=tree, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary(results: list[dict]) -> tuple[float, float, str]:
    compile_ms = statistics.median(r["compile_ms"] for r in results)
    wall_ms = statistics.median(r["wall_ms"] for r in results)
    return compile_ms, wall_ms, (f"{results[0]['compiles']} patterns compiled ({results[0]['who']}), median "
                                 f"{compile_ms:.1f} ms of {wall_ms:.1f} ms in the process = {compile_ms / wall_ms:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--base", type=Path, help="another checkout to measure beside this one")
    args = parser.parse_args()
    trees = [REPO] + ([args.base.resolve()] if args.base else [])
    for what in ("import", "render"):
        results: dict[Path, list[dict]] = {tree: [] for tree in trees}
        for tree in trees:
            one(what, tree)  # warm the bytecode and page caches; not counted
        for _ in range(args.runs):
            for tree in trees:  # alternating, so that the machine's load falls on both alike
                results[tree].append(one(what, tree))
        label = "import cluster.cli" if what == "import" else "cluster render jobs/seed_convnet.yaml"
        medians = {}
        for tree in trees:
            compile_ms, wall_ms, text = summary(results[tree])
            medians[tree] = compile_ms
            print(f"{label} [{'this tree' if tree == REPO else tree}]: {text}")
        if args.base and medians[args.base]:
            print(f"  compile time, this tree / base: {medians[REPO] / medians[args.base]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
