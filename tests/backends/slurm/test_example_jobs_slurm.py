"""The shipped example jobs fit the shipped test cluster: every ``jobs/*.yaml``, rendered for
Slurm, is accepted by ``sbatch --test-only`` on the two-node test cluster (nodes of ~11 GB and
4 CPUs, two fake GPUs each). A request the cluster can never satisfy is refused there with
"Requested node configuration is not available"."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import slurm as sh
from support.runs import REPO, cluster_cmd

pytestmark = pytest.mark.slurm

EXAMPLES = sorted((REPO / "jobs").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"seed_convnet.yaml", "seed_convnet_pbspro.yaml", "smoke.yaml"}


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_job_is_accepted_by_sbatch_test_only(spec: Path, tmp_path: Path) -> None:
    render = cluster_cmd("render", str(spec), "--scheduler", "slurm", "-o", str(tmp_path / "job.sh"), cwd=REPO)
    assert render.returncode == 0, render.stderr
    proc = sh.run(["sbatch", "--test-only", str(tmp_path / "job.sh")], check=False, cwd=tmp_path)
    assert proc.returncode == 0, f"{spec.name}: sbatch --test-only refused it: {proc.stderr.strip()}"
    assert "to start at" in proc.stderr, proc.stderr
