from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory to submit from; its runs/ holds the run directories."""
    return tmp_path
