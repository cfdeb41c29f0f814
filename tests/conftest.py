"""Shared pytest setup.

Slurm: tests marked ``@pytest.mark.slurm`` need the local cluster started by
``bash tests/slurm/cluster.sh up``. They get the ``slurm_cluster`` fixture automatically:
it puts SLURM_CONF / MODULEPATH (from ``cluster.sh env``) into os.environ and checks that
the node answers. When the cluster is not up they are skipped -- except under CI=true,
where a missing cluster fails them.

Concurrency (pytest-xdist, see the README's "Tests" section): the suite runs as
``pytest -n N --dist loadgroup -m "not serial"`` and ``pytest -m serial`` one test at a time,
either after it or (``.ci/run``) at the same time on a second test cluster. A test marked
``serial`` changes its test cluster for every test beside it (accounting switched off, a node
down or crashed, a lowered MaxArraySize); a test that uses the ``slurm_no_accounting`` fixtures
is marked so here. Tests that share an expensive module-scoped fixture carry an ``xdist_group``
mark, so that one worker builds it once.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from support import slurm as slurm_helpers  # tests/support/slurm.py (pythonpath = ["tests"])
from support.ci import unavailable
from support.runs import session_scratch


def pytest_configure(config: pytest.Config) -> None:
    """Name this session (for its shared reference runs) before pytest-xdist starts workers:
    they inherit the environment, so every worker finds the same directory."""
    if not hasattr(config, "workerinput"):
        os.environ["CLUSTER_TEST_SESSION"] = uuid.uuid4().hex[:12]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's reference runs once every worker has ended (in the main process)."""
    if not hasattr(config, "workerinput"):
        shutil.rmtree(session_scratch(), ignore_errors=True)


def _unavailable(reason: str):
    unavailable(f"Slurm test cluster not available: {reason} (start it with: bash tests/slurm/cluster.sh up)",
                "cluster")


_SWITCHES_ACCOUNTING = ("slurm_no_accounting", "slurm_no_accounting_module")


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``serial`` every test that switches accounting off through the fixtures below; under
    pytest-xdist, hand out the long tests first."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in _SWITCHES_ACCOUNTING):
            item.add_marker(pytest.mark.serial)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=_runs_short)


_LONG_MARKS = ("slow", "slurm", "ssh")


def _runs_short(item: pytest.Item) -> bool:
    """False for a test that trains or waits on a scheduler (marked slow, slurm or ssh).

    pytest-xdist hands tests out in collection order (groups first, the largest first), so
    these go out first and the many short ones fill the workers' last minutes; collected
    in file order, a 10-minute test that happened to come last would run alone at the end.
    Every worker sorts the same collection the same way (a stable sort), as xdist requires.
    """
    return not any(item.get_closest_marker(mark) for mark in _LONG_MARKS)


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``serial`` test beside other workers would break their jobs: refuse to run it there."""
    if item.get_closest_marker("serial") is None:
        return
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        pytest.fail("this test is marked serial: it changes the test cluster for every test running beside it; "
                    'run the suite as pytest -n N -m "not serial", then pytest -m serial (as .ci/run does)',
                    pytrace=False)


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
