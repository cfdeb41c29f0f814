"""The local test cluster itself: what the toolkit's Slurm/Torque tests rely on."""

from __future__ import annotations

import re
import subprocess
import textwrap
import time

import pytest

from support import slurm as sh

pytestmark = pytest.mark.slurm


def write_script(path, body: str) -> str:
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return str(path)


def test_trivial_job_runs(tmp_path):
    script = write_script(tmp_path / "hello.sh", 'echo "hello from $SLURM_JOB_ID on $(hostname -s)"\n')
    out = tmp_path / "hello.out"
    job = sh.sbatch(script, f"--output={out}", "--time=1")
    assert sh.wait_job(job, timeout=60) == "COMPLETED"
    assert out.read_text().startswith(f"hello from {job} on ")


@pytest.mark.parametrize("option", ["--gres=gpu:1", "--gpus=1", "--gpus-per-node=1", "--gres=gpu:2"])
def test_fake_gpus_accepted(option):
    proc = sh.run(["sbatch", "--test-only", option, "--wrap", "true"], check=False)
    assert proc.returncode == 0, proc.stderr
    assert "to start at" in proc.stderr


def test_too_many_gpus_refused():
    proc = sh.run(["sbatch", "--test-only", "--gres=gpu:3", "--wrap", "true"], check=False)
    assert proc.returncode != 0
    assert "Requested node configuration is not available" in proc.stderr


def test_partitions():
    proc = sh.run(["sinfo", "-h", "-o", "%P %l"])
    parts = dict(line.split() for line in proc.stdout.splitlines())
    assert parts == {"gpu*": "infinite", "cpu": "infinite"}


MODULE_SCRIPT = """
    # A non-login batch shell has no `module` function: load the init file if needed.
    type module >/dev/null 2>&1 || source "${MODULESHOME:-/usr/share/modules}/init/bash"
    module load cuda/11.1
    echo "load-11.1 rc=$? CUDA_HOME=${CUDA_HOME:-unset}"
    module load cuda/99.9
    echo "load-99.9 rc=$?"
"""


def test_module_load_in_job(tmp_path):
    script = write_script(tmp_path / "mod.sh", MODULE_SCRIPT)
    out = tmp_path / "mod.out"
    job = sh.sbatch(script, f"--output={out}")
    assert sh.wait_job(job, timeout=60) == "COMPLETED"
    text = out.read_text()
    assert "load-11.1 rc=0 CUDA_HOME=/usr/local/cuda-11.1-fake" in text
    assert "load-99.9 rc=1" in text
    assert "Unable to locate a modulefile for 'cuda/99.9'" in text


def test_module_load_with_export_none(tmp_path):
    """Even with --export=NONE (no MODULEPATH from the submitter) `module use` + load works."""
    body = f"""
        source /usr/share/modules/init/bash
        module use {sh.MODULEFILES}
        module load cuda/11.1
        echo "load-11.1 rc=$? CUDA_HOME=${{CUDA_HOME:-unset}}"
    """
    script = write_script(tmp_path / "mod.sh", body)
    out = tmp_path / "mod.out"
    job = sh.sbatch(script, f"--output={out}", "--export=NONE")
    assert sh.wait_job(job, timeout=60) == "COMPLETED"
    assert "load-11.1 rc=0 CUDA_HOME=/usr/local/cuda-11.1-fake" in out.read_text()


def test_torque_qsub_and_qstat(tmp_path):
    script = write_script(
        tmp_path / "pbs.sh",
        """
        #PBS -N ctrain-pbs
        #PBS -l walltime=00:05:00
        echo "pbs job $SLURM_JOB_ID"
        sleep 2
        """,
    )
    proc = sh.run(["qsub", script], cwd=tmp_path)
    job = proc.stdout.strip()
    assert re.fullmatch(r"\d+", job), proc.stdout
    qstat = sh.run(["qstat", "-f", job]).stdout
    assert re.search(rf"Job Id:\s*{job}\b", qstat), qstat
    assert "Job_Name = ctrain-pbs" in qstat
    assert "Resource_List.walltime = 00:05:00" in qstat
    assert re.search(r"job_state = [QRC]", qstat), qstat
    assert sh.wait_job(job, timeout=60) == "COMPLETED"
    assert "job_state = C" in sh.run(["qstat", "-f", job]).stdout
    assert (tmp_path / f"pbs.sh.o{job}").read_text().strip() == f"pbs job {job}"


