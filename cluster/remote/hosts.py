"""Host profiles: where a remote command goes and what it runs there.

``--host NAME`` looks NAME up in the hosts file (``$CLUSTER_HOSTS``, default
``~/.config/cluster-train/hosts.yaml``)::

    hpc:                              # the name given to --host
      host: login.hpc.example.org     # default: NAME itself (so a ~/.ssh/config Host works)
      user: me                        # default: what ssh's own config says
      port: 22
      identity_file: ~/.ssh/id_ed25519
      ssh_config: ~/.ssh/config       # ssh -F (default: ssh's own lookup)
      workdir: cluster-train          # remote base directory, relative to the remote home
      python: python3                 # the remote Python that `cluster env --host` makes the venv with
      venv: cluster-train/venv        # the remote venv that holds cluster (default WORKDIR/venv)
      env: {SLURM_CONF: /etc/slurm/slurm.conf}   # variables set for every remote command

A NAME that is not in the file is used as it is: ``[user@]host[:port]`` or a ``Host`` entry of
``~/.ssh/config``, with the defaults above. Every value that reaches an ssh command line is
checked here: a host or user that starts with ``-`` (ssh would read it as an option) or holds
whitespace or control characters is refused, not quoted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.errors import ClusterError

DEFAULT_WORKDIR = "cluster-train"
HOSTS_ENV = "CLUSTER_HOSTS"
_KEYS = ("host", "user", "port", "identity_file", "ssh_config", "workdir", "python", "venv", "env")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Host:
    """One remote login node, as every remote command reaches it."""

    name: str
    """What the user called it (``--host NAME``); recorded in each remote run's local record."""
    host: str
    """The ssh destination: a host name, an address or a ``Host`` entry of the ssh config."""
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    ssh_config: str | None = None
    workdir: str = DEFAULT_WORKDIR
    """Remote base directory: ``snapshots/``, ``runs/`` and the default ``venv/`` live in it."""
    python: str = "python3"
    venv: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def venv_dir(self) -> str:
        """The remote venv whose Python runs the remote ``cluster``."""
        return self.venv or f"{self.workdir}/venv"

    @property
    def remote_python(self) -> str:
        return f"{self.venv_dir}/bin/python"

    def __hash__(self) -> int:  # env is a dict: hash what to_dict says
        import json

        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """What a local run record keeps, so that later commands reach the same place."""
        return {k: getattr(self, k) for k in ("name", *_KEYS)}


_SAFE_WORD = re.compile(r"[A-Za-z0-9_.%:\[\]][A-Za-z0-9_.%:\[\]-]*\Z")
"""Host names, addresses and user names: no leading '-' (ssh would read an option), no spaces,
control characters or shell syntax (a ProxyCommand's %h/%r puts them into a shell line)."""


def check_word(value: str, what: str, where: str) -> str:
    """Refuse a host or user name that ssh could read as an option or a shell could run."""
    if not _SAFE_WORD.match(value or ""):
        shown = value.encode("unicode_escape").decode()[:60]
        raise ClusterError(f"{where}: {what} {shown!r} is not allowed (letters, digits and . _ - : % [ ] only, "
                           "not starting with '-')")
    return value


def _remote_path(value: Any, key: str, where: str) -> str:
    """A remote path as written, ``~/`` dropped (remote commands start in the home directory, and a
    quoted ``~`` would not expand there)."""
    if not isinstance(value, str) or not value.strip():
        raise ClusterError(f"{where}: {key}: must be a path (a string)")
    if "\n" in value or "\0" in value:
        raise ClusterError(f"{where}: {key}: must not hold a newline or NUL")
    if value == "~":
        return "."
    return value[2:] if value.startswith("~/") else value


def hosts_file() -> Path:
    return Path(os.environ.get(HOSTS_ENV) or Path.home() / ".config" / "cluster-train" / "hosts.yaml")


def _read_profiles(path: Path) -> dict[str, Any]:
    from cluster.pyyaml import yaml

    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ClusterError(f"{path}: unreadable hosts file ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ClusterError(f"{path}: must map host names to settings")
    return data


def from_settings(name: str, settings: dict[str, Any], where: str) -> Host:
    """A :class:`Host` from a profile (the hosts file's entry, or a run record's copy)."""
    unknown = sorted(set(settings) - set(_KEYS) - {"name"})
    if unknown:
        raise ClusterError(f"{where}: {name}.{unknown[0]}: unknown key (valid: {', '.join(_KEYS)})")
    host = check_word(str(settings.get("host") or name), "host", where)
    user = settings.get("user")
    port = settings.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
        raise ClusterError(f"{where}: {name}.port: must be a whole number from 1 to 65535 (got {port!r})")
    env = settings.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and _ENV_NAME.match(k) for k in env):
        raise ClusterError(f"{where}: {name}.env: must map variable names (letters, digits, _) to values")
    local = {k: str(Path(os.path.expanduser(str(settings[k])))) for k in ("identity_file", "ssh_config")
             if settings.get(k)}
    return Host(
        name=name, host=host, user=check_word(str(user), "user", where) if user else None, port=port,
        identity_file=local.get("identity_file"), ssh_config=local.get("ssh_config"),
        workdir=_remote_path(settings.get("workdir", DEFAULT_WORKDIR), f"{name}.workdir", where),
        python=_remote_path(settings.get("python", "python3"), f"{name}.python", where),
        venv=_remote_path(settings["venv"], f"{name}.venv", where) if settings.get("venv") else None,
        env={k: str(v) for k, v in env.items()},
    )


def resolve(name: str) -> Host:
    """The host ``--host NAME`` means: its profile, else NAME as ``[user@]host[:port]``."""
    where = f"--host {name}"
    path = hosts_file()
    profiles = _read_profiles(path)
    if name in profiles:
        settings = profiles[name] or {}
        if not isinstance(settings, dict):
            raise ClusterError(f"{path}: {name}: must be a mapping of settings")
        return from_settings(name, settings, str(path))
    user, _, rest = name.rpartition("@")
    host, _, port = rest.partition(":")
    settings: dict[str, Any] = {"host": host}
    if user:
        settings["user"] = user
    if port:
        if not port.isdigit():
            raise ClusterError(f"{where}: port {port!r} is not a number")
        settings["port"] = int(port)
    return from_settings(name, settings, where)
