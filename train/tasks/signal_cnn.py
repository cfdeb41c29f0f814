"""A second shipped task: a small 1-D CNN classifying synthetic signals, read through a
`torch.utils.data.Dataset` (item by item, as most research code is written) rather than
as stacked tensors.

    train:
      task: train.tasks.signal_cnn:SignalCNN
      options: {samples: 2000, length: 64, classes: 3, channels: 8}

Each class is a sine wave of its own frequency at a random phase, in Gaussian noise; the
data is a deterministic function of the options and `train.seed` (numpy's generator),
as the exact-resume contract asks (see `train.tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from train.contract import SpecError
from train.tasks import Task


# Upper bounds of the options (checked at `cluster check`): beyond these a job would not fit in
# memory, or the value is surely a typo; each is far above what this small model uses.
MAX_SAMPLES = 10**6
MAX_LENGTH = 65536
MAX_SIGNAL_ELEMENTS = 2**28
"""samples x length, generated in memory as float32 (1 GiB)."""
MAX_CLASSES = 1000
MAX_CHANNELS = 4096
MAX_NOISE = 1e6


class SignalCNN(Task):
    """Conv1d -> ReLU -> Conv1d -> ReLU -> global average pool -> Dropout -> Linear."""

    @dataclass(frozen=True)
    class Options:
        samples: int = 2000
        """Signals generated (training + validation)."""
        length: int = 64
        """Samples per signal."""
        classes: int = 3
        """Number of classes (one frequency each)."""
        channels: int = 8
        """Width of the convolutions."""
        noise: float = 1.0
        """Standard deviation of the noise (the waves have amplitude 1)."""
        dropout: float = 0.1
        val_fraction: float = 0.2

        def __post_init__(self) -> None:
            for name in ("samples", "length", "classes", "channels"):
                value = getattr(self, name)
                if value < 1:
                    raise SpecError(name, f"must be a positive integer (got {value})")
            if self.classes < 2:
                raise SpecError("classes", f"must be at least 2 (got {self.classes})")
            if self.length < 8:
                raise SpecError("length", f"must be at least 8 (got {self.length}): two 5-tap convolutions")
            for name, most in (("samples", MAX_SAMPLES), ("length", MAX_LENGTH), ("classes", MAX_CLASSES),
                               ("channels", MAX_CHANNELS)):
                if getattr(self, name) > most:
                    raise SpecError(name, f"must be at most {most} (got {getattr(self, name)})")
            if self.samples * self.length > MAX_SIGNAL_ELEMENTS:
                raise SpecError("samples", f"samples x length is {self.samples * self.length}, generated in memory "
                                           f"(allowed: at most {MAX_SIGNAL_ELEMENTS}, 1 GiB of float32)")
            if not 0 < self.val_fraction < 1:
                raise SpecError("val_fraction", f"must be a number between 0 and 1 (got {self.val_fraction})")
            if not 0 <= self.dropout < 1:
                raise SpecError("dropout", f"must be in [0, 1) (got {self.dropout})")
            if not 0 <= self.noise <= MAX_NOISE:
                raise SpecError("noise", f"must be between 0 and {MAX_NOISE:g} (got {self.noise:g})")
            n_val = round(self.samples * self.val_fraction)
            if n_val < 1 or self.samples - n_val < 1:
                raise SpecError("samples", f"leaves no sample on one side of the split ({self.samples} x val_fraction "
                                           f"{self.val_fraction})")

    best_metric = "val_accuracy"
    best_mode = "max"

    def data(self) -> tuple[Any, Any]:
        import numpy as np

        o = self.options
        rng = np.random.default_rng([self.config.seed, 101])
        label = rng.integers(0, o.classes, size=o.samples)
        phase = rng.uniform(0, 2 * np.pi, size=(o.samples, 1))
        t = np.arange(o.length)[None, :]
        frequency = (1 + label[:, None]) / o.length * 2  # cycles per signal: 2, 4, 6, ...
        signal = np.sin(2 * np.pi * frequency * t + phase) + o.noise * rng.standard_normal((o.samples, o.length))
        n_val = round(o.samples * o.val_fraction)
        signals = SignalDataset(signal.astype(np.float32), label)
        return signals.subset(slice(n_val, None)), signals.subset(slice(0, n_val))

    def model(self) -> Any:
        from torch import nn

        o = self.options
        return nn.Sequential(
            nn.Conv1d(1, o.channels, 5, padding=2), nn.ReLU(),
            nn.Conv1d(o.channels, o.channels, 5, padding=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(o.dropout), nn.Linear(o.channels, o.classes),
        )

    def loss(self, output: Any, target: Any, reduction: str) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(output, target, reduction=reduction)

    def metrics(self, output: Any, target: Any) -> dict[str, Any]:
        return {"val_accuracy": float((output.argmax(dim=1) == target).float().mean())}


class SignalDataset:
    """Signals and labels as a map-style Dataset: item i is (signal (1, L) float32, label)."""

    def __init__(self, signal: Any, label: Any) -> None:
        self.signal, self.label = signal, label

    def subset(self, index: slice) -> SignalDataset:
        return SignalDataset(self.signal[index], self.label[index])

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        return torch.from_numpy(self.signal[i][None]), torch.tensor(int(self.label[i]))

