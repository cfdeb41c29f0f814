"""The code a remote job runs, frozen at submit time and addressed by its content.

What goes in: the files ``git ls-files -co --exclude-standard`` lists in the project (outside
git: the directory minus ``runs/``, ``.venv``, ``__pycache__``), plus the spec and its
``extends`` files. Files that look like secrets (``.ssh/``, keys, ``.netrc``, ``.env``,
credentials) stay out, with a message, unless ``.cluster-include`` (one path per line, in the
project root) lists them. A tree over :data:`MAX_BYTES` is refused.

Where it goes: ``WORKDIR/snapshots/<id>/`` on the remote side, ``<id>`` the first 16 hex of the
content hash (:func:`cluster.remote.helper.tree_hash`). It is copied into a hidden incoming
directory, re-hashed there and renamed into place only when the hash matches, so a snapshot is
complete or absent; an unchanged tree is found and not sent again, and a later edit on the
laptop makes a new snapshot instead of changing the one a queued or requeued job runs. rsync
(over the same master connection) hard-links unchanged files from the newest snapshots
(``--link-dest``), so a one-file change sends one file; without rsync on either end, tar
streams the tree over ssh.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import posixpath
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cluster.errors import ClusterError
from cluster.remote import helper
from cluster.remote.ssh import RemoteError, Transport

MAX_BYTES = int(float(os.environ.get("CLUSTER_SNAPSHOT_MAX_MB", "200")) * 2**20)
"""The largest tree sent (data sets belong on the cluster's filesystem, not in the code)."""
INCLUDE_FILE = ".cluster-include"
EXCLUDED_DIRS = {".git", ".venv", "venv", "__pycache__", "runs", ".mypy_cache", ".pytest_cache"}
SECRET_PATTERNS = (".netrc", ".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa*", "id_ecdsa*",
                   "id_ed25519*", "id_dsa*", "credentials", "credentials.*", "*credentials*.json", ".pypirc",
                   ".git-credentials", "*.kdbx", ".htpasswd")
SECRET_DIRS = {".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker"}


@dataclass
class Snapshot:
    """A tree ready to send: its root, files, content hash and what git says of it."""

    root: Path
    files: list[str]
    hash: str
    size: int
    left_out: list[str] = field(default_factory=list)
    """Secret-looking files not sent (the user is told)."""
    git: dict[str, object] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.hash[:16]

    def manifest(self) -> bytes:
        return json.dumps({"hash": self.hash, "files": self.files, "git": self.git}, indent=1).encode()


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60)


def project_root(start: Path) -> Path:
    """The git work tree holding ``start``, else ``start`` itself."""
    try:
        proc = _git(start, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.TimeoutExpired):
        return start.resolve()
    return Path(proc.stdout.decode().strip()).resolve() if proc.returncode == 0 else start.resolve()


def _listed(root: Path) -> list[str]:
    """git's view of the tree, or a walk of it outside git."""
    try:
        proc = _git(root, "ls-files", "-co", "--exclude-standard", "-z")
    except (OSError, subprocess.TimeoutExpired):
        proc = None
    if proc is not None and proc.returncode == 0 and (root / ".git").exists():
        return [p for p in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if p]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        found += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
    return found


def looks_secret(rel: str) -> bool:
    parts = rel.split("/")
    return any(p in SECRET_DIRS for p in parts[:-1]) or any(fnmatch.fnmatch(parts[-1], p) for p in SECRET_PATTERNS)


def _extends_chain(spec: Path) -> list[Path]:
    """The spec and every file its ``extends`` chain names (read as the spec loader does)."""
    from cluster.pyyaml import yaml

    chain, current = [], spec
    while current.is_file() and current not in chain and len(chain) < 20:
        chain.append(current)
        try:
            doc = yaml.safe_load(current.read_text()) or {}
        except (OSError, yaml.YAMLError):
            break
        base = doc.get("extends") if isinstance(doc, dict) else None
        if not isinstance(base, str):
            break
        current = (current.parent / os.path.expanduser(base)).resolve()
    return chain


