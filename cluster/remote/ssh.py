"""The OpenSSH transport: every remote command goes through one multiplexed connection.

The system ``ssh`` runs through ``subprocess``: it honours ``~/.ssh/config``, agents,
``ProxyJump`` and host-key checking as the user configured them (nothing here turns checking
off). ``BatchMode=yes`` means nothing ever waits on a prompt: a host that needs a password or a
second factor that no master connection has answered fails at once, with a line saying so.

One authentication per session: the first command opens a master connection
(``ControlMaster``, ``ControlPersist``), whose socket lives in a private 0700 directory; every
later ``ssh`` and ``rsync`` rides on it. A master the user opened themselves (their config's
``ControlPath``, which ``ssh -O check`` finds alive) is used instead of ours, so a site whose
two-factor login the user passed once is not asked again.

Remote command lines are built from argv: every word goes through :func:`shlex.quote`, so spec
names, paths and ``--set`` values with spaces, quotes, ``$``, backticks or newlines reach the
remote side as data.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from cluster.errors import ClusterError
from cluster.remote.hosts import Host

CONTROL_DIR_ENV = "CLUSTER_SSH_CONTROL_DIR"
CONTROL_PERSIST = "10m"
"""How long our master connection outlives its last command."""
CONNECT_TIMEOUT = 10
NO_REMOTE_COMMAND = 127
"""The remote shell's status for a command it did not find."""


class RemoteError(ClusterError):
    """A remote command failed: one line naming the host and what to do."""


def control_dir() -> Path:
    """The private directory of our control sockets (created 0700; refused if others can enter it)."""
    path = Path(os.environ.get(CONTROL_DIR_ENV) or Path.home() / ".cache" / "cluster-train" / "ssh")
    if len(str(path)) > 80:  # a socket path has at most 107 bytes, and ssh adds a name and a temporary suffix
        raise ClusterError(f"{path}: too long for ssh's control sockets; set {CONTROL_DIR_ENV} to a shorter "
                           "directory (e.g. /tmp/cluster-ssh-$USER)")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise ClusterError(f"{path}: control-socket directory must be yours and mode 0700 "
                           f"(chmod 700 {path}), since a socket there opens your connections")
    return path


