"""Helpers of the task tests: a user's task package written outside the repository, and small specs."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

EXTERNAL_TASK = textwrap.dedent('''
    """A user's task in their own package: an MLP regressing a noisy linear target, data as tensors."""
    from dataclasses import dataclass

    from train.tasks import Task


    class Regression(Task):
        @dataclass(frozen=True)
        class Options:
            samples: int = 300
            features: int = 8
            hidden: int = 16

            def __post_init__(self):
                if self.hidden < 1:
                    raise ValueError("hidden must be positive")

        def data(self):
            import torch
            g = torch.Generator().manual_seed(self.config.seed)
            x = torch.randn(self.options.samples, self.options.features, generator=g)
            y = x @ torch.randn(self.options.features, 1, generator=g) + 0.1 * torch.randn(self.options.samples, 1, generator=g)
            n = self.options.samples // 5
            return (x[n:], y[n:]), (x[:n], y[:n])

        def model(self):
            from torch import nn
            o = self.options
            return nn.Sequential(nn.Linear(o.features, o.hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(o.hidden, 1))

        def loss(self, output, target, reduction):
            import torch.nn.functional as F
            return F.mse_loss(output, target, reduction=reduction)
''')

TASKS = {
    "signal": {"task": "train.tasks.signal_cnn:SignalCNN", "options": {"samples": 400, "length": 32, "channels": 4}},
    "external": {"task": "usertasks.regress:Regression", "options": {"samples": 400}},
}
"""Both give 320 training samples: 10 steps per epoch at batch 32."""


def train_section(task: str, **extra) -> dict:
    return {"seed": 3, "epochs": 3, "batch_size": 32, "device": "cpu", **TASKS[task],
            "checkpoint": {"every_steps": 4, "every_minutes": 0, "keep": 3}, **extra}


def write_spec(path: Path, train: dict, **top) -> Path:
    path.write_text(yaml.safe_dump({"name": "task-test", **top, "train": train}))
    return path
