"""The local executor allocates no GPUs: a spec that asks for some says so, at submit (no torch
on that path) and in the job's log (where torch tells whether this machine has CUDA)."""

from __future__ import annotations

import pytest

from support.runs import REPO, cluster_cmd, last_run

torch = pytest.importorskip("torch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the job trains on its GPU")
def test_local_submit_of_a_gpu_spec_warns_at_submit_and_in_the_log(tmp_path):
    sets = ["resources.gpus_per_node=1", "train.device=auto", "train.epochs=1"]
    proc = cluster_cmd("submit", str(REPO / "jobs/smoke.yaml"), "--executor", "local", "--wait",
                       *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("warning: resources.gpus_per_node is 1, but the local executor allocates no GPUs: the job uses this "
            "machine's own, and trains on the CPU when torch sees none (its log says which)") in proc.stderr
    logs = cluster_cmd("logs", str(last_run(tmp_path).path), "--err", cwd=tmp_path).stdout
    assert "cluster-train: warning: resources.gpus_per_node is 1, but no scheduler allocated GPUs here and " in logs
    assert "training on the CPU (set train.device: cpu to say so, or submit to a GPU queue)" in logs


def test_cpu_specs_and_schedulers_that_allocate_get_no_note(tmp_path):
    from cluster.cli import local_gpu_note
    from cluster.spec import load_spec

    gpu = load_spec(REPO / "jobs/smoke.yaml", ["resources.gpus_per_node=1", "train.device=auto"])
    assert local_gpu_note(gpu, "local")
    assert local_gpu_note(gpu, "slurm") is None and local_gpu_note(gpu, "pbs") is None
    assert local_gpu_note(load_spec(REPO / "jobs/smoke.yaml"), "local") is None  # no GPU asked for
    cpu = load_spec(REPO / "jobs/smoke.yaml", ["resources.gpus_per_node=1", "train.device=cpu"])
    assert local_gpu_note(cpu, "local") is None
