"""Fixtures for the trainer's tests: small configs that train in a fraction of a second."""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from train.contract.config import CheckpointConfig, DataConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]


def small_config(**changes: Any) -> TrainConfig:
    """400 samples (320 for training: 10 steps per epoch), 3 epochs, on the CPU."""
    data = changes.pop("data", DataConfig(samples=400, vector_features=8))
    ckpt = changes.pop("checkpoint", CheckpointConfig(every_minutes=0))
    return TrainConfig(epochs=changes.pop("epochs", 3), device="cpu", data=data, checkpoint=ckpt, **changes)


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch: pytest.MonkeyPatch):
    """Train on one thread, here and in `python -m train` subprocesses.

    The trainer uses as many threads as the process has CPUs; on a machine shared with
    other busy processes, two OpenMP threads on two cores wait for each other and a test
    runs many times slower. Exactness is compared at equal thread counts either way.
    """
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # configure_threads() then leaves it alone
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def config_factory() -> Callable[..., TrainConfig]:
    return small_config


@pytest.fixture
def run_trainer() -> Callable[..., Any]:
    """run_trainer(config, run_dir, **trainer_kwargs) -> RunResult, progress output discarded."""
    from train.trainer import Trainer

    def run(config: TrainConfig, run_dir: Path, **kwargs: Any):
        kwargs.setdefault("stream", io.StringIO())
        return Trainer(config, run_dir, **kwargs).run()

    return run


@pytest.fixture(scope="session")
def reference_sha(tmp_path_factory: pytest.TempPathFactory) -> Callable[[TrainConfig], str]:
    """weights_sha256 of an uninterrupted run of a config (computed once per config)."""
    from train.trainer import Trainer

    cache: dict[TrainConfig, str] = {}

    def sha(config: TrainConfig) -> str:
        if config not in cache:
            run_dir = tmp_path_factory.mktemp("reference")
            result = Trainer(config, run_dir, stream=io.StringIO()).run()
            cache[config] = result.summary["weights_sha256"]
        return cache[config]

    return sha


def python_env() -> dict[str, str]:
    """Environment for `python -m train` subprocesses run from the repository root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CLUSTER_DEADLINE", None)
    return env


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    return python_env()


@pytest.fixture
def python() -> str:
    return sys.executable

