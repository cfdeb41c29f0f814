"""Checkpoints and exact resume: stopped anywhere, resumed, bitwise the same weights."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from train import runfiles
from train.checkpoint import IncompatibleCheckpoint
from train.contract.config import CheckpointConfig, DataConfig, SamplerConfig
from train.trainer import DEADLINE_ENV, Trainer


def epochs_recorded(run_dir: Path) -> list[int]:
    return [r["epoch"] for r in runfiles.read_metrics(run_dir)]


# small_config: 10 steps per epoch, 3 epochs, 30 steps.
@pytest.mark.parametrize(
    "stop_at",
    [
        pytest.param(0, id="before-first-step"),
        pytest.param(1, id="first-step"),
        pytest.param(7, id="mid-epoch"),
        pytest.param(10, id="epoch-boundary"),
        pytest.param(29, id="last-step"),
    ],
)
def test_stop_and_resume_is_bitwise_exact(tmp_path: Path, config_factory, run_trainer, reference_sha, stop_at: int) -> None:
    config = config_factory()
    stopped = run_trainer(config, tmp_path, stop_at_step=stop_at)
    assert stopped.status == "stopped" and stopped.reason == "stop_at_step test hook"
    point = Trainer.resume_point(tmp_path)
    assert point["global_step"] == stop_at
    assert (point["epoch"], point["step_in_epoch"]) == divmod(stop_at, 10)
    assert stopped.checkpoint == point["path"]
    assert not (tmp_path / "summary.json").exists()

    resumed = run_trainer(config, tmp_path)
    assert resumed.status == "completed"
    assert resumed.summary["weights_sha256"] == reference_sha(config)
    assert resumed.summary["resumes"] == 1 and resumed.summary["steps"] == 30
    assert epochs_recorded(tmp_path) == [1, 2, 3]


def test_several_stops_in_a_row(tmp_path: Path, config_factory, run_trainer, reference_sha) -> None:
    config = config_factory(checkpoint=CheckpointConfig(every_steps=4, every_minutes=0))
    for stop_at in (3, 4, 18, 25):
        assert run_trainer(config, tmp_path, stop_at_step=stop_at).status == "stopped"
    final = run_trainer(config, tmp_path)
    assert final.summary["weights_sha256"] == reference_sha(config_factory())
    assert final.summary["resumes"] == 4


def test_balanced_sampler_and_larger_batches_resume_exactly(tmp_path: Path, config_factory, run_trainer, reference_sha) -> None:
    config = config_factory(batch_size=48, sampler=SamplerConfig(balanced=True), seed=11)  # 7 steps/epoch, last one short
    run_trainer(config, tmp_path, stop_at_step=6)
    assert run_trainer(config, tmp_path).summary["weights_sha256"] == reference_sha(config)


def test_more_epochs_continue_a_finished_run(tmp_path: Path, config_factory, run_trainer, reference_sha) -> None:
    run_trainer(config_factory(epochs=2), tmp_path)
    config = config_factory(epochs=3)
    result = run_trainer(config, tmp_path)
    assert result.summary["weights_sha256"] == reference_sha(config)
    assert epochs_recorded(tmp_path) == [1, 2, 3]


@pytest.mark.parametrize("damage", ["truncate", "flip-bytes", "unloadable"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, config_factory, run_trainer, reference_sha, capsys: pytest.CaptureFixture, damage: str
) -> None:
    config = config_factory(checkpoint=CheckpointConfig(every_steps=3, every_minutes=0))
    run_trainer(config, tmp_path, stop_at_step=14)  # checkpoints at ..., 10, 12, 14
    newest = tmp_path / "checkpoints" / "ckpt-000000014.pt"
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip-bytes":
        newest.write_bytes(data[:1000] + bytes(b ^ 0xFF for b in data[1000:1100]) + data[1100:])
    else:  # intact by its sidecar's size and CRC, but not a torch file
        junk = b"\0" * len(data)
        newest.write_bytes(junk)
        sidecar = newest.with_suffix(".json")
        info = json.loads(sidecar.read_text())
        import zlib

        info["crc32"] = zlib.crc32(junk)
        sidecar.write_text(json.dumps(info))
    if damage != "unloadable":
        # Checked without torch: the login node's view skips it too.
        assert Trainer.resume_point(tmp_path)["global_step"] == 12

    result = run_trainer(config, tmp_path)
    err = capsys.readouterr().err
    assert "checkpoint ckpt-000000014.pt is unusable" in err and "trying the previous one" in err
    assert (tmp_path / "checkpoints" / "ckpt-000000014.pt.corrupt").exists()
    assert result.summary["weights_sha256"] == reference_sha(config_factory())


def test_checkpoint_without_sidecar_is_invisible(tmp_path: Path, config_factory, run_trainer, reference_sha) -> None:
    config = config_factory()
    run_trainer(config, tmp_path, stop_at_step=5)
    # A write killed after the rename but before the sidecar; and a stray temporary file.
    (tmp_path / "checkpoints" / "ckpt-000000008.pt").write_bytes(b"half a checkpoint")
    (tmp_path / "checkpoints" / ".tmp-ckpt-000000009.pt.abc").write_bytes(b"partial")
    assert Trainer.resume_point(tmp_path)["global_step"] == 5
    result = run_trainer(config, tmp_path)
    assert result.summary["weights_sha256"] == reference_sha(config)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


@pytest.mark.parametrize(
    "change, key",
    [
        ({"data": DataConfig(samples=500, vector_features=8)}, "train.data.samples"),
        ({"data": DataConfig(samples=400, vector_features=9)}, "train.data.vector_features"),
        ({"seed": 1}, "train.seed"),
        ({"batch_size": 16}, "train.batch_size"),
        ({"sampler": SamplerConfig(positive_weight=0.5)}, "train.sampler.positive_weight"),
    ],
)
def test_resume_with_another_model_or_data_is_refused(tmp_path: Path, config_factory, run_trainer, change: dict, key: str) -> None:
    config = config_factory()
    run_trainer(config, tmp_path, stop_at_step=5)
    with pytest.raises(IncompatibleCheckpoint) as info:
        run_trainer(dataclasses.replace(config, **change), tmp_path)
    message = str(info.value)
    assert f": {key} differs (checkpoint: " in message and "Use a new --run-dir" in message
    # Nothing was changed by the refused attempt.
    assert Trainer.resume_point(tmp_path)["global_step"] == 5


def test_allowed_changes_on_resume(tmp_path: Path, config_factory, run_trainer) -> None:
    config = config_factory()
    run_trainer(config, tmp_path, stop_at_step=5)
    changed = dataclasses.replace(config, lr=0.0005, epochs=4, checkpoint=CheckpointConfig(every_steps=2, keep=4))
    result = run_trainer(changed, tmp_path)
    assert result.status == "completed" and result.summary["steps"] == 40
    assert runfiles.read_metrics(tmp_path)[-1]["lr"] == 0.0005


def test_metrics_have_no_duplicate_epochs_after_a_crash(tmp_path: Path, config_factory, run_trainer) -> None:
    config = config_factory()
    run_trainer(config, tmp_path, stop_at_step=10)
    # As if the job died after recording epoch 2 but before its checkpoint, mid-line.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "val_auc": 0.1}) + "\n" + '{"epoch": 3, "val_')
    run_trainer(config, tmp_path)
    assert epochs_recorded(tmp_path) == [1, 2, 3]
    assert runfiles.read_metrics(tmp_path)[1]["val_auc"] != 0.1


def test_deadline_stops_with_a_checkpoint(tmp_path: Path, config_factory, run_trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_factory(checkpoint=CheckpointConfig(every_minutes=0, deadline_margin_seconds=3600))
    result = run_trainer(config, tmp_path / "a", deadline=time.time() + 60)
    assert result.status == "stopped" and result.reason == "deadline"
    assert Trainer.resume_point(tmp_path / "a")["global_step"] == 0

    monkeypatch.setenv(DEADLINE_ENV, str(time.time() + 60))
    assert run_trainer(config, tmp_path / "b").reason == "deadline"
    monkeypatch.setenv(DEADLINE_ENV, str(time.time() + 7200))
    assert run_trainer(config, tmp_path / "c").status == "completed"


def test_deadline_margin_grows_with_measured_times(tmp_path: Path, config_factory) -> None:
    trainer = Trainer(config_factory(), tmp_path, stream=io.StringIO())
    assert trainer.deadline_margin() == 10.0
    trainer._longest_step_gap = 20.0
    assert trainer.deadline_margin() == 40.0


def test_sigterm_mid_run_checkpoints_and_resumes_exactly(tmp_path: Path, config_factory, reference_sha) -> None:
    config = config_factory(epochs=20)  # 200 steps: the signal lands well inside
    trainer = Trainer(config, tmp_path, stream=io.StringIO())
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    trainer.install_signal_handlers()

    def send_when_training() -> None:
        while not (tmp_path / "progress.json").exists():
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_when_training)
    try:
        sender.start()
        result = trainer.run()
        sender.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert result.status == "stopped" and result.reason == "SIGTERM"
    assert 0 < Trainer.resume_point(tmp_path)["global_step"] < 200
    resumed = Trainer(config, tmp_path, stream=io.StringIO()).run()
    assert resumed.summary["weights_sha256"] == reference_sha(config)


def test_last_epoch_line_lost_in_a_crash_is_restored(tmp_path: Path, config_factory, run_trainer, reference_sha) -> None:
    config = config_factory()
    run_trainer(config, tmp_path, stop_at_step=15)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text("")  # as if never flushed to disk
    run_trainer(config, tmp_path, stop_at_step=16)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines
    result = run_trainer(config, tmp_path)
    assert epochs_recorded(tmp_path) == [1, 2, 3]
    assert result.summary["weights_sha256"] == reference_sha(config)
