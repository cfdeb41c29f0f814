"""The trainer's optimizer stepping (`train.optim.Stepper`): bitwise what `optimizer.step()` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.model import TwoInputConvNet
from train.optim import Stepper, defer_dynamo_import

from support.runs import REPO


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TwoInputConvNet((10, 18), 8)


def _train(optimizer_for, use_stepper: bool, steps: int = 5) -> tuple[list[torch.Tensor], dict]:
    """A few steps on fixed random gradients; the final parameters and optimizer state."""
    model = _model()
    optimizer = optimizer_for(model)
    stepper = Stepper(optimizer)
    generator = torch.Generator().manual_seed(1)
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = 1e-3 * (step + 1)  # as the trainer's schedule sets it
        stepper.zero_grad() if use_stepper else optimizer.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        stepper.step() if use_stepper else optimizer.step()
    return [p.detach().clone() for p in model.parameters()], optimizer.state_dict()


OPTIMIZERS = {
    "adam fused": lambda m: torch.optim.Adam(m.parameters(), fused=True),
    "adam fused, weight decay": lambda m: torch.optim.Adam(m.parameters(), fused=True, weight_decay=0.1),
    "adamw fused": lambda m: torch.optim.AdamW(m.parameters(), fused=True, weight_decay=0.01),
    "adam fused, amsgrad, betas": lambda m: torch.optim.Adam(m.parameters(), fused=True, amsgrad=True,
                                                             betas=(0.8, 0.99)),
    "adam foreach": lambda m: torch.optim.Adam(m.parameters(), foreach=True),
    "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_stepper_updates_bitwise_as_optimizer_step(name: str) -> None:
    expected_params, expected_state = _train(OPTIMIZERS[name], use_stepper=False)
    params, state = _train(OPTIMIZERS[name], use_stepper=True)
    for p, q in zip(params, expected_params):
        assert torch.equal(p.view(torch.uint8), q.view(torch.uint8))
    for key, values in expected_state["state"].items():
        for field, value in values.items():
            assert torch.equal(torch.as_tensor(state["state"][key][field]), torch.as_tensor(value)), (key, field)


def test_fused_adam_is_stepped_directly_after_the_first_step() -> None:
    model = _model()
    stepper = Stepper(torch.optim.Adam(model.parameters(), fused=True))
    assert stepper.direct
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert stepper._fused_calls() is None  # no state yet: optimizer.step() creates it
    stepper.step()
    assert stepper._fused_calls() is not None
    assert not Stepper(torch.optim.SGD(model.parameters(), lr=0.1)).direct


def test_parameters_without_gradients_are_left_alone() -> None:
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    stepper = Stepper(optimizer)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    stepper.step()
    stepper.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.fc3.weight.grad = torch.ones_like(model.fc3.weight)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    stepper.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (name != "fc3.weight"), name
    assert optimizer.state[model.fc3.weight]["step"].item() == 2
    assert optimizer.state[model.fc1.weight]["step"].item() == 1


def test_a_seed_run_never_imports_torch_dynamo(tmp_path: Path) -> None:
    # torch.optim's wrappers would import it (1.5 s here) at the optimizer's construction and at
    # its first step, in every attempt of every run; nothing compiles in the seed task.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "train", "--config", str(REPO / "jobs/smoke.yaml"),
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert {"torch.optim", "train.trainer"} <= imported  # the import log is complete...
    assert not {name for name in imported if name.startswith("torch._dynamo")}  # ...and has no dynamo
    assert (tmp_path / "run" / "summary.json").exists()


def test_once_torch_dynamo_is_imported_the_optimizer_methods_are_disabled_for_it_as_torch_does() -> None:
    import torch._dynamo

    defer_dynamo_import()
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), fused=True)  # calls add_param_group
    optimizer.zero_grad()
    optimizer.load_state_dict(optimizer.state_dict())
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        decided = getattr(torch.optim.Optimizer, name).__wrapped__.__dynamo_disable
        assert "_eager_until_dynamo" not in decided.__qualname__, name  # torch._dynamo.disable's own
