"""Benchmark (issue 22): the laptop's `cluster --host` against the same command on the login node.

A real sshd on loopback (tests/support/sshd.py) and its test user's home as the login node, in
its own workdir (``cluster-train-bench``; the remote venv is built there by ``cluster env
--host`` on the first run and kept). Measured side by side in one run, medians:

1. ``status`` over 100 runs: ``cluster status --host H --json`` on the laptop against
   ``cluster status --json`` run on the login node as its user; ssh processes per laptop command
   counted through a wrapper on PATH (target: 1). The runs are the tasks of one held
   ``sbatch --array=0-99`` of the test user (never run; cancelled at the end).
2. ``submit``: ``cluster submit jobs/smoke.yaml --host H`` (an unchanged snapshot) against
   ``cluster submit`` on the login node (each job cancelled at once).
3. snapshot re-sync after a one-file change in a 1,000-file tree against its first full sync:
   bytes sent and time (target: the re-sync sends under 5 % of the bytes).

    .venv/bin/python tests/benchmarks/bench_remote.py [--repeat 5]

Needs root (the test user, sshd), sshd, rsync and the test Slurm; exits 0 with "skipped" when one
is missing, 1 when a target is missed. Measured with this machine's PYTHONDONTWRITEBYTECODE as set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _slurm import REPO, calls, counting_wrappers, use_slurm

from support import sshd as sshd_helpers  # noqa: E402  (tests/ is on sys.path through _slurm)

NAME = os.environ.get("CLUSTER_TEST_NAME", "cluster")
USER = f"ctr{NAME}"[:30]
WORKDIR = "cluster-train-bench"
HOST = "bench"


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def checked(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        sys.exit(f"bench_remote: {proc.args[:6]} failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    return proc


def laptop(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=1800)


def login_node(server, *args: str, cwd: str | None = None, env: dict[str, str] | None = None):
    python = str(server.home / WORKDIR / "venv" / "bin" / "python")
    extra = [f"{k}={v}" for k, v in {"SLURM_CONF": os.environ["SLURM_CONF"], **(env or {})}.items()]
    cmd = ["env", *extra, python, "-m", "cluster.cli", *args]
    if cwd:
        cmd = ["sh", "-c", f'cd "$0" && exec "$@"', cwd, *cmd]
    return sshd_helpers.as_user(server.user, *cmd)


def setup_host(server, base: Path) -> None:
    import yaml

    env = {"PIP_FIND_LINKS": "/opt/wheels", "PIP_EXTRA_INDEX_URL": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
           "SLURM_CONF": os.environ["SLURM_CONF"]}
    (base / "hosts.yaml").write_text(yaml.safe_dump({HOST: {"host": sshd_helpers.HOST_ALIAS, "ssh_config":
                                                            str(server.config), "workdir": WORKDIR,
                                                            "python": "/usr/bin/python3", "env": env}}))
    os.environ["CLUSTER_HOSTS"] = str(base / "hosts.yaml")
    os.environ["CLUSTER_SSH_CONTROL_DIR"] = tempfile.mkdtemp(prefix="ctc-", dir="/tmp")


def bench_status(server, project: Path, repeat: int, wrappers: tuple[str, Path]) -> bool:
    from cluster.spec import load_spec
    from cluster.submit import prepare_run

    runs = server.home / WORKDIR / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    script = server.home / WORKDIR / "hold.sbatch"
    script.write_text("#!/bin/bash\ntrue\n")
    shutil.chown(script, server.user)
    job = checked(sshd_helpers.as_user(server.user, "env", f"SLURM_CONF={os.environ['SLURM_CONF']}", "sbatch",
                                       "--parsable", "--hold", "--partition=cpu", "--mem=100M", "--time=1",
                                       "--array=0-99", "--output=/dev/null", str(script))).stdout.strip()
    try:
        spec = load_spec(REPO / "jobs" / "smoke.yaml", ["train.epochs=1"])
        for i in range(100):
            run = prepare_run(spec, "slurm", runs / f"smoke-bench-{i:03d}")
            run.add_job(f"{job}_{i}", "submit")
        subprocess.run(["chown", "-R", f"{server.user}:{server.user}", str(runs)], check=True)
        path, log = wrappers
        here = median_time(lambda: checked(login_node(server, "status", "--json", "--runs-dir", f"{WORKDIR}/runs")),
                           repeat)
        log.write_text("")
        there = median_time(lambda: checked(laptop("status", "--host", HOST, "--json", cwd=project,
                                                   env={"PATH": path})), repeat)
        ssh_calls = calls(log).get("ssh", 0) / repeat
        rows = json.loads(laptop("status", "--host", HOST, "--json", cwd=project).stdout)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    print(f"status, 100 runs: login node {here * 1000:.0f} ms   laptop --host {there * 1000:.0f} ms   "
          f"ratio {there / here:.2f}   ssh calls per command {ssh_calls:.1f} (target 1)   rows {len(rows)}")
    return ssh_calls <= 1 and len(rows) == 100


def bench_submit(server, project: Path, repeat: int) -> None:
    proc = checked(laptop("submit", "jobs/smoke.yaml", "--host", HOST, "--set", "train.epochs=1", cwd=project))
    snap = next(l for l in proc.stdout.splitlines() if l.startswith("snapshot")).split("(")[-1].rstrip(")")
    snap_dir = snap.split(":", 1)[1]
    jobs = []

    def remote() -> None:
        out = checked(laptop("submit", "jobs/smoke.yaml", "--host", HOST, "--set", "train.epochs=1", cwd=project))
        jobs.append(out.stdout.split("as job ")[1].split()[0])

    def local() -> None:
        out = checked(login_node(server, "submit", "jobs/smoke.yaml", "--set", "train.epochs=1", "--set",
                                 f"output.runs_dir={server.home / WORKDIR / 'runs-login'}", cwd=snap_dir,
                                 env={"PYTHONPATH": snap_dir}))
        jobs.append(out.stdout.split("as job ")[1].split()[0])

    try:
        here = median_time(local, repeat)
        there = median_time(remote, repeat)
    finally:
        subprocess.run(["scancel", *jobs], capture_output=True)
    print(f"submit: login node {here * 1000:.0f} ms   laptop --host (unchanged snapshot) {there * 1000:.0f} ms   "
          f"ratio {there / here:.2f}")


def bench_resync(server) -> bool:
    from cluster.remote import hosts, snapshot
    from cluster.remote.ssh import Transport

    tree = Path(tempfile.mkdtemp(prefix="bench-tree-"))
    try:
        for i in range(1000):
            (tree / f"pkg{i // 100}").mkdir(exist_ok=True)
            (tree / f"pkg{i // 100}" / f"mod{i:04d}.py").write_text(f"# module {i}\n" + "x = 1  # padding\n" * 120)
        (tree / "spec.yaml").write_text((REPO / "jobs" / "smoke.yaml").read_text())
        transport = Transport(hosts.resolve(HOST))
        results = []
        for change in (False, True):
            if change:
                (tree / "pkg3" / "mod0345.py").write_text("# changed\n" + "y = 2\n" * 50)
            snap = snapshot.build(tree / "spec.yaml", tree)
            start = time.perf_counter()
            sent = snapshot.send(snap, transport, lambda line: None)
            results.append((time.perf_counter() - start, sent["bytes_sent"], sent["files_sent"], snap.size))
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    (t1, b1, f1, size), (t2, b2, f2, _) = results
    print(f"snapshot sync, 1,000 files ({size / 1024:.0f} KiB): first {f1} files, {b1} bytes, {t1 * 1000:.0f} ms   "
          f"after a one-file change {f2} files, {b2} bytes, {t2 * 1000:.0f} ms   "
          f"ratio bytes {b2 / b1:.3f}, time {t2 / t1:.2f}")
    return b2 < 0.05 * b1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    use_slurm("bench_remote")
    if sshd_helpers.missing_tools() or os.geteuid() != 0:
        print("bench_remote: skipped: needs root, sshd, ssh and rsync")
        return 0
    base = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    server = sshd_helpers.setup(Path(f"/tmp/ct-{NAME}-bench-sshd"), USER)
    server.start()
    try:
        setup_host(server, base)
        project = sshd_helpers.make_project(base / "laptop")
        if not (server.home / WORKDIR / "venv" / "bin" / "python").exists():
            start = time.time()
            checked(laptop("env", "jobs/smoke.yaml", "--host", HOST, "--set", "environment.requirements=[torch==2.13.0]",
                           cwd=project))
            print(f"(remote venv built by cluster env --host in {time.time() - start:.0f} s)")
        wrappers = counting_wrappers(base / "wrappers", ["ssh"])
        ok = bench_status(server, project, args.repeat, wrappers)
        bench_submit(server, project, max(3, args.repeat // 2))
        ok = bench_resync(server) and ok
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
