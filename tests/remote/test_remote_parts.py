"""The remote parts that need no server: quoting, host names, snapshots, the remote helper.

Real files and a real shell (``sh -c``) stand in for the remote side where that is what is
checked: a quoted line must reach a shell's command as the very words it was built from.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.errors import ClusterError
from cluster.remote import helper, hosts, snapshot
from cluster.remote.ssh import remote_command

HOSTILE = ["it's", "$(touch PWNED)", "`touch PWNED`", '"q"', "a b", "x;y&z|w", "new\nline", "$HOME", "*", "-rf", ""]


def test_remote_command_words_reach_the_shell_as_data(tmp_path):
    line = remote_command([sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *HOSTILE],
                          env={"NOTE": "$(touch PWNED) `x`"}, cwd=str(tmp_path))
    proc = subprocess.run(["sh", "-c", line], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == HOSTILE
    assert not list(tmp_path.glob("PWNED*"))


def test_remote_command_refuses_nul():
    with pytest.raises(ClusterError, match="NUL"):
        remote_command(["a\0b"])


@pytest.mark.parametrize("name", ["-oProxyCommand=x", "a b", "a\tb", "a\nb", "x;y", "$(id)", "`id`", "", "é-host",
                                  "-l@host", "me@-host"])
def test_hostile_host_and_user_names_are_refused(name):
    with pytest.raises(ClusterError, match="not allowed"):
        hosts.resolve(name)


def test_plain_names_resolve(monkeypatch, tmp_path):
    monkeypatch.setenv("CLUSTER_HOSTS", str(tmp_path / "none.yaml"))
    h = hosts.resolve("me@login.example.org:2222")
    assert (h.host, h.user, h.port, h.workdir) == ("login.example.org", "me", 2222, "cluster-train")
    (tmp_path / "hosts.yaml").write_text("hpc: {host: login1, workdir: ~/ct, env: {SLURM_CONF: /etc/s.conf}}\n")
    monkeypatch.setenv("CLUSTER_HOSTS", str(tmp_path / "hosts.yaml"))
    h = hosts.resolve("hpc")
    assert (h.host, h.workdir, h.venv_dir, h.env) == ("login1", "ct", "ct/venv", {"SLURM_CONF": "/etc/s.conf"})
    (tmp_path / "hosts.yaml").write_text("hpc: {hots: login1}\n")
    with pytest.raises(ClusterError, match=r"hpc.hots: unknown key"):
        hosts.resolve("hpc")


def _project(tmp_path: Path, git: bool = True) -> Path:
    root = tmp_path / "proj"
    (root / "jobs" / "sites").mkdir(parents=True)
    (root / "jobs" / "sites" / "site.yaml").write_text("resources: {queue: cpu}\n")
    (root / "jobs" / "x.yaml").write_text("name: x\nextends: sites/site.yaml\n")
    (root / "code.py").write_text("print(1)\n")
    (root / ".env").write_text("TOKEN=secret\n")
    (root / ".ssh").mkdir()
    (root / ".ssh" / "id_ed25519").write_text("key\n")
    (root / "server.pem").write_text("cert\n")
    (root / "runs" / "r1").mkdir(parents=True)
    (root / "runs" / "r1" / "run.json").write_text("{}")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "code.pyc").write_bytes(b"\0")
    if git:
        (root / ".gitignore").write_text("ignored.txt\njobs/sites/\n")
        (root / "ignored.txt").write_text("not sent\n")
        subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


@pytest.mark.parametrize("git", [True, False])
def test_snapshot_lists_the_project_without_secrets_runs_or_caches(tmp_path, git):
    root = _project(tmp_path, git)
    snap = snapshot.build(root / "jobs" / "x.yaml", root)
    assert "code.py" in snap.files and "jobs/x.yaml" in snap.files
    assert "jobs/sites/site.yaml" in snap.files  # an extends file is sent even when git ignores it
    assert set(snap.left_out) == {".env", ".ssh/id_ed25519", "server.pem"}
    assert not [f for f in snap.files if f.startswith(("runs/", "__pycache__/")) or f == "ignored.txt"]
    (root / ".cluster-include").write_text("server.pem\n")
    assert "server.pem" in snapshot.build(root / "jobs" / "x.yaml", root).files


def test_snapshot_hash_follows_content_and_the_executable_bit(tmp_path):
    root = _project(tmp_path)
    first = snapshot.build(root / "jobs" / "x.yaml", root).hash
    assert snapshot.build(root / "jobs" / "x.yaml", root).hash == first
    (root / "code.py").chmod(0o755)
    second = snapshot.build(root / "jobs" / "x.yaml", root).hash
    (root / "code.py").write_text("print(2)\n")
    assert len({first, second, snapshot.build(root / "jobs" / "x.yaml", root).hash}) == 3


def test_snapshot_refuses_a_spec_outside_the_project_and_a_tree_over_the_cap(tmp_path, monkeypatch):
    root = _project(tmp_path)
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("name: y\n")
    with pytest.raises(ClusterError, match="outside the project"):
        snapshot.build(outside, root)
    monkeypatch.setattr(snapshot, "MAX_BYTES", 10)
    with pytest.raises(ClusterError, match="over the 0 MiB cap"):
        snapshot.build(root / "jobs" / "x.yaml", root)


def test_helper_commits_only_a_complete_copy(tmp_path):
    """The remote helper, run as on the login node (``python3 -c SOURCE``): a damaged incoming copy
    is removed, a complete one renamed into place, and a later change is seen by verify."""
    root = _project(tmp_path)
    snap = snapshot.build(root / "jobs" / "x.yaml", root)
    work = tmp_path / "work"

    def run(*args: str) -> tuple[int, dict]:
        proc = subprocess.run(snapshot.helper_words(sys.executable, *args), capture_output=True, text=True)
        return proc.returncode, json.loads(proc.stdout)

    code, state = run("prepare", str(work), snap.id)
    assert code == 0 and not state["exists"] and oct((work).stat().st_mode & 0o777) == "0o700"
    for damaged in (True, False):
        incoming = work / "snapshots" / f".incoming-{int(damaged)}"
        incoming.mkdir()
        for rel in snap.files:
            (incoming / rel).parent.mkdir(parents=True, exist_ok=True)
            (incoming / rel).write_bytes((root / rel).read_bytes() + (b"x" if damaged else b""))
        (incoming / helper.MANIFEST).write_bytes(snap.manifest())
        code, result = run("commit", str(work), str(incoming), snap.id, snap.hash)
        assert (code == 0) is (not damaged) and not incoming.exists(), result
    assert run("prepare", str(work), snap.id)[1]["exists"]
    final = work / "snapshots" / snap.id
    assert helper.problem(str(final), snap.hash) is None
    (final / "code.py").write_text("changed\n")
    assert "changed after submit" in helper.problem(str(final), snap.hash)
