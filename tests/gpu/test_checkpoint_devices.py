"""Checkpoints across devices, shown on the CPU: a checkpoint written on a GPU (its tensors
tagged cuda:0 by torch.save, made here by tagging the storages as torch.save does on a GPU)
loads and resumes on a machine without CUDA; the checkpoints this trainer writes load with a
plain torch.load anywhere; a resume on another device than the checkpoint's warns and does
not replay the first dropout masks."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from train import checkpoint, runfiles
from train.contract.config import CheckpointConfig, DataConfig, TrainConfig
from train.trainer import Trainer


def small_config() -> TrainConfig:
    """320 training samples, 10 steps per epoch, 2 epochs, one thread, on the CPU."""
    return TrainConfig(epochs=2, device="cpu", threads=1, data=DataConfig(samples=400, vector_features=8),
                       checkpoint=CheckpointConfig(every_minutes=0))


def cuda_tagged(state: dict, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """`checkpoint.serialize` of `state` as a GPU run's torch.save writes it: every storage
    tagged cuda:0 (torch.save asks `location_tag` for each storage's device)."""
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        return checkpoint.serialize(state, state["position"])


def rewrite_newest(run_dir: Path, data: bytes, state: dict) -> None:
    checkpoint.write(run_dir, data, position=state["position"], reason="test: as if written on a GPU", keep=3)


def test_gpu_tagged_checkpoint_loads_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = {"position": {"epoch": 0, "step_in_epoch": 1, "global_step": 1},
             "model": {"w": torch.arange(6.0).reshape(2, 3)}, "rng": {"torch": torch.get_rng_state()}}
    path = tmp_path / "gpu.pt"
    path.write_bytes(cuda_tagged(state, monkeypatch))
    # (a RuntimeError; torch 2.1 wraps it in an UnpicklingError)
    with pytest.raises(Exception, match="deserialize object on a CUDA device"):
        torch.load(path, weights_only=True)  # the file really is cuda-tagged: plain torch.load refuses it here
    loaded = checkpoint._load(path)
    assert loaded["model"]["w"].device.type == "cpu" and torch.equal(loaded["model"]["w"], state["model"]["w"])


def test_written_checkpoints_load_without_map_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What serialize hands to torch.save has no tensor off the CPU (a GPU run's too: `on_cpu`).
    saved: list = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, **kw: (saved.append(obj), real_save(obj, f, **kw)))
    result = Trainer(small_config(), tmp_path, stream=io.StringIO(), stop_at_step=3).run()
    assert result.status == "stopped" and saved

    def devices(value) -> set[str]:
        if isinstance(value, torch.Tensor):
            return {value.device.type}
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
        return set().union(*(devices(v) for v in items))

    assert devices(saved[-1]) == {"cpu"}
    assert torch.load(result.checkpoint, weights_only=True)["position"]["global_step"] == 3
    nested = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": None}
    assert checkpoint.on_cpu(nested)["a"][1][1] == 3 and isinstance(checkpoint.on_cpu(nested)["a"][1], tuple)


def test_resume_from_a_gpu_checkpoint_on_the_cpu_warns_and_draws_fresh_masks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    config = small_config()
    reference = Trainer(config, tmp_path / "reference", stream=io.StringIO()).run().summary["weights_sha256"]

    def resumed_sha(run_dir: Path, as_gpu: bool) -> str:
        assert Trainer(config, run_dir, stream=io.StringIO(), stop_at_step=7).run().status == "stopped"
        state = checkpoint._load(runfiles.resume_point(run_dir)["path"])
        if as_gpu:  # a GPU run's checkpoint: cuda-tagged, with the CUDA generator's state
            state["rng"]["cuda"] = torch.get_rng_state()
            rewrite_newest(run_dir, cuda_tagged(state, monkeypatch), state)
        capsys.readouterr()
        result = Trainer(config, run_dir, stream=io.StringIO()).run()
        assert result.status == "completed" and result.summary["resumes"] == 1
        return result.summary["weights_sha256"]

    assert resumed_sha(tmp_path / "cpu", as_gpu=False) == reference  # the control: exact on the same device
    assert "checkpoint was written on" not in capsys.readouterr().err
    moved = resumed_sha(tmp_path / "gpu", as_gpu=True)
    assert ("warning: the checkpoint was written on cuda, this run trains on cpu: it continues with fresh dropout "
            "masks (seeded by step), not bitwise as an uninterrupted run would") in capsys.readouterr().err
    # The CPU stream saved in this checkpoint is the uninterrupted run's own, so replaying it
    # would give the reference: a different result shows the saved stream was not reused,
    # and the same result again shows the fresh stream is seeded, not random.
    assert moved != reference
    assert resumed_sha(tmp_path / "gpu-again", as_gpu=True) == moved
