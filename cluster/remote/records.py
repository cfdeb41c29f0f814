"""The laptop's record of a remote run: ``runs/<run id>/remote.json``.

It says where the run lives (the host profile, the remote run directory) and what it runs (the
snapshot's id and hash, the git commit and whether the tree was dirty). It is a different file
from a local run's ``run.json`` on purpose: the local commands (``status``, ``collect``, ...)
never mistake a remote run for one of theirs, and :mod:`cluster.remote.commands` finds the
remote ones by this name. Written once, atomically, after the remote submit succeeded: a failed
submit leaves no record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.errors import ClusterError
from cluster.remote.hosts import Host, from_settings
from train.contract import write_atomic

RECORD = "remote.json"


@dataclass(frozen=True)
class RemoteRun:
    """A remote run as the laptop knows it."""

    path: Path
    """The local directory holding ``remote.json`` (``runs/<run id>``)."""
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["run_id"])

    @property
    def remote_dir(self) -> str:
        return str(self.data["remote_run_dir"])

    @property
    def host(self) -> Host:
        settings = dict(self.data["host"])
        return from_settings(str(settings.pop("name")), settings, str(self.path / RECORD))


def write(runs_dir: Path, run_id: str, data: dict[str, Any]) -> RemoteRun:
    """Create ``runs_dir/<run_id>/remote.json`` (the directory must not hold a run yet)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", run_id):  # it names a local directory
        raise ClusterError(f"the remote side named its run {run_id!r}, which is not a run id; nothing recorded")
    path = Path(runs_dir) / run_id
    if (path / RECORD).exists() or (path / "run.json").exists():
        raise ClusterError(f"{path}: already holds a run; cannot record remote run {run_id} there")
    path.mkdir(parents=True, exist_ok=True)
    write_atomic(path / RECORD, json.dumps({"run_id": run_id, **data}, indent=2) + "\n")
    return RemoteRun(path.resolve(), read(path).data)


def read(path: Path) -> RemoteRun:
    try:
        data = json.loads((Path(path) / RECORD).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("host"), dict) or "remote_run_dir" not in data:
            raise ValueError("not a remote run record")
    except (OSError, ValueError) as err:
        raise ClusterError(f"{Path(path) / RECORD}: unreadable ({err})") from None
    return RemoteRun(Path(path).resolve(), data)


def find(ref: str, runs_dir: str | Path = "runs") -> RemoteRun | None:
    """The remote run a command-line reference names (a directory or a run id), else None."""
    for candidate in (Path(ref), Path(runs_dir) / ref):
        if (candidate / RECORD).is_file():
            return read(candidate)
    return None


def discover(runs_dir: str | Path = "runs") -> list[RemoteRun]:
    """Every remote run recorded under ``runs_dir``, oldest first."""
    return [read(p.parent) for p in sorted(Path(runs_dir).glob(f"*/{RECORD}"))]