def build(spec: Path, root: Path) -> Snapshot:
    """List, filter and hash the tree under ``root`` that the spec's job needs."""
    include = set()
    if (root / INCLUDE_FILE).is_file():
        include = {l.strip() for l in (root / INCLUDE_FILE).read_text().splitlines() if l.strip()}
    files, left_out = set(), []
    for rel in _listed(root):
        if rel.split("/")[0] in EXCLUDED_DIRS or "__pycache__" in rel.split("/"):
            continue
        path = root / rel
        if path.is_symlink() or not path.is_file():
            continue  # a deleted tracked file, a link (its target may be outside)
        if looks_secret(rel) and rel not in include:
            left_out.append(rel)
            continue
        files.add(rel)
    for part in _extends_chain(spec.resolve()):
        try:
            files.add(part.relative_to(root).as_posix())
        except ValueError:
            raise ClusterError(f"{part}: outside the project {root}, so the remote job would not see it; "
                               "keep the spec and its extends files in the project") from None
    ordered = sorted(files)
    size = sum((root / f).stat().st_size for f in ordered)
    if size > MAX_BYTES:
        biggest = sorted(ordered, key=lambda f: (root / f).stat().st_size, reverse=True)[:3]
        raise ClusterError(f"the code snapshot of {root} is {size / 2**20:.0f} MiB, over the "
                           f"{MAX_BYTES / 2**20:.0f} MiB cap (largest: {', '.join(biggest)}); keep data out of "
                           "the project (or .gitignore it), or raise CLUSTER_SNAPSHOT_MAX_MB")
    return Snapshot(root=root, files=ordered, hash=helper.tree_hash(str(root), ordered), size=size,
                    left_out=sorted(left_out), git=git_state(root))


def git_state(root: Path) -> dict[str, object]:
    """The commit and whether the tree differs from it (recorded with the run)."""
    try:
        head = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if head.returncode != 0:
        return {}
    return {"commit": head.stdout.decode().strip(), "dirty": bool(status.stdout.strip())}


# ---------------------------------------------------------------- sending


def helper_words(host_python: str, *args: str) -> list[str]:
    """``python3 -c <helper source> ARGS``: the helper needs nothing installed."""
    return [host_python, "-c", Path(helper.__file__).read_text(), *args]


def _helper(transport: Transport, *args: str, doing: str) -> dict:
    proc = transport.run(helper_words(transport.host.python, *args), doing=doing)
    try:
        return json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteError(f"{doing} on {transport.host.name}: unexpected answer from {transport.host.python} "
                          f"({proc.stdout[-200:]!r})") from None


def send(snap: Snapshot, transport: Transport, echo: Callable[[str], None]) -> dict[str, object]:
    """Make sure snapshot ``snap`` is complete on the host; what was sent (files, bytes) and its path."""
    host = transport.host
    state = _helper(transport, "prepare", host.workdir, snap.id, doing="prepare the snapshot directory")
    final = f"{state['snapshots']}/{snap.id}"
    python = posixpath.join(state["home"], host.remote_python)  # commands that cd into the snapshot need it whole
    if state["exists"]:
        return {"path": final, "files_sent": 0, "bytes_sent": 0, "python": python}
    if state["free"] < snap.size * 2 + 2**20:
        raise RemoteError(f"{host.name}: remote disk full ({state['free'] // 2**20} MiB free under {host.workdir}, "
                          f"the snapshot needs {snap.size // 2**20 + 1} MiB); free space there, then retry")
    incoming = f"{state['snapshots']}/.incoming-{snap.id}-{os.urandom(4).hex()}"
    try:
        if state["rsync"] and _have_rsync():
            sent = _rsync(snap, transport, incoming, [f"../{r}" for r in state["recent"]])
        else:
            sent = _tar(snap, transport, incoming)
        result = _helper(transport, "commit", host.workdir, incoming, snap.id, snap.hash, doing="check the snapshot")
    except BaseException:
        _cleanup(transport, incoming)
        raise
    if not result.get("ok"):
        raise RemoteError(f"{host.name}: snapshot {snap.id} arrived damaged ({result.get('why')}); retry")
    return {"path": result["path"], **sent, "python": python}


