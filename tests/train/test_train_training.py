"""Training end to end in-process: it learns, records its metrics and checkpoints."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from train import runfiles
from train.contract.config import CheckpointConfig, DataConfig
from train.trainer import Trainer


def test_loss_decreases_and_validation_auc_beats_chance(tmp_path: Path, config_factory, run_trainer) -> None:
    config = config_factory(epochs=4, data=DataConfig(samples=600, vector_features=16))
    result = run_trainer(config, tmp_path)
    assert result.status == "completed"
    records = runfiles.read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["train_loss"] < 0.7 * records[0]["train_loss"]
    assert all(r["val_auc"] > 0.75 for r in records)
    assert records[-1]["val_balanced_accuracy"] > 0.6
    keys = {"epoch", "global_step", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_auc", "lr", "epoch_seconds", "time"}
    assert all(set(r) == keys for r in records)
    assert [r["global_step"] for r in records] == [15, 30, 45, 60]


def test_summary_and_run_directory_layout(tmp_path: Path, config_factory, run_trainer) -> None:
    result = run_trainer(config_factory(), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == result.summary
    assert summary["status"] == "completed" and summary["epochs"] == 3 and summary["steps"] == 30
    assert summary["samples"] == 3 * 320 and summary["samples_per_second"] > 0
    assert summary["device"] == "cpu" and len(summary["weights_sha256"]) == 64
    assert summary["val_auc"] == runfiles.read_metrics(tmp_path)[-1]["val_auc"]
    assert 1 <= summary["best_epoch"] <= 3
    ckpt = tmp_path / "checkpoints"
    assert (ckpt / "best.pt").is_file() and (ckpt / "final.pt").is_file()
    assert sorted(p.name for p in ckpt.glob("ckpt-*.pt")) == ["ckpt-000000010.pt", "ckpt-000000020.pt", "ckpt-000000030.pt"]
    assert not list(ckpt.glob(".tmp-*"))
    point = Trainer.resume_point(tmp_path)
    assert point["global_step"] == 30 and point["epoch"] == 3 and point["step_in_epoch"] == 0
    assert point["path"] == str(ckpt / "ckpt-000000030.pt")
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["epoch"] == 3 and progress["steps_per_epoch"] == 10


def test_rotation_keeps_the_newest_k(tmp_path: Path, config_factory, run_trainer) -> None:
    config = config_factory(checkpoint=CheckpointConfig(every_steps=3, every_minutes=0, keep=2))
    run_trainer(config, tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*"))
    assert names == ["ckpt-000000027.json", "ckpt-000000027.pt", "ckpt-000000030.json", "ckpt-000000030.pt"]


def test_npz_data_trains(tmp_path: Path, config_factory, run_trainer) -> None:
    rng = np.random.default_rng(0)
    label = (np.arange(300) % 5 == 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x1=rng.standard_normal((300, 8, 9)), x2=rng.standard_normal((300, 4)) + label[:, None], y=label)
    config = config_factory(epochs=2, data=DataConfig(source="npz", path=str(tmp_path / "d.npz")))
    result = run_trainer(config, tmp_path / "run")
    assert result.status == "completed" and result.summary["steps"] == 2 * 8


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_in_logs(tmp_path: Path, config_factory) -> None:
    log = io.StringIO()
    Trainer(config_factory(), tmp_path / "log", stream=log).run()
    text = log.getvalue()
    assert "\r" not in text
    assert text.count("\n") < 10  # epoch lines and a few notices, not one per step
    assert "epoch 3/3 train_loss" in text

    from train.progress import Progress

    terminal = FakeTerminal()
    progress = Progress(tmp_path, epochs=2, steps_per_epoch=5, stream=terminal, bar_interval=0)
    for step in range(1, 6):
        progress.step(0, step, step, 32, lambda: 0.5)
    progress.message("epoch 1/2 done")
    out = terminal.getvalue()
    assert out.count("\r") >= 5 and "epoch 1/2 step 5/5 loss 0.5000" in out and out.endswith("epoch 1/2 done\n")

    plain = io.StringIO()
    progress = Progress(tmp_path, epochs=2, steps_per_epoch=5, stream=plain, log_interval=3600)
    for step in range(1, 6):
        progress.step(0, step, step, 32, lambda: 0.5)
    assert plain.getvalue().count("\n") == 1 and "\r" not in plain.getvalue()  # bounded rate


def test_threads_follow_the_scheduler_allocation(monkeypatch) -> None:
    import torch

    from train.trainer import configure_threads

    monkeypatch.delenv("OMP_NUM_THREADS")
    for name in ("SLURM_CPUS_PER_TASK", "NCPUS", "PBS_NUM_PPN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert configure_threads() == 1 == torch.get_num_threads()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")  # more than this machine has: the affinity wins
    assert configure_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # an explicit choice is kept
    torch.set_num_threads(1)
    assert configure_threads() == 1


def test_automatic_threads_without_an_allocation_leave_busy_cpus_alone(monkeypatch) -> None:
    from train import trainer

    for name in trainer.ALLOCATED_CPUS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    for load, tasks, expected in [(0.1, 1, 4), (5.0, 1, 3), (7.9, 1, 1), (30.0, 1, 1), (0.0, 2, 4), (4.0, 2, 2)]:
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert trainer.automatic_threads(tasks) == expected, (load, tasks)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 4.0, 3.5))  # the busy 2-core machine of the docstring
    assert trainer.automatic_threads() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")  # an allocation is the job's own, whatever the load
    assert trainer.automatic_threads() == 2


def test_train_threads_wins_over_omp_num_threads(monkeypatch) -> None:
    import torch

    from train.trainer import configure_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert configure_threads(threads=2) == 2 == torch.get_num_threads()  # the fixture restores 1
    assert configure_threads() == 2  # $OMP_NUM_THREADS: torch's current setting is kept


def test_the_thread_count_does_not_change_the_weights(tmp_path: Path, config_factory, run_trainer, reference_sha) -> None:
    config = config_factory()
    two = run_trainer(config_factory(threads=2), tmp_path / "two")
    assert two.summary["threads"] == 2
    assert two.summary["weights_sha256"] == reference_sha(config)  # computed on 1 thread
    # And a run stopped on 2 threads resumes on 1 exactly (threads may change between attempts).
    assert run_trainer(config_factory(threads=2), tmp_path / "mixed", stop_at_step=12).status == "stopped"
    resumed = run_trainer(config_factory(threads=1), tmp_path / "mixed")
    assert resumed.summary["threads"] == 1 and resumed.summary["weights_sha256"] == reference_sha(config)
