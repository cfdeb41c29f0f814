"""The optimizer, the learning-rate schedule and mixed precision, as `train:` configures them.

Each is part of exact resume: the optimizer's state and the fp16 loss scaler's state are
checkpointed, and the schedule is a pure function of the global step (no state to save).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
from typing import Any

import torch
from torch import nn

from train.contract.config import ScheduleConfig, TrainConfig

IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable")
"""How an optimizer runs, not what it computes: chosen by the process that builds it (the
device and torch version decide), never taken from a checkpoint."""


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the model's parameters.

    Fused kernels update all parameters in one go instead of a Python loop over them;
    for a small model that is a large share of the step time, on CPU as on GPU. Where the
    device or torch lacks them, the multi-tensor (foreach) path is the fallback.
    """
    defer_dynamo_import()
    opt = config.optimizer
    lr = config.learning_rate
    if opt.name == "sgd":
        cls, kwargs = torch.optim.SGD, {"momentum": opt.momentum, "weight_decay": opt.weight_decay}
    else:  # weight_decay is explicit: AdamW's own default (0.01) never applies unasked
        cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
        kwargs = {"betas": opt.betas, "weight_decay": opt.weight_decay}
    try:
        return cls(model.parameters(), lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return cls(model.parameters(), lr=lr, foreach=True, **kwargs)


def defer_dynamo_import() -> None:
    """Keep torch.optim from importing torch._dynamo in a run that never compiles.

    Optimizer.add_param_group, zero_grad, state_dict and load_state_dict are wrapped by
    torch._disable_dynamo, whose first call imports torch._dynamo (1.5 s on the 2-core test
    machine, a third of a short job's time to its first step, paid again by every attempt)
    only to mark them as never to be compiled. The wrapper keeps what it decided on the
    wrapped function (``__dynamo_disable``); here that is, until something else has
    imported torch._dynamo, the function itself: nothing can be compiling while torch._dynamo
    is not imported. Once it is (a task that calls torch.compile), the first call makes the
    real disabled function, as torch would have, and keeps it.
    """
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        fn = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if fn is not None and getattr(fn, "__dynamo_disable", None) is None:
            fn.__dynamo_disable = _eager_until_dynamo(fn)


def _eager_until_dynamo(fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:
            return fn(*args, **kwargs)
        fn.__dynamo_disable = disabled = dynamo.disable(fn, True, wrapping=False)
        return disabled(*args, **kwargs)

    return call


class Stepper:
    """`optimizer.step()` and `optimizer.zero_grad(set_to_none=True)`, with less Python
    around them where that changes nothing.

    torch.optim's step wraps the update in a profiler range, hook dispatch, dynamo graph
    breaks, a walk over every parameter's state and a regrouping of the tensors by device
    and dtype: for the seed's small model about 100 us of a 3 ms step on the CPU, a third
    of what the fused kernel itself takes. For fused Adam and AdamW whose parameters share
    one device and dtype, `step` calls the kernels that `optimizer.step()` would call, with
    the same arguments, so the update is bitwise the same (tests/train/test_train_optim.py);
    the first step (which creates the state) calls the optimizer's own step function
    without torch.optim's wrappers (their graph breaks import torch._dynamo, see
    `defer_dynamo_import`), under no_grad as the wrapper would; any other optimizer goes
    through `optimizer.step()`. Step hooks are not run: the trainer registers none.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.direct = type(optimizer) in (torch.optim.Adam, torch.optim.AdamW) and all(
            group.get("fused") and not group.get("differentiable")
            and len({(p.device, p.dtype) for p in group["params"]}) == 1
            for group in optimizer.param_groups
        )

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        if not self.direct:
            self.optimizer.step()
            return
        calls = self._fused_calls()
        if calls is None:  # the first step: the unwrapped Adam.step creates the state
            with torch.no_grad():
                inspect.unwrap(type(self.optimizer).step)(self.optimizer)
            return
        for kernel, steps, tensors, options in calls:
            torch._foreach_add_(steps, 1)  # what torch.optim.adam._fused_adam does, then its kernel
            kernel(*tensors, steps, **options)

    def _fused_calls(self) -> list[tuple[Any, list, tuple, dict]] | None:
        """(kernel, step counters, tensors, options) for each parameter group, as
        torch.optim.adam._fused_adam would call it; None while a parameter with a gradient
        has no state yet (the first step creates it)."""
        calls = []
        for group in self.optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            states = [self.optimizer.state.get(p) for p in params]
            if not all(states):
                return None
            if not params:
                continue
            amsgrad = group["amsgrad"]
            decoupled = group.get("decoupled_weight_decay", isinstance(self.optimizer, torch.optim.AdamW))
            tensors = (params, [p.grad for p in params], [s["exp_avg"] for s in states],
                       [s["exp_avg_sq"] for s in states], [s["max_exp_avg_sq"] for s in states] if amsgrad else [])
            beta1, beta2 = group["betas"]
            options = {"amsgrad": amsgrad, "lr": group["lr"], "beta1": float(beta1), "beta2": float(beta2),
                       "weight_decay": group["weight_decay"], "eps": group["eps"], "maximize": group["maximize"],
                       "grad_scale": None, "found_inf": None}
            calls.append((torch._fused_adamw_ if decoupled else torch._fused_adam_, [s["step"] for s in states],
                          tensors, options))
        return calls


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, keeping this run's implementation flags.

    load_state_dict copies every param_group key from the checkpoint, `fused`, `foreach`
    and `capturable` included: a GPU run's checkpoint resumed on the CPU would ask for the
    fused CPU kernel (which older torch lacks), and a CPU one resumed on a GPU would
    silently drop `fused`. The values this process constructed are put back.
    """
    constructed = [{k: g[k] for k in IMPLEMENTATION_FLAGS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, constructed):
        for key in IMPLEMENTATION_FLAGS:
            if key in flags:
                group[key] = flags[key]
            else:
                group.pop(key, None)


def learning_rate(schedule: ScheduleConfig, base: float, step: int, total_steps: int) -> float:
    """The rate for optimizer step `step` (0-based) of `total_steps`: see ScheduleConfig."""
    warmup = schedule.warmup_steps
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule.kind == "constant":
        return base
    after = step - warmup
    if schedule.kind == "step":
        return base * schedule.gamma ** (after // schedule.step_size)
    span = max(1, total_steps - warmup - 1)
    progress = min(1.0, after / span)
    return base * (schedule.min_factor + (1 - schedule.min_factor) * 0.5 * (1 + math.cos(math.pi * progress)))


class Precision:
    """Autocast for the forward pass and the loss, and for fp16 a loss scaler.

    bf16 has float32's range, so it needs no scaling; fp16 does (small gradients would
    flush to zero): the scaler's state (scale, growth tracker) goes into checkpoints so a
    resumed run scales exactly as an uninterrupted one. The weights, the optimizer state
    and the checkpoints stay float32.
    """

    DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self) -> Any:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.DTYPES[self.name])

    def backward_and_step(self, loss: torch.Tensor, stepper: Stepper, model: nn.Module,
                          grad_clip: float | None) -> None:
        """backward, optional clipping of the global gradient norm, optimizer step."""
        optimizer = stepper.optimizer
        if self.scaler is None:
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            stepper.step()
            return
        self.scaler.scale(loss).backward()
        if grad_clip is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        self.scaler.step(optimizer)  # skipped when the gradients overflowed
        self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state is not None:
            self.scaler.load_state_dict(state)
