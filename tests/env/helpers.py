"""Helpers for the venv tests: a submitit wheel for offline test venvs, repacked from the copy
installed in the test's own environment (this machine has no internet and its offline package
index has no submitit; torch comes from the on-disk wheel in /opt/wheels through pip's config),
and a small directory to point TMPDIR at."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import subprocess
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Iterator


def repack_wheel(dist_name: str, dest: Path) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` for an installed pure-Python distribution."""
    dist = metadata.distribution(dist_name)
    root = Path(dist.locate_file(""))
    files = [f for f in dist.files or [] if "__pycache__" not in f.parts and f.name not in ("RECORD", "INSTALLER")
             and not f.name.endswith(".pyc") and "direct_url" not in f.name and not str(f).startswith("..")]
    name = dist.metadata["Name"].replace("-", "_")
    wheel = dest / f"{name}-{dist.version}-py3-none-any.whl"
    record_name = f"{name}-{dist.version}.dist-info/RECORD"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in files:
            data = (root / item).read_bytes()
            archive.writestr(str(item), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{item},sha256={digest},{len(data)}")
        records.append(f"{record_name},,")
        archive.writestr(record_name, "\n".join(records) + "\n")
    return wheel


@contextlib.contextmanager
def small_dir(path: Path, megabytes: int = 8) -> Iterator[bool]:
    """``path`` as an empty directory, on a tmpfs of ``megabytes`` when this process may mount one
    (root; True), else a plain empty directory (False). A pip that unpacked torch there would fail."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], capture_output=True)
