"""A real OpenSSH server on loopback for the remote tests (tests/remote).

It runs with its own host key and config on a free port, lets one test user in by public key,
and logs at ``VERBOSE`` so that authentications can be counted ("Accepted publickey"). The
client side gets an ssh config file (``ssh -F``) with a ``Host`` entry and a known_hosts file
that holds the server's key: host keys are checked, as on a user's machine.

The test user's home plays the cluster's login node. Steps as in ../shared/FACTS.md ("SSH on
loopback"): ``/run/sshd`` must exist, ``UsePAM no`` and ``usermod -p '*'`` (a locked account is
refused).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support.ports import free_port

REPO = Path(__file__).resolve().parents[2]

SSHD = "/usr/sbin/sshd"
HOST_ALIAS = "ct-test"


def missing_tools() -> list[str]:
    """What must be installed for a real sshd test (empty when all is there)."""
    return [t for t in (SSHD, "ssh", "ssh-keygen", "rsync") if not shutil.which(t)]


def ensure_user(name: str) -> Path:
    """A local account that logs in by key only; its home (created if missing)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    return Path(pwd.getpwnam(name).pw_dir)


def as_user(name: str, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command as the test user (its home as cwd), text output captured."""
    entry = pwd.getpwnam(name)
    return subprocess.run(["runuser", "-u", name, "--", *cmd], capture_output=True, text=True,
                          cwd=entry.pw_dir, timeout=timeout)


@dataclass
class Sshd:
    """A running test sshd and the client files that reach it."""

    directory: Path
    user: str
    home: Path
    port: int
    config: Path
    """The client's ssh config (``ssh -F``), with ``Host ct-test``."""
    log: Path
    known_hosts: Path
    proc: subprocess.Popen | None = None

    @property
    def alias(self) -> str:
        return HOST_ALIAS

    def authentications(self) -> int:
        """How many logins the server accepted so far (from its own log)."""
        return self.log.read_text(errors="replace").count(f"Accepted publickey for {self.user}")

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.directory / "sshd_config"),
                                      "-E", str(self.log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on port {self.port}; its log: {self.log.read_text()[-500:]}")

    def stop(self) -> None:
        """Stop the listener and every session it started (as a crash of the login node would):
        the sessions are its descendants, found by parent pid before it goes."""
        if not self.proc or self.proc.poll() is not None:
            return
        victims = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def setup(directory: Path, user: str) -> Sshd:
    """Keys, configs and known_hosts for a server on a free port (not started)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    home = ensure_user(user)
    port = free_port()
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text((directory / "client_ed25519.pub").read_text())
    shutil.chown(ssh_dir, user, user)
    shutil.chown(ssh_dir / "authorized_keys", user, user)
    (ssh_dir / "authorized_keys").chmod(0o600)
    log = directory / "sshd.log"
    log.write_text("")
    (directory / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {directory}/sshd.pid",
        "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        f"AllowUsers {user}", "LogLevel VERBOSE", "StrictModes yes", "MaxStartups 50:30:100",
        "MaxSessions 50", "Subsystem sftp internal-sftp", "",
    ]))
    known_hosts = directory / "known_hosts"
    public = (directory / "host_ed25519.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    config = directory / "ssh_config"
    config.write_text("\n".join([
        f"Host {HOST_ALIAS}", "  HostName 127.0.0.1", f"  Port {port}", f"  User {user}",
        f"  IdentityFile {client_key}", "  IdentitiesOnly yes", f"  UserKnownHostsFile {known_hosts}",
        "  StrictHostKeyChecking yes", "  GlobalKnownHostsFile /dev/null", "",
    ]))
    return Sshd(directory=directory, user=user, home=home, port=port, config=config, log=log,
                known_hosts=known_hosts)


def close_master(server) -> None:
    """End our master connection (the next command authenticates again)."""
    control = Path(os.environ.get("CLUSTER_SSH_CONTROL_DIR", "/nonexistent"))
    for socket_path in control.glob("*"):
        subprocess.run(["ssh", "-F", str(server.config), "-o", f"ControlPath={socket_path}", "-O", "exit", HOST_ALIAS],
                       capture_output=True, timeout=30)


def make_project(where: Path) -> Path:
    """A copy of this project as a user's git checkout on the laptop (files only, one commit)."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        source = REPO / rel
        if source.is_file() and not rel.startswith(("runs/", ".venv/")):
            (where / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, where / rel)
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@example.org", "-c", "user.name=t", "commit",
                                                   "-q", "-m", "laptop"]):
        subprocess.run(["git", "-C", str(where), *cmd], check=True, capture_output=True)
    return where
