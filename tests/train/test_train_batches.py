"""A Dataset task's training batches (`train.batches`): the same whichever process reads them.

A task's Dataset here adds random noise in `__getitem__` (augmentation drawn from torch's
generator), so a batch read with the wrong generator state would change the weights.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from train import runfiles
from train.contract import RunLocked
from train.contract.config import TrainConfig

AUGMENTED_TASK = textwrap.dedent('''
    """The signal task, with noise added as each item is read; its worker count from the environment."""
    import os

    from train.tasks.signal_cnn import SignalCNN, SignalDataset


    class NoisySignals(SignalDataset):
        def subset(self, index):
            return NoisySignals(self.signal[index], self.label[index])

        def __getitem__(self, i):
            import torch

            signal, label = super().__getitem__(i)
            return signal + 0.1 * torch.randn(signal.shape), label


    class AugmentedSignals(SignalCNN):
        @property
        def data_workers(self):
            return int(os.environ["TEST_DATA_WORKERS"])

        def data(self):
            train, val = super().data()
            return NoisySignals(train.signal, train.label), val
''')


@pytest.fixture
def augmented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrainConfig:
    (tmp_path / "augmented_task.py").write_text(AUGMENTED_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    return TrainConfig.from_dict({
        "task": "augmented_task:AugmentedSignals", "options": {"samples": 400, "length": 32, "channels": 4},
        "epochs": 3, "device": "cpu", "checkpoint": {"every_minutes": 0},
    })


def _train(run_trainer, config: TrainConfig, run_dir: Path, workers: int, monkeypatch, **kwargs):
    monkeypatch.setenv("TEST_DATA_WORKERS", str(workers))
    return run_trainer(config, run_dir, **kwargs)


def test_batches_read_by_workers_train_bitwise_as_read_in_process(augmented, run_trainer, tmp_path, monkeypatch):
    in_process = _train(run_trainer, augmented, tmp_path / "0", 0, monkeypatch).summary
    by_workers = _train(run_trainer, augmented, tmp_path / "2", 2, monkeypatch).summary
    assert by_workers["weights_sha256"] == in_process["weights_sha256"]
    assert by_workers["train_loss"] == in_process["train_loss"]


def test_a_run_stopped_with_workers_resumes_exactly_with_another_count(augmented, run_trainer, tmp_path, monkeypatch):
    expected = _train(run_trainer, augmented, tmp_path / "reference", 1, monkeypatch).summary
    run = tmp_path / "run"
    for stop_at, workers in ((4, 2), (17, 0)):  # inside epochs 1 and 2 (10 steps each)
        stopped = _train(run_trainer, augmented, run, workers, monkeypatch, stop_at_step=stop_at)
        assert stopped.status == "stopped"
    done = _train(run_trainer, augmented, run, 2, monkeypatch)
    assert done.summary["resumes"] == 2
    assert done.summary["weights_sha256"] == expected["weights_sha256"]


def test_a_forked_child_does_not_keep_the_run_locked(tmp_path: Path) -> None:
    # A DataLoader worker is such a child; if it outlived a killed trainer holding the
    # lock, the next attempt would be refused as a second trainer.
    ready, started = os.pipe()
    with runfiles.trainer_lock(tmp_path):
        child = os.fork()
        if child == 0:  # pragma: no cover - the child only waits to be killed
            os.write(started, b"x")  # after fork()'s at-fork handlers ran in this child
            time.sleep(60)
            os._exit(0)
        assert os.read(ready, 1) == b"x"
    try:
        with runfiles.trainer_lock(tmp_path):  # free, though the child is alive
            with pytest.raises(RunLocked):
                with runfiles.trainer_lock(tmp_path):
                    pass
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(started)


def test_data_workers_follow_the_spare_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from train import trainer

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(trainer, "_affinity_cpus", lambda: 16)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert trainer.data_workers(2, cpu) == 4  # what the torch threads leave
    assert trainer.data_workers(6, cpu) == 0
    assert trainer.data_workers(6, cuda) == 5  # the training process keeps one
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")
    assert trainer.data_workers(1, cuda) == trainer.MAX_DATA_WORKERS

    class SaysNone:
        data_workers = 0

    assert trainer.data_workers(1, cuda, task=SaysNone()) == 0
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    for name in ("NCPUS", "PBS_NUM_PPN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (13.0, 0.0, 0.0))  # 3 of 16 idle
    assert trainer.data_workers(1, cpu) == 2
    assert trainer.data_workers(1, cpu, tasks_on_node=3) == 0  # one idle CPU each, for its thread
