"""Every way a remote command fails: one line naming the host and what to do, a non-zero exit,
no traceback, nothing half-made (no local record, no remote run directory, no snapshot).

Against the real test sshd; none of these needs Slurm or the remote venv, except where said.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from support.ports import free_port
from support.runs import CLUSTER

# One sshd, one test user and one sshd log (authentications are counted there): every remote
# test on one worker (the same xdist_group in both modules).
pytestmark = [pytest.mark.ssh, pytest.mark.xdist_group("remote")]

HOST = "ct-test"


def run(laptop: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLUSTER, *args], cwd=laptop, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Failed with exactly one line on stderr (no traceback) holding ``words``."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def snapshot_state(server) -> tuple[set[str], set[str]]:
    """The remote run directories and snapshot directories (hidden incoming copies included)."""
    work = server.home / "cluster-train"
    return ({p.name for p in (work / "runs").glob("*")}, {p.name for p in (work / "snapshots").glob("*")})


def local_runs(laptop: Path) -> set[str]:
    return {p.name for p in (laptop / "runs").glob("*")}


def hosts_with(tmp_path: Path, sshd_server, **settings) -> dict[str, str]:
    """An environment whose hosts file holds ``ct-test`` with these settings over the usual ones."""
    base = yaml.safe_load(Path(os.environ["CLUSTER_HOSTS"]).read_text())[HOST]
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({HOST: {**base, **settings}}))
    control = Path(tempfile.mkdtemp(prefix="ctc-", dir="/tmp"))  # a socket path must stay short
    return {"CLUSTER_HOSTS": str(path), "CLUSTER_SSH_CONTROL_DIR": str(control)}


def ssh_config_with(tmp_path: Path, sshd_server, **lines: str) -> str:
    """A copy of the client's ssh config with some of its lines replaced."""
    text = sshd_server.config.read_text()
    for key, value in lines.items():
        text = "\n".join(f"  {key} {value}" if l.strip().startswith(key + " ") else l for l in text.splitlines())
    path = tmp_path / "ssh_config"
    path.write_text(text + "\n")
    return str(path)


@pytest.mark.parametrize("name", ["-oProxyCommand=touch /tmp/ct-pwned", "login node", "a\nb", "-l@ct-test",
                                  "ct-test;touch x", "ct-test$(id)"])
def test_hostile_host_names_are_refused_before_anything_runs(name, laptop, sshd_server, tmp_path):
    before, runs = sshd_server.authentications(), local_runs(laptop)
    for command in (["submit", "jobs/smoke.yaml"], ["status"], ["env", "jobs/smoke.yaml"]):
        assert_one_line(run(laptop, *command, f"--host={name}"), "is not allowed")
    assert not Path("/tmp/ct-pwned").exists() and not (laptop / "x").exists()
    assert sshd_server.authentications() == before
    assert local_runs(laptop) == runs


def test_unreachable_host(laptop, sshd_server, tmp_path):
    env = hosts_with(tmp_path, sshd_server, ssh_config=ssh_config_with(tmp_path, sshd_server, Port=str(free_port())))
    before = local_runs(laptop)
    proc = run(laptop, "submit", "jobs/smoke.yaml", "--host", HOST, env=env)
    assert_one_line(proc, f"cannot reach {HOST}", "retry")
    assert local_runs(laptop) == before
    assert_one_line(run(laptop, "status", "--host", HOST, env=env), f"cannot reach {HOST}")


def test_refused_authentication(laptop, sshd_server, tmp_path):
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    env = hosts_with(tmp_path, sshd_server,
                     ssh_config=ssh_config_with(tmp_path, sshd_server, IdentityFile=str(stranger)))
    before, remote = local_runs(laptop), snapshot_state(sshd_server)
    proc = run(laptop, "submit", "jobs/smoke.yaml", "--host", HOST, env=env)
    assert_one_line(proc, f"{HOST} refused authentication", "ssh-agent")
    assert local_runs(laptop) == before and snapshot_state(sshd_server) == remote


def test_changed_host_key_is_refused_not_accepted(laptop, sshd_server, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    kind, key = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sshd_server.port} {kind} {key}\n")
    env = hosts_with(tmp_path, sshd_server,
                     ssh_config=ssh_config_with(tmp_path, sshd_server, UserKnownHostsFile=str(known)))
    before = sshd_server.authentications()
    proc = run(laptop, "status", "--host", HOST, env=env)
    assert_one_line(proc, f"host key of {HOST}", "known_hosts")
    assert sshd_server.authentications() == before


