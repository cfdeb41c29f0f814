"""Fixtures of the remote tests: a real sshd on loopback, a test user whose home is the
cluster's login node, the laptop's project and hosts file, and the remote venv.

Tests marked ``ssh`` get the server; without sshd/rsync (or without root to add the user) they
are skipped, except under CI=true where that is a failure (as for the Slurm marker).

The remote venv is built (or, when an earlier session left it, updated) once per session, the
way a user builds it: ``cluster env jobs/smoke.yaml --host ct-test`` (pip installs the snapshot
and torch==2.13.0, whose CPU wheel is on this machine's disk).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support import sshd as sshd_helpers
from support.ci import in_ci, unavailable
from support.runs import cluster_cmd
from support.sshd import close_master, make_project

NAME = os.environ.get("CLUSTER_TEST_NAME", "cluster")
USER = f"ctr{NAME}"[:30]
STATE = Path(f"/tmp/ct-{NAME}-sshd")
HOST = sshd_helpers.HOST_ALIAS
TORCH = "torch==2.13.0"
"""The CPU build on this machine's disk (a plain torch requirement would pull a CUDA build)."""


def _unavailable(reason: str):
    unavailable(f"sshd test server not available: {reason} (apt-get install -y openssh-server openssh-client rsync)",
                "sshd")


@pytest.fixture(scope="session")
def sshd_server():
    """The running test sshd (stopped at the end of the session)."""
    missing = sshd_helpers.missing_tools()
    if missing:
        _unavailable(f"missing {', '.join(missing)}")
    if os.geteuid() != 0:
        _unavailable("the tests add a local user and need root")
    server = sshd_helpers.setup(STATE, USER)
    # A fresh login node each session, but for the venv: removing ~15k files of torch took 90 s on
    # the busy machine, and `cluster env --host` updates a kept venv in ~20 s (a fresh CI machine
    # builds it from nothing: 95-240 s).
    # Under CI=true the venv goes too: one that an interrupted session left half-built must not
    # decide the run.
    work = server.home / "cluster-train"
    for entry in work.iterdir() if work.is_dir() else []:
        if entry.name != "venv" or in_ci():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def remote_host(sshd_server, tmp_path_factory):
    """The hosts file entry ``ct-test`` (the laptop's view of the login node); its name."""
    base = tmp_path_factory.mktemp("laptop-home")
    control = Path(tempfile.mkdtemp(prefix="ctc-", dir="/tmp"))  # a socket path must stay short
    hosts = base / "hosts.yaml"
    env = {"PIP_FIND_LINKS": "/opt/wheels", "PIP_EXTRA_INDEX_URL": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if os.environ.get("SLURM_CONF"):
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    import yaml

    hosts.write_text(yaml.safe_dump({HOST: {"ssh_config": str(sshd_server.config), "workdir": "cluster-train",
                                            "python": "/usr/bin/python3", "env": env}}))
    os.environ["CLUSTER_HOSTS"] = str(hosts)
    os.environ["CLUSTER_SSH_CONTROL_DIR"] = str(control)
    yield HOST
    close_master(sshd_server)


@pytest.fixture(scope="session")
def laptop(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("laptop-project"))


@pytest.fixture(scope="session")
def remote_venv(remote_host, laptop, sshd_server):
    """The remote venv, built or updated by ``cluster env SPEC --host`` (timed: the session's one big cost)."""
    start = time.time()
    proc = cluster_cmd("env", "jobs/smoke.yaml", "--host", remote_host, "--set", f"environment.requirements=[{TORCH}]",
                       cwd=laptop, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nremote venv built by cluster env --host in {time.time() - start:.1f} s")
    return sshd_server.home / "cluster-train" / "venv"


@pytest.fixture(autouse=True)
def _ssh_marker(request):
    """Give every test marked ``ssh`` the server (skipped or failed as above when it cannot run)."""
    if request.node.get_closest_marker("ssh") is not None:
        request.getfixturevalue("remote_host")


@pytest.fixture
def fresh_session(sshd_server, remote_host):
    """No master connection open: the next command authenticates."""
    close_master(sshd_server)
    return sshd_server
