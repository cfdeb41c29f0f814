"""The corrected network: shapes, logits, and both inputs really used."""

from __future__ import annotations

import pytest
import torch

from train.contract.config import conv_features
from train.model import TwoInputConvNet, weights_sha256


@pytest.mark.parametrize("shape, features", [((10, 18), 21), ((6, 6), 1), ((12, 9), 8), ((7, 30), 13)])
def test_flattened_size_follows_the_image_shape(shape: tuple[int, int], features: int) -> None:
    assert conv_features(shape) == features
    model = TwoInputConvNet(shape, vector_features=5)
    assert model.fc1.in_features == features + 5
    out = model(torch.randn(4, 1, *shape), torch.randn(4, 5))
    assert out.shape == (4, 2)


def test_output_is_logits_for_cross_entropy() -> None:
    torch.manual_seed(0)
    model = TwoInputConvNet((10, 18), 64)
    assert not any(isinstance(m, (torch.nn.Sigmoid, torch.nn.Softmax)) for m in model.modules())
    logits = model(torch.randn(64, 1, 10, 18) * 10, torch.randn(64, 64) * 10)
    loss = torch.nn.CrossEntropyLoss()(logits, torch.randint(0, 2, (64,), dtype=torch.int64))
    assert loss.isfinite()
    # Unbounded scores, not probabilities in [0, 1].
    assert (logits < 0).any() or (logits > 1).any()


def test_both_inputs_change_the_output_and_get_gradients() -> None:
    torch.manual_seed(0)
    model = TwoInputConvNet((10, 18), 16).eval()
    image = torch.randn(8, 1, 10, 18, requires_grad=True)
    vector = torch.randn(8, 16, requires_grad=True)
    out = model(image, vector)
    out.sum().backward()
    assert image.grad.abs().sum() > 0
    assert vector.grad.abs().sum() > 0
    with torch.no_grad():
        assert not torch.equal(model(image, vector + 1.0), out)
        assert not torch.equal(model(image + 1.0, vector), out)


def test_weights_sha256_is_bitwise() -> None:
    torch.manual_seed(1)
    a = TwoInputConvNet((10, 18), 8)
    torch.manual_seed(1)
    b = TwoInputConvNet((10, 18), 8)
    assert weights_sha256(a) == weights_sha256(b)
    with torch.no_grad():
        b.fc3.bias[0] = torch.nextafter(b.fc3.bias[0], torch.tensor(1.0))
    assert weights_sha256(a) != weights_sha256(b)


def test_dropout_drops_with_probability_p_and_rescales() -> None:
    from train.model import Dropout

    torch.manual_seed(0)
    layer = Dropout(0.2)
    x = torch.ones(200, 1000)
    y = layer(x)
    zeroed = float((y == 0).double().mean())
    assert abs(zeroed - 0.2) < 0.005
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.8))
    assert torch.equal(layer.eval()(x), x)
    assert Dropout(1.0).train()(x).abs().sum() == 0  # p = 1 drops everything (torch's path)


def test_linear_matches_nn_linear_and_runs_on_onednn_on_the_cpu() -> None:
    from train.model import Linear, _onednn_linear_op

    if torch.backends.mkldnn.is_available():  # the pinned CPU build has it: the fast path must be taken
        assert _onednn_linear_op() is not None
    torch.manual_seed(0)
    ours, ref = Linear(85, 1024), torch.nn.Linear(85, 1024)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == ["weight", "bias"]  # checkpoints unchanged
    x = torch.randn(32, 85)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_ref = ours(x_ours), ref(x_ref)
    if _onednn_linear_op() is not None:
        assert type(out_ours.grad_fn).__name__ == "_OneDNNLinearFunctionBackward"
    grad = torch.randn(32, 1024)
    out_ours.backward(grad)
    out_ref.backward(grad)
    close = dict(rtol=1e-5, atol=1e-5)
    assert torch.allclose(out_ours, out_ref, **close)
    assert torch.allclose(x_ours.grad, x_ref.grad, **close)
    assert torch.allclose(ours.weight.grad, ref.weight.grad, **close)
    assert torch.allclose(ours.bias.grad, ref.bias.grad, **close)
    ours.zero_grad()
    ref.zero_grad()
    ours(x).sum().backward()  # the gradient reaches the layer expanded (stride 0)
    ref(x).sum().backward()
    assert torch.allclose(ours.weight.grad, ref.weight.grad, **close)
    ours.zero_grad()
    ref.zero_grad()
    strided = torch.randn(32, 170)[:, ::2]  # a view with a column stride
    ours(strided.requires_grad_()).sum().backward()
    ref(strided).sum().backward()
    assert torch.allclose(ours.weight.grad, ref.weight.grad, **close)


def test_linear_is_bitwise_repeatable_wherever_its_inputs_lie_in_memory() -> None:
    """Exact resume compares weights bit for bit: a resumed process holds the same values
    at other addresses, so the products must not depend on alignment."""
    from train.model import Linear

    torch.manual_seed(0)
    layer = Linear(1024, 256)
    x, grad = torch.randn(32, 1024), torch.randn(32, 256)

    def run(offset: int) -> list[torch.Tensor]:
        storage = torch.zeros(x.numel() + 8)
        xs = storage[offset:offset + x.numel()].view_as(x).copy_(x).requires_grad_()
        layer.zero_grad(set_to_none=True)
        out = layer(xs)
        out.backward(grad)
        return [out.detach(), xs.grad, layer.weight.grad, layer.bias.grad]

    first = run(0)
    for offset in (0, 1, 3, 5):
        assert all(torch.equal(a, b) for a, b in zip(first, run(offset)))


def test_linear_keeps_torch_own_path_off_the_fast_case() -> None:
    from train.model import ONEDNN_MIN_WEIGHTS, Linear, _onednn_linear_op

    def backward_of(layer: torch.nn.Module, x: torch.Tensor) -> str:
        return type(layer(x.requires_grad_()).grad_fn).__name__

    layer = Linear(256, 128)
    assert layer.weight.numel() >= ONEDNN_MIN_WEIGHTS
    if _onednn_linear_op() is not None:
        assert backward_of(layer, torch.randn(3, 256)) == "_OneDNNLinearFunctionBackward"
    assert backward_of(Linear(256, 2), torch.randn(3, 256)) == "AddmmBackward0"  # small: MKL is faster
    assert backward_of(layer.double(), torch.randn(3, 256, dtype=torch.float64)) == "AddmmBackward0"
    layer.float()
    assert layer(torch.randn(2, 3, 256)).shape == (2, 3, 128)  # not a batch of vectors: torch's path
    empty = torch.randn(0, 256, requires_grad=True)  # a DDP rank left without samples by the last batch
    layer(empty).sum().backward()
    assert layer.weight.grad is not None and not layer.weight.grad.any()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(3, 256)).dtype == torch.bfloat16  # autocast still applies
