"""A submitit wheel for offline test venvs, repacked from the copy installed in the test's own
environment: this machine has no internet and its offline package index has no submitit
(torch comes from the on-disk wheel in /opt/wheels through pip's config)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from importlib import metadata
from pathlib import Path


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