def _cleanup(transport: Transport, incoming: str) -> None:
    """Remove a half-sent copy; when the host is gone, the hidden ``.incoming-*`` is never used."""
    try:
        transport.run(helper_words(transport.host.python, "rmdir", incoming), doing="clean up", timeout=20)
    except ClusterError:
        pass


def _have_rsync() -> bool:
    import shutil

    return shutil.which("rsync") is not None


def _rsync(snap: Snapshot, transport: Transport, incoming: str, link_dests: list[str]) -> dict[str, int]:
    """rsync the listed files (and the manifest) into ``incoming``; files made read-only."""
    manifest_dir = Path(_private_tmp()) / "manifest"
    manifest_dir.mkdir()
    (manifest_dir / helper.MANIFEST).write_bytes(snap.manifest())
    base = ["rsync", "-rlt", "--chmod=Fa-w", "--protect-args", "--stats", "-e", transport.rsync_shell()]
    target = f"{transport.host.host}:{incoming}/"
    listing = "\n".join(snap.files).encode() + b"\n"
    # Unchanged files are hard-linked from the newest snapshots (read-only like these, so rsync links them).
    proc = subprocess.run([*base, *[f"--link-dest={d}" for d in link_dests], "--files-from=-", f"{snap.root}/",
                           target], input=listing, capture_output=True, timeout=3600)
    if proc.returncode == 0:  # the manifest last: the helper re-hashes what it lists
        proc2 = subprocess.run([*base, f"{manifest_dir}/{helper.MANIFEST}", target], capture_output=True, timeout=600)
        proc = proc2 if proc2.returncode != 0 else proc
    if proc.returncode != 0:
        raise _copy_failure(transport, proc.returncode, proc.stderr.decode(errors="replace"))
    return _stats(proc.stdout.decode(errors="replace"))


def _stats(text: str) -> dict[str, int]:
    """Files and bytes rsync actually transferred (its --stats lines)."""
    numbers = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Number of regular files transferred", "Total bytes sent"):
            numbers[key.strip()] = int(value.split()[0].replace(",", ""))
    return {"files_sent": numbers.get("Number of regular files transferred", 0),
            "bytes_sent": numbers.get("Total bytes sent", 0)}


def _copy_failure(transport: Transport, returncode: int, stderr: str) -> RemoteError:
    from cluster.remote.ssh import classify

    if returncode in (12, 255) and "No space left" not in stderr:  # rsync: protocol stream / ssh failed
        return classify(transport.host, 255, stderr or "Connection closed", "copy the snapshot")
    return classify(transport.host, returncode, stderr, "copy the snapshot")


def _tar(snap: Snapshot, transport: Transport, incoming: str) -> dict[str, int]:
    """The fallback without rsync: one tar stream over the same connection."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel in snap.files:
            tar.add(str(snap.root / rel), arcname=rel, recursive=False)
        info = tarfile.TarInfo(helper.MANIFEST)
        data = snap.manifest()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    payload = buffer.getvalue()
    line = f"mkdir -m 700 {_q(incoming)} && tar -xzf - -C {_q(incoming)} && chmod -R a-w {_q(incoming)}/*"
    proc = transport.run_line(line, input=payload, doing="copy the snapshot (tar)")
    if proc.returncode != 0:
        raise _copy_failure(transport, proc.returncode, proc.stderr.decode(errors="replace"))
    return {"files_sent": len(snap.files), "bytes_sent": len(payload)}


def _q(word: str) -> str:
    import shlex

    return shlex.quote(word)


def _private_tmp() -> str:
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="cluster-snapshot-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
