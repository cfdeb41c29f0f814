"""The test suite's own machinery, which .ci/run relies on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_xdist_groups_keep_their_tests_on_one_worker(tmp_path: Path) -> None:
    # .ci/run relies on it (the remote tests' one sshd, the module fixtures of a group):
    # pytest 9.2 silently broke it for pytest-xdist 3.8 (pytest-dev/pytest-xdist#1386).
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(
            "import os, pytest\n"
            "pytestmark = pytest.mark.xdist_group('one')\n"
            "@pytest.mark.parametrize('i', range(6))\n"
            f"def test_{name}(i):\n"
            "    open(os.environ['WORKERS_LOG'], 'a').write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n")
    (tmp_path / "test_c.py").write_text("import pytest\n@pytest.mark.parametrize('i', range(12))\ndef test_c(i):\n    pass\n")
    log = tmp_path / "workers.log"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "3", "--dist",
                           "loadgroup", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WORKERS_LOG": str(log)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers = log.read_text().split()
    assert len(workers) == 12 and len(set(workers)) == 1, f"one group ran on {sorted(set(workers))}"