def test_memory_limit_enforced(tmp_path):
    script = write_script(
        tmp_path / "mem.sh",
        """
        srun python3 -c "import time; b = bytearray(400 * 2**20); time.sleep(30)"
        """,
    )
    out = tmp_path / "mem.out"
    job = sh.sbatch(script, f"--output={out}", "--mem=100M")
    assert sh.wait_job(job, timeout=60) == "FAILED"
    assert "exceeded memory limit" in out.read_text()


def test_no_accounting_fixture(slurm_no_accounting, tmp_path):
    proc = sh.run(["sacct"], check=False)
    assert proc.returncode != 0
    assert "accounting storage is disabled" in (proc.stdout + proc.stderr)
    # Jobs still run and scontrol still reports them.
    script = write_script(tmp_path / "t.sh", "echo ok\n")
    job = sh.sbatch(script, f"--output={tmp_path / 't.out'}")
    assert sh.wait_job(job, timeout=60) == "COMPLETED"


@pytest.mark.serial  # restarts slurmctld with accounting off and on
def test_accounting_mode_switch_both_ways(tmp_path):
    before = sh.cluster_mode()
    try:
        sh.set_accounting(True)
        assert sh.accounting_enabled()
        script = write_script(tmp_path / "t.sh", "echo ok\n")
        job = sh.sbatch(script, f"--output={tmp_path / 't.out'}")
        assert sh.wait_job(job, timeout=60) == "COMPLETED"

        t0 = time.monotonic()
        sh.set_accounting(False)
        assert time.monotonic() - t0 < 30
        assert not sh.accounting_enabled()
        assert sh.job_state(job) == "COMPLETED"  # slurmctld kept its state across the restart

        sh.set_accounting(True)
        assert sh.accounting_enabled()
        # sacct knows the job recorded before the switch.
        deadline = time.monotonic() + 30
        while sh.sacct_state(job) != "COMPLETED" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sh.sacct_state(job) == "COMPLETED"
    finally:
        sh.set_accounting(before != "noacct")


def test_requeue_then_make_eligible(tmp_path):
    script = write_script(tmp_path / "long.sh", "echo start $SLURM_RESTART_COUNT\nsleep 300\n")
    job = sh.sbatch(script, f"--output={tmp_path / 'long.out'}", "--open-mode=append")
    try:
        sh.wait_state(job, "RUNNING", timeout=60)
        sh.run(["scontrol", "requeue", job])
        sh.wait_state(job, "PENDING", timeout=30)
        info = sh.show_job(job)
        assert info["Restarts"] == "1"
        assert info["Reason"] in ("BeginTime", "None")  # held back ~2 min after a requeue
        t0 = time.monotonic()
        sh.make_eligible(job)
        sh.wait_state(job, "RUNNING", timeout=30)
        assert time.monotonic() - t0 < 30
    finally:
        sh.scancel(job)
    assert sh.wait_job(job, timeout=60) == "CANCELLED"


def test_helpers_wait_state_timeout(tmp_path):
    script = write_script(tmp_path / "held.sh", "true\n")
    job = sh.sbatch(script, "--hold")
    try:
        with pytest.raises(TimeoutError):
            sh.wait_state(job, "RUNNING", timeout=1)
    finally:
        sh.scancel(job)


def test_env_lines_are_eval_able():
    proc = subprocess.run(
        ["bash", "-c", f'eval "$(bash {sh.CLUSTER_SH} env)"; eval "$(bash {sh.CLUSTER_SH} env)"; '
         'sinfo -h -o %P >/dev/null && echo "$MODULEPATH"'],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().split(":").count(str(sh.MODULEFILES)) == 1
