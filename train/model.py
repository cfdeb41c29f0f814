"""The tutorial's network, corrected, and the fingerprint of its weights."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from train.contract.config import conv_features


class Dropout(nn.Dropout):
    """`nn.Dropout` whose mask, on the CPU, is drawn as `uniform >= p`.

    Same layer, same distribution: each activation is zeroed with probability p and the
    rest scaled by 1 / (1 - p). torch's CPU dropout draws the mask with `bernoulli_`, which
    for a (32, 1024) batch made forward + backward take about 230 us here; a uniform draw
    compared with p takes about 115 us, some 6% of a whole training step of this model.
    On a GPU torch's fused kernel is faster, so it is used there. Either way the mask
    comes from torch's global generator, which checkpoints save and restore.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0.0, 1.0) or input.device.type != "cpu":
            return super().forward(input)
        scale = 1.0 / (1.0 - self.p)
        # ge_ in place leaves 1.0 or 0.0 in the uniform draw itself: the same mask as
        # `(draw >= p).to(dtype)`, without the bool tensor and its conversion (45 us a batch).
        return input * torch.rand_like(input).ge_(self.p).mul_(scale)


class TwoInputConvNet(nn.Module):
    """Conv branch over an image, concatenated with a feature vector, then an MLP.

    `Conv2d(1,1,3x3) -> ReLU -> Conv2d(1,1,3x3) -> max_pool 2 -> ReLU -> flatten`, joined
    with the vector input, then `Linear(->1024) -> ReLU -> Dropout(0.2) -> Linear(1024->256)
    -> ReLU -> Linear(256->2)`.

    Differences from the tutorial's `MyConvNet`, each a bug there: the vector input is
    really used (the tutorial accepted it and ignored it); the flattened size is computed
    from the image shape instead of the hard-coded 21; the output is logits of shape
    (N, 2) — `CrossEntropyLoss` applies log-softmax itself, so the tutorial's Sigmoid
    before it squashed the gradients.
    """

    def __init__(self, image_shape: tuple[int, int], vector_features: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, kernel_size=3)
        self.conv2 = nn.Conv2d(1, 1, kernel_size=3)
        self.fc1 = nn.Linear(conv_features(image_shape) + vector_features, 1024)
        self.dropout = Dropout(dropout)
        self.fc2 = nn.Linear(1024, 256)
        self.fc3 = nn.Linear(256, 2)

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """image (N, 1, H, W), vector (N, F) -> logits (N, 2)."""
        out = F.relu(self.conv1(image))
        out = F.max_pool2d(self.conv2(out), 2, 2)
        out = F.relu(out).flatten(1)
        out = torch.cat([out, vector], dim=1)
        out = self.dropout(F.relu(self.fc1(out)))
        out = F.relu(self.fc2(out))
        return self.fc3(out)


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over the model's parameters and buffers, for provenance and comparing runs.

    Order and encoding (stable, so the digest can be recomputed elsewhere): for each entry
    of `model.state_dict()` sorted by name, feed `name`, a NUL byte, the dtype's name (e.g.
    `float32`), the shape as comma-separated integers, a NUL byte, then the tensor's raw
    bytes in C order, little-endian, as stored on the CPU. Two runs have the same digest
    exactly when their final weights are bitwise equal.
    """
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        h.update(name.encode() + b"\0")
        h.update(str(tensor.dtype).removeprefix("torch.").encode())
        h.update(",".join(str(s) for s in tensor.shape).encode() + b"\0")
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
