"""TensorBoard event files across resumes: each step exactly once, read back as TensorBoard reads them."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from tasks.tasks_support import train_section
from train import runfiles
from train.contract.config import TrainConfig
from train.trainer import Trainer

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed (pip install -e '.[tensorboard]')")


def scalars(run_dir: Path, tag: str) -> list[int]:
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [event.step for event in acc.Scalars(tag)]


def test_event_files_hold_each_step_once_after_two_resumes_and_a_lost_checkpoint(importable: Path,
                                                                                 tmp_path: Path) -> None:
    config = dataclasses.replace(TrainConfig.from_dict(train_section("signal")), tensorboard=True)
    run = tmp_path / "run"
    assert Trainer(config, run, stream=io.StringIO(), stop_at_step=7).run().status == "stopped"
    assert Trainer(config, run, stream=io.StringIO(), stop_at_step=15).run().status == "stopped"
    # As if the second attempt had been killed without warning after step 15: its last
    # checkpoint (15) is lost, so the next attempt resumes at step 12 and trains 13-15 again.
    ckpts = run / runfiles.CHECKPOINT_DIR
    for path in ckpts.glob("ckpt-000000015*"):
        path.unlink()
    assert Trainer.resume_point(run)["global_step"] == 12
    result = Trainer(config, run, stream=io.StringIO()).run()
    assert result.status == "completed" and result.summary["resumes"] == 2

    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 3  # one file per attempt
    assert scalars(run, "train/loss") == list(range(1, 31))
    assert scalars(run, "train/lr") == list(range(1, 31))
    assert scalars(run, "epoch/val_loss") == [10, 20, 30]
    assert scalars(run, "epoch/val_accuracy") == [10, 20, 30]

    # cluster collect takes every attempt's event file; TensorBoard reads the same steps there.
    from cluster.collect import collect_run
    from cluster.runs import Run
    # collect reads runs that `cluster submit` made: give this trainer-only directory its run.json.
    (run / "run.json").write_text('{"name": "signal", "scheduler": "local", "state": "completed", "jobs": []}')
    summary = collect_run(Run(run), tmp_path / "collected", "completed", plot=False)
    assert sum(name.startswith("tensorboard/events.out.tfevents.") for name in summary["collected_files"]) == 3
    assert scalars(tmp_path / "collected", "train/loss") == list(range(1, 31))
