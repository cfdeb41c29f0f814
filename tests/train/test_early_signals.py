"""A stop signal that comes before the job's own handlers exist is not lost (train.contract.signals).

Slurm may send its walltime warning up to a minute early; on a 1-minute walltime the test
cluster sent it while the job's Python was still importing, and USR2's default action ended the
job without a checkpoint. The job's bootstrap now records USR2/TERM first thing; the trainer
(and a command job's runner) act on a recorded one as soon as their handlers exist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster.isolate import BOOTSTRAP, JOB_BOOTSTRAP
from train.contract import EXIT_REQUEUE
from support.runs import CLUSTER, REPO, reference_sha, wait_until

SLOW_START = """\
import signal, sys, time
from pathlib import Path
from train.contract import signals

Path(sys.argv[1]).write_text("importing")  # stands for the seconds of imports before the handlers
while not Path(sys.argv[2]).exists():
    time.sleep(0.01)
got = []
signal.signal(signal.SIGUSR2, lambda n, f: got.append(signal.Signals(n).name))
signals.redeliver()
print(got, flush=True)
"""


def _slow_start(tmp_path: Path, bootstrap: str) -> subprocess.CompletedProcess:
    (tmp_path / "slow_start.py").write_text(SLOW_START)
    marker, go = tmp_path / "importing", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.Popen([sys.executable, "-c", bootstrap, "slow_start", str(marker), str(go)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(marker.exists, 60, "the module to start")
    proc.send_signal(signal.SIGUSR2)
    time.sleep(0.2)
    go.touch()
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_usr2_before_the_handlers_reaches_them_once_they_exist(tmp_path: Path) -> None:
    proc = _slow_start(tmp_path, JOB_BOOTSTRAP)
    assert proc.returncode == 0 and proc.stdout == "['SIGUSR2']\n", proc.stdout + proc.stderr


def test_without_the_job_bootstrap_the_same_usr2_ends_the_process(tmp_path: Path) -> None:
    # What the job's processes did before (and any other process the toolkit starts still does).
    assert _slow_start(tmp_path, BOOTSTRAP).returncode == -signal.SIGUSR2


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (/proc's SigCgt mask)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except FileNotFoundError:
        pass
    return False


def test_a_trainer_warned_while_importing_torch_checkpoints_and_resumes_exactly(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(subprocess.run([*CLUSTER, "check", str(REPO / "jobs/smoke.yaml")], capture_output=True, text=True,
                                   check=True).stdout)
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-c", JOB_BOOTSTRAP, "train", "--config", str(spec), "--run-dir", str(run_dir)]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The bootstrap's recorder is in place within milliseconds; torch's import takes a second or more.
    wait_until(lambda: _catches(proc.pid, signal.SIGUSR2) or proc.poll() is not None, 60, "the bootstrap",
               poll=0.002)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_REQUEUE, out + err  # stopped as asked, not ended by the signal
    assert not (run_dir / "summary.json").exists()
    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", [])
