"""The parsing layer against Slurm's Torque-compatible commands on the local test cluster."""

import shutil
import subprocess
import time

import pytest

from cluster.backends.pbs.jobid import PBSJobId, parse_qsub_output
from cluster.backends.pbs.watcher import PBSInfoWatcher

pytestmark = pytest.mark.slurm


@pytest.fixture
def qsub(tmp_path):
    if shutil.which("qsub") is None or shutil.which("qstat") is None:
        pytest.skip("slurm-wlm-torque's qsub/qstat are not installed")

    def submit(body: str, *args: str) -> str:
        script = tmp_path / f"job{len(list(tmp_path.glob('job*.sh')))}.sh"
        script.write_text(f"#!/bin/bash\n#PBS -l walltime=00:02:00\n{body}\n")
        proc = subprocess.run(["qsub", *args, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return PBSJobId.parse(parse_qsub_output(proc.stdout)).key

    return submit


def _wait(watcher: PBSInfoWatcher, job_id: str, states: set[str], timeout: float = 90) -> str:
    deadline = time.time() + timeout
    while True:
        state = watcher.get_state(job_id, mode="force")
        if state in states or time.time() > deadline:
            return state
        time.sleep(0.5)


def test_watch_jobs_through_the_torque_wrapper(qsub):
    ok = qsub("sleep 3")
    bad = qsub("exit 3")
    assert ok.isdigit() and bad.isdigit()  # the wrapper prints bare job numbers
    watcher = PBSInfoWatcher("torque")
    watcher.register_job(ok)
    watcher.register_job(bad)
    assert _wait(watcher, ok, {"RUNNING", "FINISHED"}) in ("RUNNING", "FINISHED")
    # The wrapper reports every ended job as C, without an exit status.
    assert _wait(watcher, bad, {"FINISHED"}) == "FINISHED"
    assert _wait(watcher, ok, {"FINISHED"}) == "FINISHED"
    assert watcher.is_done(ok, mode="cache") and watcher.is_done(bad, mode="cache")
    assert watcher.normalised_state(bad, mode="cache") == "unknown"  # the outcome is in the result file


def test_held_job_and_a_forgotten_id(qsub):
    held = qsub("true", "-h")
    watcher = PBSInfoWatcher("torque")
    watcher.register_job(held)
    watcher.register_job("99999999")
    try:
        assert _wait(watcher, held, {"PENDING"}) == "PENDING"
        assert not watcher.is_done(held, mode="cache")
        assert watcher.left_history("99999999")
        assert watcher.is_done("99999999", mode="cache")
    finally:
        subprocess.run(["qdel", held], capture_output=True, timeout=60)
