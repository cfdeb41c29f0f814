"""The train: section: defaults, round trip, and one clear message per mistake."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cluster.errors import SpecError
from train.contract.config import CheckpointConfig, DataConfig, SamplerConfig, TrainConfig, conv_features


def error(d: dict, prefix: str = "train") -> SpecError:
    with pytest.raises(SpecError) as info:
        TrainConfig.from_dict(d, prefix)
    return info.value


def test_missing_section_gives_defaults() -> None:
    assert TrainConfig.from_dict(None) == TrainConfig() == TrainConfig.from_dict({})
    c = TrainConfig()
    assert (c.seed, c.epochs, c.batch_size, c.lr, c.device, c.threads) == (0, 30, 32, 0.001, "auto", None)
    assert (c.sampler.positive_weight, c.sampler.negative_weight) == (0.85, 0.1)
    assert c.data.image_shape == (10, 18) and conv_features(c.data.image_shape) == 21


@pytest.mark.parametrize(
    "d",
    [
        {},
        {"seed": 3, "epochs": 2, "lr": 0.01, "device": "cuda:1", "sampler": {"balanced": True}},
        {"threads": 3},
        {"threads": None},
        {"data": {"source": "npz", "path": "data/p.npz", "keys": {"image": "a", "vector": "b", "label": "c"}}},
        {"checkpoint": {"every_steps": 50, "every_minutes": 0, "keep": 5, "deadline_margin_seconds": 30}},
    ],
)
def test_to_dict_round_trips(d: dict) -> None:
    config = TrainConfig.from_dict(d)
    plain = config.to_dict()
    assert TrainConfig.from_dict(plain) == config
    import yaml

    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(plain))) == config


def test_sampler_forms_are_equivalent() -> None:
    simple = SamplerConfig.from_dict({"positive_weight": 0.85, "negative_weight": 0.1})
    assert SamplerConfig.from_dict({"class_weights": {0: 0.1, 1: 0.85}}) == simple
    assert SamplerConfig.from_dict({"class_weights": {"0": 0.1, "1": 0.85}}) == simple
    assert SamplerConfig.from_dict({}) == simple
    assert SamplerConfig.from_dict({"positive_weight": 0.5}).negative_weight == 0.1
    assert SamplerConfig.from_dict({"balanced": True}).to_dict() == {"balanced": True}


def test_yaml_loose_types_are_accepted() -> None:
    config = TrainConfig.from_dict({"lr": "1e-3", "data": {"image_shape": [12, 12], "positive_fraction": "0.2"}})
    assert config.lr == 0.001 and config.data.image_shape == (12, 12) and config.data.positive_fraction == 0.2
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0


@pytest.mark.parametrize(
    "d, key, message",
    [
        ({"data": {"samples": -3}}, "train.data.samples", "must be a positive integer (got -3)"),
        ({"data": {"samples": 0}}, "train.data.samples", "must be a positive integer (got 0)"),
        ({"data": {"source": "npz", "path": "data/arrays.NPY"}}, "train.data.path",
         "is a .npy file (a single array; got 'data/arrays.NPY'): source: npz reads a .npz archive"),
        ({"epochs": 0}, "train.epochs", "must be a positive integer (got 0)"),
        ({"threads": 0}, "train.threads", "must be a positive integer, or null to choose automatically (got 0)"),
        ({"threads": "4"}, "train.threads", "must be a positive integer, or null to choose automatically (got '4')"),
        ({"threads": 1.5}, "train.threads", "(got 1.5)"),
        ({"epochs": True}, "train.epochs", "must be a positive integer (got True)"),
        ({"batch_size": 2.5}, "train.batch_size", "must be a positive integer (got 2.5)"),
        ({"lr": "fast"}, "train.lr", "must be a positive number (got 'fast')"),
        ({"lr": -0.1}, "train.lr", "must be a positive number (got -0.1)"),
        ({"device": "gpu"}, "train.device", "must be auto, cpu, cuda or cuda:N (got 'gpu')"),
        ({"data": {"source": "csv"}}, "train.data.source", "must be one of synthetic, npz (got 'csv')"),
        ({"data": {"source": "npz"}}, "train.data.path", "is required with source: npz"),
        ({"data": {"source": "npz", "path": "x.npz", "samples": 10}}, "train.data.samples", "is only used with source: synthetic"),
        ({"data": {"path": "x.npz"}}, "train.data.path", "is only used with source: npz"),
        ({"data": {"image_shape": [5, 18]}}, "train.data.image_shape", "each at least 6 (got [5, 18])"),
        ({"data": {"positive_fraction": 1.5}}, "train.data.positive_fraction", "between 0 and 1"),
        ({"data": {"samples": 10}}, "train.data.samples", "at least 2 samples of each class"),
        ({"data": {"val_fraction": 0}}, "train.data.val_fraction", "between 0 and 1"),
        ({"data": {"keys": {"image": "x", "vector": "x"}}}, "train.data.keys", "only used with source: npz"),
        ({"sampler": {"positive_weight": 0}}, "train.sampler.positive_weight", "must be a positive number (got 0.0)"),
        ({"sampler": {"balanced": True, "negative_weight": 1}}, "train.sampler.balanced", "drop negative_weight"),
        ({"sampler": {"class_weights": {2: 1.0}}}, "train.sampler.class_weights.2", "unknown class (valid: 0, 1)"),
        ({"sampler": {"class_weights": {1: 1.0}, "positive_weight": 1}}, "train.sampler.class_weights", "not both"),
        ({"sampler": {"balanced": "yes"}}, "train.sampler.balanced", "must be true or false"),
        ({"checkpoint": {"keep": 1}}, "train.checkpoint.keep", "at least 2 (got 1): the newest checkpoint may be cut short"),
        ({"checkpoint": {"every_steps": -1}}, "train.checkpoint.every_steps", "non-negative integer"),
        ({"data": [1, 2]}, "train.data", "must be a mapping"),
    ],
)
def test_errors_name_the_key_and_what_is_allowed(d: dict, key: str, message: str) -> None:
    err = error(d)
    assert err.key == key
    assert message in err.message


def test_unknown_keys_list_the_valid_ones() -> None:
    err = error({"epoch": 3})
    assert err.key == "train.epoch"
    assert err.message == ("unknown key (valid: seed, epochs, batch_size, lr, device, threads, data, sampler, checkpoint, task, options, "
                           "optimizer, lr_schedule, grad_clip, precision, tensorboard)")
    err = error({"data": {"smaples": 3}})
    assert err.key == "train.data.smaples" and "samples" in err.message and "vector_features" in err.message
    err = error({"sampler": {"weight": 3}})
    assert err.message == "unknown key (valid: positive_weight, negative_weight, class_weights, balanced)"


def test_prefix_is_used_for_nested_keys() -> None:
    assert error({"data": {"samples": 0}}, prefix="sweep.train").key == "sweep.train.data.samples"
    assert error({"checkpoint": {"keep": 1}}, prefix="x").key == "x.checkpoint.keep"


def test_direct_construction_is_validated() -> None:
    with pytest.raises(SpecError, match="train.checkpoint.keep"):
        CheckpointConfig(keep=1)
    with pytest.raises(SpecError, match="train.data.samples"):
        DataConfig(samples=0)


def test_config_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys, train, train.contract, train.contract.config, train.runfiles; "
        "bad = [m for m in ('torch', 'numpy', 'yaml') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- absurd sizes: refused at validation (on the login node, by `cluster check`) ----------------

HUGE = 10**5000  # str() of it raises ValueError in Python 3.11+


@pytest.mark.parametrize(
    "d, key, message",
    [
        ({"seed": 2**63}, "train.seed", "must be at most 2**63 - 1 (got 9223372036854775808): torch and numpy take 64-bit seeds"),
        ({"seed": HUGE}, "train.seed", "must be at most 2**63 - 1 (got <an integer of about 5001 digits>)"),
        ({"seed": -HUGE}, "train.seed", "must be a non-negative integer (got <an integer of about 5001 digits>)"),
        ({"epochs": 10**6 + 1}, "train.epochs", "must be at most 10**6 (got 1000001)"),
        ({"data": {"samples": 10**8 + 1}}, "train.data.samples", "must be at most 10**8 (got 100000001)"),
        ({"data": {"image_shape": [10, 4097]}}, "train.data.image_shape", "must be at most 4096 on each side (got 4097)"),
        ({"data": {"image_shape": [HUGE, 10]}}, "train.data.image_shape", "(got <an integer of about 5001 digits>)"),
        ({"data": {"samples": 10**6, "image_shape": [100, 100]}}, "train.data.image_shape",
         "100x100 images x 1000000 samples = 10000000000 pixels, more than 2**31: the synthetic images alone would "
         "need 37 GiB of memory (float32)"),
        ({"data": {"vector_features": 65537}}, "train.data.vector_features", "must be at most 65536 (got 65537)"),
        ({"data": {"vector_features": HUGE}}, "train.data.vector_features", "(got <an integer of about 5001 digits>)"),
    ],
)
def test_absurd_sizes_are_refused(d: dict, key: str, message: str) -> None:
    err = error(d)
    assert err.key == key
    assert message in err.message
    assert len(str(err)) < 300


def test_the_largest_sizes_are_accepted() -> None:
    config = TrainConfig.from_dict({"seed": 2**63 - 1, "epochs": 10**6,
                                    "data": {"samples": 2**31 // (4096 * 8), "image_shape": [4096, 8],
                                             "vector_features": 65536}})
    assert config.seed == 2**63 - 1 and config.data.vector_features == 65536


@pytest.mark.parametrize(
    "d, key",
    [
        ({"device": "x" * 100_000}, "train.device"),
        ({"data": {"source": "s" * 100_000}}, "train.data.source"),
        ({"data": {"image_shape": [1] * 100_000}}, "train.data.image_shape"),
        ({"data": {"image_shape": [HUGE] * 3}}, "train.data.image_shape"),
        ({"data": {"source": "npz", "path": "p" * 100_000 + ".npy"}}, "train.data.path"),
        ({"data": {"source": "npz", "path": "a.npz", "keys": {"image": "k" * 100_000, "vector": "k" * 100_000}}},
         "train.data.keys"),
        ({"lr": "f" * 100_000}, "train.lr"),
        ({"sampler": {"class_weights": {HUGE: 1.0}}}, None),
        ({"k" * 100_000: 1}, None),
        ({HUGE: 1}, None),
    ],
)
def test_echoed_values_are_cut(d: dict, key: str | None) -> None:
    err = error(d)
    if key is not None:
        assert err.key == key
    assert len(err.key) < 120 and len(err.message) < 300, str(err)[:400]
    assert "..." in str(err) or "digits>" in str(err)
