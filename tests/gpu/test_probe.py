"""`cluster doctor --probe` on GPUs: every task runs the probe under srun (its own GPU
binding), and the verdict compares what the tasks saw with the spec. On the real test Slurm
(fake GPUs, CPU-only torch) for what it can show; the verdict on GPU reports from report
text in the probe's own format (a GPU report of this kind is what tests/gpu/device_check.py
prints on a real GPU)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cluster.doctor import probe_verdict
from cluster.spec import load_spec
from support.runs import REPO

SEED = REPO / "jobs/seed_convnet.yaml"


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv/bin/cluster"), "doctor", *args], cwd=REPO, env={**os.environ},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slurm
def test_probe_runs_in_every_task_and_refuses_gpus_torch_cannot_use(tmp_path: Path) -> None:
    proc = doctor(str(SEED), "--probe", "--set", f"environment.python={REPO / '.venv/bin/python'}",
                  "--set", f"output.runs_dir={tmp_path}", "--set", "resources.tasks_per_node=2",
                  "--set", "resources.gpus_per_node=2", "--set", "resources.mem=1G",
                  "--set", "resources.cpus_per_task=1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = proc.stdout.split("probe report", 1)[1]
    for task in (0, 1):  # srun started both tasks
        assert f"task {task}: torch cuda build: none (a CPU-only build)" in report
        assert f"task {task}: cuda available: False" in report
        assert f"task {task}: visible gpus: 0 (no usable CUDA: training would run on the CPU)" in report
    script = next(tmp_path.glob(".doctor/probe-*/probe.sh")).read_text()
    assert "#SBATCH --gres=gpu:2" in script and "srun --kill-on-bad-exit=0" in script
    assert "FAIL  probe: 2 GPU(s) requested but torch sees none (torch is a CPU-only build)" in proc.stdout


def gpu_report(*tasks: tuple[int, str]) -> str:
    lines = []
    for task, (count, kernel) in enumerate(tasks):
        lines += [f"task {task}: torch version: 2.4.1+cu121 (import 2.0 s)", f"task {task}: torch cuda build: 12.1",
                  f"task {task}: cuda available: True", f"task {task}: arch list: sm_50 sm_60 sm_70 sm_80 sm_90",
                  f"task {task}: visible gpus: {count}"]
        lines += [f"task {task}: gpu {i}: NVIDIA A100-SXM4-40GB, capability 8.0, 39.4 GiB, kernel: {kernel}"
                  for i in range(count)]
        lines.append(f"task {task}: toolkit imports: ok")
    return "\n".join(lines + ["probe: done"])


@pytest.mark.parametrize("tasks, expected", [
    ([(2, "ok"), (2, "ok")], ("ok", "2 task(s) ran a CUDA kernel on each of their GPUs and reported")),
    ([(1, "ok"), (1, "ok")], ("ok", "2 task(s) ran a CUDA kernel on each of their GPUs and reported")),  # bound
    ([(2, "ok"), (2, "FAILED: RuntimeError: CUDA error: no kernel image is available for execution on the device")],
     ("FAIL", "a CUDA kernel failed: task 1: gpu 0: NVIDIA A100-SXM4-40GB, capability 8.0, 39.4 GiB, kernel: "
              "FAILED: RuntimeError: CUDA error: no kernel image is available for execution on the device")),
    ([(4, "ok"), (4, "ok")], ("FAIL", "a task sees 4 GPU(s), but the spec asks for 2 per node")),
])
def test_probe_verdict_on_gpu_reports(tasks, expected):
    spec = load_spec(SEED, ["resources.tasks_per_node=2", "resources.gpus_per_node=2"])
    status, detail, hint = probe_verdict(spec, gpu_report(*tasks))
    assert (status, detail) == expected
    assert bool(hint) == (status == "FAIL")
