"""Fixtures for the task tests: a task package outside the repository, importable here and in jobs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.tasks_support import EXTERNAL_TASK, REPO

@pytest.fixture(scope="session")
def external_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the repository holding the package `usertasks` (put it on PYTHONPATH)."""
    root = tmp_path_factory.mktemp("user-code")
    (root / "usertasks").mkdir()
    (root / "usertasks" / "__init__.py").write_text("")
    (root / "usertasks" / "regress.py").write_text(EXTERNAL_TASK)
    return root


@pytest.fixture
def importable(external_package: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The external package importable in this process and in subprocesses."""
    monkeypatch.syspath_prepend(str(external_package))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(external_package), str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return external_package


@pytest.fixture(autouse=True)
def one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
