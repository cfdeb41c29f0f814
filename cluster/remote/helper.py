"""The small remote helper: runs on the login node as ``python3 -c <this file> OP ARGS...``.

Standard library only and self-contained, because it runs before the remote venv exists
(``cluster env --host`` needs a snapshot to install from) and with whatever ``python3`` the
site has. The laptop imports the same file for :func:`tree_hash`, so both ends hash alike.

Operations (each prints one JSON object on stdout):

- ``prepare WORKDIR ID``: create ``WORKDIR`` (0700) and ``WORKDIR/snapshots``; say whether
  snapshot ``ID`` is already complete there, its absolute path, the newest complete snapshots
  (for rsync's ``--link-dest``), whether rsync is installed and the free space.
- ``commit WORKDIR INCOMING ID HASH``: re-hash the files of the incoming copy, listed by its
  manifest; when the hash is ``HASH``, rename it to ``snapshots/ID`` (atomic: a snapshot is
  complete or absent); else remove it and fail.
- ``verify DIR HASH``: re-hash a snapshot (where a job starts); fail when it changed.
- ``rmdir PATH``: remove a half-made directory (an incoming copy, a failed run's directory).
"""

import hashlib
import json
import os
import shutil
import stat
import sys

MANIFEST = ".cluster-snapshot.json"


def file_digest(path):
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_hash(root, files):
    """The snapshot's content hash: every listed file's path, executable bit and bytes."""
    outer = hashlib.sha256()
    for rel in sorted(files):
        path = os.path.join(root, rel)
        executable = "x" if os.stat(path).st_mode & stat.S_IXUSR else "-"
        outer.update(f"{rel}\0{executable}\0{file_digest(path)}\n".encode("utf-8", "surrogateescape"))
    return outer.hexdigest()


def _manifest_hash(directory):
    with open(os.path.join(directory, MANIFEST)) as handle:
        manifest = json.load(handle)
    return manifest["hash"], tree_hash(directory, manifest["files"])


def problem(directory, expected):
    """Why the snapshot in ``directory`` is not the one with hash ``expected`` (None: it is)."""
    try:
        recorded, actual = _manifest_hash(directory)
    except (OSError, ValueError, KeyError) as err:
        return f"cannot read it ({err})"
    if actual != expected or recorded != expected:
        return f"its content hash is {actual[:16]}, not {expected[:16]} (a file of it changed after submit)"
    return None


def _prepare(workdir, snapshot_id):
    snapshots = os.path.join(workdir, "snapshots")
    os.makedirs(snapshots, mode=0o700, exist_ok=True)
    os.chmod(workdir, 0o700)
    complete = sorted((e for e in os.scandir(snapshots) if not e.name.startswith(".")
                       and os.path.isfile(os.path.join(e.path, MANIFEST))),
                      key=lambda e: e.stat().st_mtime, reverse=True)
    usage = shutil.disk_usage(snapshots)
    return {"exists": any(e.name == snapshot_id for e in complete), "snapshots": os.path.abspath(snapshots),
            "home": os.getcwd(),
            "recent": [e.name for e in complete[:3]], "rsync": shutil.which("rsync") is not None,
            "free": usage.free}


def _commit(workdir, incoming, snapshot_id, expected):
    final = os.path.join(workdir, "snapshots", snapshot_id)
    try:
        recorded, actual = _manifest_hash(incoming)
    except (OSError, ValueError, KeyError) as err:
        shutil.rmtree(incoming, ignore_errors=True)
        return {"ok": False, "why": f"incomplete copy ({err})"}
    if actual != expected or recorded != expected:
        shutil.rmtree(incoming, ignore_errors=True)
        return {"ok": False, "why": f"content hash {actual[:16]} is not the one sent ({expected[:16]})"}
    try:
        os.rename(incoming, final)
    except OSError:  # another submit of the same tree got there first: the same content
        shutil.rmtree(incoming, ignore_errors=True)
    os.utime(final)
    return {"ok": True, "path": os.path.abspath(final)}


def main(argv):
    op, args = argv[0], argv[1:]
    if op == "prepare":
        result = _prepare(*args)
    elif op == "commit":
        result = _commit(*args)
    elif op == "verify":
        recorded, actual = _manifest_hash(args[0])
        result = {"ok": actual == args[1] == recorded, "hash": actual}
    elif op == "rmdir":
        shutil.rmtree(args[0], ignore_errors=True)
        result = {"ok": not os.path.exists(args[0])}
    else:
        raise SystemExit(f"unknown operation {op}")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result.get("ok", True) else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
