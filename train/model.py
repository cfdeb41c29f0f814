"""The tutorial's network, corrected, and the fingerprint of its weights."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

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


@functools.cache
def _onednn_linear_op() -> Any:
    """torch's oneDNN linear kernel (`torch.ops.mkldnn._linear_pointwise`, what torch.compile
    emits for a CPU linear), or None where this torch lacks it or it gives wrong results.

    It is probed once per process, on first use, on fixed inputs (no random draw: the global
    generator is part of a checkpoint) and compared with `F.linear`; any error or mismatch
    means the plain path.
    """
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.arange(24, dtype=torch.float32).reshape(3, 8) / 7
        w = torch.arange(40, dtype=torch.float32).reshape(5, 8).cos()
        b = torch.arange(5, dtype=torch.float32)
        ok = torch.allclose(op(x, w, b, "none", [], ""), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        # transposed views, as the backward pass passes them
        ok = ok and torch.allclose(op(x.t(), w[:, :3], None, "none", [], ""), x.t() @ w[:, :3].t(),
                                   rtol=1e-5, atol=1e-5)
        return op if ok else None
    except Exception:  # noqa: BLE001 - a missing or broken private kernel means the plain path
        return None


def _cpu_autocast_check() -> Any:
    """`torch.is_autocast_enabled("cpu")`; torch < 2.4 spells it `is_autocast_cpu_enabled()`
    (deprecated since, with a warning at every call)."""
    try:
        torch.is_autocast_enabled("cpu")
        return lambda: torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled


_cpu_autocast = _cpu_autocast_check()


class _OneDNNLinearFunction(torch.autograd.Function):
    """`F.linear(x, weight, bias)` and its gradients, each product on oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear_op()(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad = grad.contiguous()  # see Linear: other strides take oneDNN's slow reference path
        linear = _onednn_linear_op()
        grad_x = linear(grad, weight.t(), None, "none", [], "") if need_x else None  # grad @ weight
        grad_w = linear(grad.t(), x.t(), None, "none", [], "") if need_w else None  # grad.T @ x
        grad_b = grad.sum(0) if need_b and ctx.has_bias else None
        return grad_x, grad_w, grad_b


ONEDNN_MIN_WEIGHTS = 16384
"""Smaller layers stay on MKL: oneDNN's fixed cost per product (about 14 us here) is more
than a small product takes (fc3, 256 -> 2: 2-4 us each on MKL)."""


class Linear(nn.Linear):
    """`nn.Linear` whose float32 matrix products on the CPU run on oneDNN instead of MKL.

    Same layer, same parameters, same state_dict; the products are float32 as before (only
    the order of the additions inside them differs). torch's CPU `F.linear` calls MKL's
    sgemm, which on AMD processors takes its generic AVX2 path: on the 2-core AMD EPYC test
    machine the three products of fc2 (forward, and the two of backward, 32 x 1024 x 256)
    took 180-230 us each with MKL and 105-120 us with oneDNN, and the products are about two
    thirds of this model's training step. Elsewhere (a GPU, autocast, float64, inputs that
    are not a batch of vectors, an empty batch, a layer smaller than ONEDNN_MIN_WEIGHTS, a
    torch without the kernel) it is `nn.Linear` itself.

    Every operand handed to oneDNN is contiguous or a plain transpose of a contiguous tensor
    (the input and the incoming gradient are made contiguous, a copy only where they are not):
    for other strides oneDNN takes a reference path, hundreds of times slower (a column-strided
    input made the weight gradient of fc2 take 218 ms instead of ~110 us).
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (input.device.type != "cpu" or input.dim() != 2 or input.numel() == 0  # oneDNN refuses empty products
                or self.weight.numel() < ONEDNN_MIN_WEIGHTS or not self.weight.is_contiguous()
                or input.dtype != torch.float32 or self.weight.dtype != torch.float32
                or _cpu_autocast() or _onednn_linear_op() is None):
            return super().forward(input)
        return _OneDNNLinearFunction.apply(input.contiguous(), self.weight, self.bias)


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
        self.fc1 = Linear(conv_features(image_shape) + vector_features, 1024)
        self.dropout = Dropout(dropout)
        self.fc2 = Linear(1024, 256)
        self.fc3 = Linear(256, 2)

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
