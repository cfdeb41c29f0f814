"""Shared pytest setup.

Slurm: tests marked ``@pytest.mark.slurm`` need the local cluster started by
``bash tests/slurm/cluster.sh up``. They get the ``slurm_cluster`` fixture automatically:
it puts SLURM_CONF / MODULEPATH (from ``cluster.sh env``) into os.environ and checks that
the node answers. When the cluster is not up they are skipped -- except under CI=true,
where a missing cluster fails them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import slurm as slurm_helpers  # tests/support/slurm.py (pythonpath = ["tests"])


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(reason: str):
    message = f"Slurm test cluster not available: {reason} (start it with: bash tests/slurm/cluster.sh up)"
    if _in_ci():
        pytest.fail(message + " [CI=true: a missing cluster is a failure]", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local Slurm cluster: env set for this session, node checked to be up.

    Returns the dict of variables taken from ``cluster.sh env``.
    """
    try:
        env = slurm_helpers.cluster_env()
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"`cluster.sh env` failed: {exc}")
    os.environ.update(env)
    if not Path(env.get("SLURM_CONF", "")).is_file():
        _unavailable(f"no config at SLURM_CONF={env.get('SLURM_CONF')}")
    try:
        states = slurm_helpers.node_states()
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"sinfo does not answer with SLURM_CONF={env.get('SLURM_CONF')}: {exc}")
    if not any(s in ("idle", "mixed", "allocated", "completing") for s in states):
        _unavailable(f"no usable node (sinfo states: {states or 'none'})")
    return env


@pytest.fixture(autouse=True)
def _slurm_marker(request):
    """Give every test marked ``slurm`` the ``slurm_cluster`` fixture."""
    if request.node.get_closest_marker("slurm") is not None:
        request.getfixturevalue("slurm_cluster")


def _switch_accounting(enabled: bool):
    before = slurm_helpers.cluster_mode()
    target = "acct" if enabled else "noacct"
    if before != target:
        slurm_helpers.set_accounting(enabled)
    return before


@pytest.fixture
def slurm_no_accounting(slurm_cluster):
    """Run the test with accounting off (sacct disabled); the previous mode is restored after.

    A switch restarts slurmctld (~3 s each way); jobs and their state survive it.
    """
    before = _switch_accounting(False)
    try:
        yield
    finally:
        if before == "acct":
            slurm_helpers.set_accounting(True)


@pytest.fixture(scope="module")
def slurm_no_accounting_module(slurm_cluster):
    """Like ``slurm_no_accounting`` for every test of a module (one switch each way)."""
    before = _switch_accounting(False)
    try:
        yield
    finally:
        if before == "acct":
            slurm_helpers.set_accounting(True)
