from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory to submit from; its runs/ holds the run directories."""
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def _reference_scratch(monkeypatch_session=None):
    scratch = Path(tempfile.mkdtemp(prefix="cluster-train-ref-"))
    import os

    os.environ["CLUSTER_TEST_SCRATCH"] = str(scratch)
    yield
    shutil.rmtree(scratch, ignore_errors=True)
