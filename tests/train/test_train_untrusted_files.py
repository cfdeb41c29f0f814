"""Run-directory files that someone else may have written: a checkpoint's sidecar, a
checkpoint that would unpickle code. The trainer never follows them out of checkpoints/
and never runs their code."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from train import runfiles
from train.contract.config import CheckpointConfig
from train.trainer import Trainer


def craft_sidecar(checkpoints: Path, step: int, file: object, data: bytes) -> Path:
    """A sidecar for `step` whose "file" is `file`, with the size and CRC of `data` (so
    that, followed, it would pass as intact)."""
    sidecar = checkpoints / f"ckpt-{step:09d}.json"
    sidecar.write_text(json.dumps({
        "format": 1, "epoch": 0, "step_in_epoch": step, "global_step": step, "file": file,
        "bytes": len(data), "crc32": zlib.crc32(data), "reason": "stop", "time": 0.0,
    }))
    return sidecar


@pytest.mark.parametrize("kind", ["absolute", "dot-dot", "other-checkpoint", "not-a-string"])
def test_a_crafted_sidecar_never_touches_a_file_outside_its_checkpoint(
    tmp_path: Path, config_factory, run_trainer, reference_sha, kind: str
) -> None:
    outside = tmp_path / "outside" / "precious.bin"
    outside.parent.mkdir()
    outside.write_bytes(b"not yours to rename or delete\n" * 100)
    data = outside.read_bytes()
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    # keep=2 and a checkpoint every 3 steps: rotation deletes old checkpoints often.
    config = config_factory(checkpoint=CheckpointConfig(every_steps=3, every_minutes=0, keep=2))
    run_trainer(config, run_dir, stop_at_step=5)
    file = {
        "absolute": str(outside),
        "dot-dot": "../../outside/precious.bin",
        "other-checkpoint": "ckpt-000000003.pt",  # inside checkpoints/, but not this sidecar's own
        "not-a-string": ["..", "outside"],
    }[kind]
    if kind == "other-checkpoint":
        data = (checkpoints / "ckpt-000000003.pt").read_bytes()
    # The newest: resume would try it first (and set a bad one aside as .corrupt). The
    # oldest: rotation would delete it first.
    crafted = [craft_sidecar(checkpoints, 999, file, data), craft_sidecar(checkpoints, 1, file, data)]
    assert [info["global_step"] for info in runfiles.sidecars(run_dir)] == [5, 3]
    assert Trainer.resume_point(run_dir)["global_step"] == 5

    resumed = run_trainer(config, run_dir, stop_at_step=20)  # resume, then checkpoints and rotations
    assert resumed.status == "stopped"
    assert outside.read_bytes() == (b"not yours to rename or delete\n" * 100)
    assert not outside.with_name(outside.name + ".corrupt").exists()
    assert all(side.exists() for side in crafted)  # ignored, not deleted either

    result = run_trainer(config, run_dir)  # resumes from 20 (not 999), and rotates again
    assert outside.read_bytes() == (b"not yours to rename or delete\n" * 100)
    assert list(outside.parent.iterdir()) == [outside]
    assert result.summary["weights_sha256"] == reference_sha(config_factory())
    assert result.summary["resumes"] == 2


class RunsCode:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_unpickle_code_is_a_one_line_error(
    tmp_path: Path, run_trainer, subprocess_env: dict, python: str
) -> None:
    import subprocess

    import torch
    import yaml

    from train.contract.config import TrainConfig

    train = {"epochs": 2, "device": "cpu", "data": {"samples": 200, "vector_features": 4},
             "checkpoint": {"every_minutes": 0}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "train": train}))
    run_dir = tmp_path / "run"
    run_trainer(TrainConfig.from_dict(train), run_dir, stop_at_step=3)
    newest = run_dir / "checkpoints" / "ckpt-000000003.pt"
    marker = tmp_path / "code-ran"
    torch.save({"format": 1, "model": RunsCode(marker)}, newest)
    data = newest.read_bytes()
    sidecar = newest.with_suffix(".json")
    info = json.loads(sidecar.read_text())
    info.update(bytes=len(data), crc32=zlib.crc32(data))  # intact by its sidecar
    sidecar.write_text(json.dumps(info))

    proc = subprocess.run([python, "-m", "train", "--config", str(spec), "--run-dir", str(run_dir)],
                          capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error: {newest}: not a tensors-only checkpoint (refused to unpickle code); "
                           "delete it or restore it from a backup\n")
    assert not marker.exists()
    assert newest.read_bytes() == data and sidecar.exists()  # left for the user to decide
    assert not (run_dir / "summary.json").exists()