def test_no_cluster_or_no_python_on_the_remote_side(laptop, sshd_server, tmp_path):
    env = hosts_with(tmp_path, sshd_server, venv="no-such-venv")
    assert_one_line(run(laptop, "status", "--host", HOST, env=env), HOST, f"cluster env SPEC --host {HOST}")
    (tmp_path / "p").mkdir()
    env = hosts_with(tmp_path / "p", sshd_server, python="/no/such/python3")
    before, remote = local_runs(laptop), snapshot_state(sshd_server)
    proc = run(laptop, "submit", "jobs/smoke.yaml", "--host", HOST, env=env)
    assert_one_line(proc, HOST, "/no/such/python3")
    assert local_runs(laptop) == before and snapshot_state(sshd_server) == remote


def test_remote_disk_full(laptop, sshd_server, tmp_path):
    small = sshd_server.home / "small-disk"
    small.mkdir(exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mount.stderr.decode().strip()})")
    try:
        shutil.chown(small, sshd_server.user, sshd_server.user)
        env = hosts_with(tmp_path, sshd_server, workdir="small-disk/cluster-train")
        before = local_runs(laptop)
        proc = run(laptop, "submit", "jobs/smoke.yaml", "--host", HOST, env=env)
        assert_one_line(proc, f"{HOST}: remote disk full", "free space")
        assert local_runs(laptop) == before
        assert not [p for p in (small / "cluster-train" / "snapshots").iterdir()]
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def test_sshd_killed_in_the_middle_of_a_submit_leaves_nothing(laptop, sshd_server, tmp_path):
    """The login node's sshd dies while the snapshot is on its way (an rsync wrapper kills it
    just before the copy starts): one line, no local record, no remote run or snapshot."""
    (laptop / "new-file.txt").write_text("a change, so that the snapshot is new and has to be sent\n")
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    real = shutil.which("rsync")
    (wrappers / "rsync").write_text(f"#!/bin/sh\npkill -KILL -P {sshd_server.proc.pid}; kill -KILL "
                                    f"{sshd_server.proc.pid}\nexec {real} \"$@\"\n")
    (wrappers / "rsync").chmod(0o755)
    before, remote = local_runs(laptop), snapshot_state(sshd_server)
    try:
        proc = run(laptop, "submit", "jobs/smoke.yaml", "--host", HOST,
                   env={"PATH": f"{wrappers}:{os.environ['PATH']}"})
        assert_one_line(proc, f"cannot reach {HOST}", "retry")
    finally:
        sshd_server.proc.wait(10)
        sshd_server.start()
        (laptop / "new-file.txt").unlink()
    assert local_runs(laptop) == before
    runs, snaps = snapshot_state(sshd_server)
    assert runs == remote[0]
    assert {s for s in snaps if not s.startswith(".incoming-")} == {s for s in remote[1]}


def test_bad_spec_is_refused_before_connecting(laptop, sshd_server, tmp_path):
    before = sshd_server.authentications()
    proc = run(laptop, "submit", "jobs/smoke.yaml", "--host", HOST, "--set", "resources.mem=lots")
    assert proc.returncode == 2 and "resources.mem" in proc.stderr, proc.stderr
    assert sshd_server.authentications() == before


def test_without_rsync_the_snapshot_goes_as_one_tar_stream(laptop, sshd_server, tmp_path):
    """No rsync on the laptop's PATH: tar over the same connection; the snapshot arrives whole
    (re-hashed by the helper) and read-only."""
    from cluster.remote import helper

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ssh", "git"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (laptop / "tar-only.txt").write_text("sent by tar\n")
    env = {**hosts_with(tmp_path, sshd_server, venv="no-such-venv"), "PATH": str(bin_dir)}
    try:
        proc = run(laptop, "submit", "jobs/smoke.yaml", "--host", HOST, env=env)
    finally:
        (laptop / "tar-only.txt").unlink()
    assert_one_line(proc, HOST, "a command is missing there")  # the venv is missing: the submit stops there
    line = next(l for l in proc.stdout.splitlines() if l.startswith("snapshot "))
    assert ", sent " in line, line
    snap = Path(line.rsplit(":", 1)[1].rstrip(")"))
    digest = json.loads((snap / helper.MANIFEST).read_text())["hash"]
    assert helper.problem(str(snap), digest) is None
    assert (snap / "tar-only.txt").read_text() == "sent by tar\n"
    assert not (snap / "tar-only.txt").stat().st_mode & 0o222
