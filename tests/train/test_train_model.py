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