def remote_command(words: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """One remote shell line: ``cd CWD && env K=V ... WORD...``, each part quoted."""
    for word in words:
        if "\0" in word:
            raise ClusterError(f"cannot pass {word[:40]!r} to the remote side (it holds a NUL byte)")
    line = shlex.join(["env", *[f"{k}={v}" for k, v in (env or {}).items()], *words]) if env else shlex.join(words)
    return f"cd {shlex.quote(cwd)} && {line}" if cwd else line


def classify(host: Host, returncode: int, stderr: str, doing: str) -> RemoteError:
    """What went wrong, as one line naming the host and what to do."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else f"exit {returncode}"
    name = host.name
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
        why = (f"host key of {name} is not the one known_hosts holds (changed or unknown); if the site announced a "
               f"new key, check its fingerprint and update known_hosts (ssh-keygen -R), then retry")
    elif "Permission denied" in text or "Too many authentication failures" in text:
        why = (f"{name} refused authentication (BatchMode: no password or 2FA prompt is answered); load your key "
               f"into ssh-agent or open a master connection first (ssh -M {host.host}), then retry")
    elif any(s in text for s in ("Connection refused", "Could not resolve", "timed out", "No route to host",
                                 "Network is unreachable", "Connection closed", "Connection reset",
                                 "closed by remote host", "Broken pipe", "kex_exchange_identification")):
        why = f"cannot reach {name} ({last}); check the host name and your network or VPN, then retry"
    elif returncode == 255:  # ssh itself failed, with words not listed above: the connection went
        why = f"cannot reach {name}, or the connection was lost ({last}); check the host and your network, then retry"
    elif returncode == NO_REMOTE_COMMAND:
        why = (f"{name}: a command is missing there ({last}); check the host's python setting, or set up "
               f"the remote side with: cluster env SPEC --host {name}")
    elif "No space left on device" in text or "Disk quota exceeded" in text:
        why = f"{name}: remote disk full ({last}); free space under {host.workdir} on {name}, then retry"
    else:
        why = f"{doing} on {name} failed ({last})"
    return RemoteError(why)


class Transport:
    """ssh and rsync to one host, over one master connection."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._user_master: bool | None = None

    # ---------------------------------------------------------------- argv

    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=3"]
        if self.host.ssh_config:
            opts = ["-F", self.host.ssh_config, *opts]
        if self.host.user:
            opts += ["-l", self.host.user]
        if self.host.port:
            opts += ["-p", str(self.host.port)]
        if self.host.identity_file:
            opts += ["-i", self.host.identity_file, "-o", "IdentitiesOnly=yes"]
        return opts

    def _mux(self) -> list[str]:
        if self._uses_user_master():
            return []  # the user's own ControlPath, as their config says
        return ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path()}",
                "-o", f"ControlPersist={CONTROL_PERSIST}"]

    def control_path(self) -> Path:
        """Our socket for this host: named by a hash of everything that decides where ssh goes."""
        import hashlib

        h = self.host
        key = "\0".join(str(v) for v in (h.host, h.user, h.port, h.identity_file, h.ssh_config))
        return control_dir() / hashlib.sha256(key.encode()).hexdigest()[:12]

    def _uses_user_master(self) -> bool:
        """Whether a master the user opened answers (``ssh -O check`` with their config alone).

        Asked once per process, and only while we have no socket of our own: in the steady
        state a command is exactly one ``ssh`` call."""
        if self._user_master is None:
            if self.control_path().exists():
                self._user_master = False
            else:
                proc = subprocess.run(["ssh", *self._options(), "-O", "check", "--", self.host.host],
                                      capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
                self._user_master = proc.returncode == 0
        return self._user_master

    def ssh_argv(self, line: str, tty: bool = False) -> list[str]:
        """``ssh OPTIONS -- HOST LINE``: LINE is one already-quoted remote shell line."""
        return ["ssh", *self._options(), *self._mux(), "-T" if not tty else "-t", "--", self.host.host, line]

    def rsync_shell(self) -> str:
        """rsync's ``-e``: the same ssh, the same master (rsync splits it on spaces, so each
        word is quoted for its own small parser)."""
        return shlex.join(["ssh", *self._options(), *self._mux(), "-T"])

    # ---------------------------------------------------------------- running

    def run(self, words: Sequence[str], *, doing: str, cwd: str | None = None, input: bytes | None = None,
            timeout: float = 3600, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run one remote command (argv words); its CompletedProcess (bytes). A failure of ssh
        itself (status 255) or of the command is a :class:`RemoteError` naming the host."""
        line = remote_command(words, {**self.host.env, **(env or {})}, cwd)
        proc = self.run_line(line, input=input, timeout=timeout, doing=doing)
        if proc.returncode != 0:
            raise classify(self.host, proc.returncode, proc.stderr.decode(errors="replace"), doing)
        return proc

    def run_line(self, line: str, *, doing: str, input: bytes | None = None,
                 timeout: float = 3600) -> subprocess.CompletedProcess:
        """Run one quoted remote line; the CompletedProcess whatever its status (ssh's own
        failures, status 255, are raised)."""
        try:
            proc = subprocess.run(self.ssh_argv(line), input=input, capture_output=True, timeout=timeout,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{doing} on {self.host.name}: no answer in {timeout:.0f} s; check the host, "
                              "then retry") from None
        except FileNotFoundError:
            raise RemoteError("no ssh command here: install the OpenSSH client (apt-get install openssh-client)") \
                from None
        if proc.returncode == 255:
            raise classify(self.host, 255, proc.stderr.decode(errors="replace"), doing)
        return proc

    def popen(self, words: Sequence[str], cwd: str | None = None,
              env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """A streaming remote command (stdout a pipe of bytes, stderr captured)."""
        return self.popen_line(remote_command(words, {**self.host.env, **(env or {})}, cwd))

    def popen_line(self, line: str) -> subprocess.Popen:
        """A streaming remote shell line (already quoted)."""
        try:
            return subprocess.Popen(self.ssh_argv(line), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise RemoteError("no ssh command here: install the OpenSSH client (apt-get install openssh-client)") \
                from None
