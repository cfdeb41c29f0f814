"""Data: the synthetic set, npz loading and its one-line errors, the split and the sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from train.contract.config import DataConfig, NpzKeys, SamplerConfig
from train.data import DataError, EpochSampler, class_weights, load_npz, stratified_split, synthetic


def test_synthetic_is_deterministic_and_imbalanced() -> None:
    config = DataConfig(samples=1000, positive_fraction=0.1, image_shape=(10, 18), vector_features=7)
    a, b = synthetic(config, seed=3), synthetic(config, seed=3)
    assert a.sha256() == b.sha256()
    assert synthetic(config, seed=4).sha256() != a.sha256()
    assert a.image.shape == (1000, 1, 10, 18) and a.image.dtype == np.float32
    assert a.vector.shape == (1000, 7) and a.vector.dtype == np.float32
    assert a.label.shape == (1000,) and a.label.dtype == np.int64
    assert a.label.sum() == 100


def test_stratified_split_keeps_the_class_ratio() -> None:
    label = np.zeros(1000, dtype=np.int64)
    label[::10] = 1
    train, val = stratified_split(label, 0.2, seed=0)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 1000
    assert label[val].sum() == 20 and label[train].sum() == 80
    again = stratified_split(label, 0.2, seed=0)
    assert np.array_equal(again[0], train)
    # Even a tiny class lands on both sides.
    label = np.array([0] * 50 + [1] * 2)
    train, val = stratified_split(label, 0.1, seed=0)
    assert label[train].sum() == 1 and label[val].sum() == 1


# --- the sampler ----------------------------------------------------------------------------


def test_epoch_draw_is_exactly_weighted_random_sampler() -> None:
    label = (np.arange(500) % 10 == 0).astype(np.int64)
    sampler = EpochSampler(label, (0.1, 0.85), seed=0, batch_size=32)
    ours = sampler.draw(torch.Generator().manual_seed(123))
    weights = [0.85 if y == 1 else 0.1 for y in label]
    theirs = list(WeightedRandomSampler(weights, len(label), replacement=True, generator=torch.Generator().manual_seed(123)))
    assert ours.tolist() == theirs


def test_sampled_class_frequencies_match_the_weights() -> None:
    # 10% positives weighted 0.85 vs 0.1: a positive is drawn with p = 85 / (85 + 90).
    label = (np.arange(2000) % 10 == 0).astype(np.int64)
    sampler = EpochSampler(label, (0.1, 0.85), seed=7, batch_size=32)
    draws = torch.cat([sampler.draw(sampler.generator(epoch)) for epoch in range(20)])
    n = len(draws)
    positives = int(torch.from_numpy(label)[draws].sum())
    p = 0.85 * 200 / (0.85 * 200 + 0.1 * 1800)
    expected = np.array([n * (1 - p), n * p])
    observed = np.array([n - positives, positives])
    chi2 = (((observed - expected) ** 2) / expected).sum()
    assert chi2 < 10.83  # 1 degree of freedom, p = 0.001
    # And every sample of a class is equally likely: no index outside the data, all reachable.
    counts = torch.bincount(draws, minlength=2000)
    assert counts.numel() == 2000 and (counts[::10] > 0).all()


def test_balanced_weights_draw_classes_equally() -> None:
    label = (np.arange(2000) % 10 == 0).astype(np.int64)
    weights = class_weights(SamplerConfig(balanced=True), label)
    assert weights == pytest.approx((1 / 1800, 1 / 200))
    sampler = EpochSampler(label, weights, seed=0, batch_size=32)
    draws = torch.cat([sampler.draw(sampler.generator(e)) for e in range(10)])
    share = float(torch.from_numpy(label)[draws].double().mean())
    assert abs(share - 0.5) < 0.02


def test_epoch_draws_are_reproducible_from_the_seed() -> None:
    label = (np.arange(300) % 3 == 0).astype(np.int64)
    a = EpochSampler(label, (1.0, 2.0), seed=5, batch_size=32)
    b = EpochSampler(label, (1.0, 2.0), seed=5, batch_size=32)
    assert torch.equal(a.draw(a.generator(4)), b.draw(b.generator(4)))
    assert not torch.equal(a.draw(a.generator(4)), a.draw(a.generator(5)))
    c = EpochSampler(label, (1.0, 2.0), seed=6, batch_size=32)
    assert not torch.equal(a.draw(a.generator(0)), c.draw(c.generator(0)))


def test_batches_cover_the_epoch_and_split_across_ranks() -> None:
    label = np.zeros(100, dtype=np.int64)
    label[:10] = 1
    sampler = EpochSampler(label, (1.0, 1.0), seed=0, batch_size=32)
    assert sampler.steps_per_epoch == 4
    indices = sampler.draw(sampler.generator(0))
    batches = [sampler.batch(indices, s) for s in range(4)]
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat(batches), indices)
    shares = [sampler.batch(indices, 1, rank=r, world_size=2) for r in range(2)]
    assert sorted(torch.cat(shares).tolist()) == sorted(batches[1].tolist())


# --- npz -----------------------------------------------------------------------------------


def write_npz(path: Path, n: int = 40, **arrays: np.ndarray) -> DataConfig:
    rng = np.random.default_rng(0)
    label = np.array([1] * 5 + [0] * (n - 5))
    base = {"x1": rng.standard_normal((n, 10, 18)), "x2": rng.standard_normal((n, 6)), "y": label}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return DataConfig(source="npz", path=str(path))


def test_npz_loads_in_training_layout(tmp_path: Path) -> None:
    config = write_npz(tmp_path / "d.npz")
    arrays = load_npz(config)
    assert arrays.image.shape == (40, 1, 10, 18) and arrays.image.dtype == np.float32
    assert arrays.vector.shape == (40, 6) and arrays.label.dtype == np.int64
    # (N, 1, H, W) images, (N, 1) labels, bool labels and custom key names work too.
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "e.npz",
        img=rng.standard_normal((40, 1, 8, 8)),
        vec=rng.standard_normal((40, 3)),
        lab=(np.arange(40) < 4).reshape(40, 1),
    )
    config = DataConfig(source="npz", path="e.npz", keys=NpzKeys(image="img", vector="vec", label="lab"))
    arrays = load_npz(config, cwd=tmp_path)
    assert arrays.image_shape == (8, 8) and arrays.vector_features == 3 and arrays.label.sum() == 4


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x1": None}, "no array 'x1' for the image (train.data.keys.image); the file has: x2, y"),
        ({"x1": np.zeros((40, 10))}, "array 'x1' (image) must have shape (N, H, W) or (N, 1, H, W) (got (40, 10))"),
        ({"x1": np.zeros((40, 5, 18))}, "images in 'x1' are 5x18; at least 6x6 is needed"),
        ({"x2": np.zeros(40)}, "array 'x2' (vector) must have shape (N, F) with F >= 1 (got (40,))"),
        ({"y": np.zeros((40, 2))}, "array 'y' (label) must have shape (N,) (got (40, 2))"),
        ({"x2": np.zeros((39, 6))}, "arrays differ in length: x1 has 40, x2 has 39, y has 40"),
        ({"y": np.array([2] + [0] * 39)}, "array 'y' (label) must hold only 0 and 1; sample 0 is 2"),
        ({"y": np.array([0.5] * 40)}, "must hold only 0 and 1; sample 0 is 0.5"),
        ({"y": np.zeros(40, dtype=np.int64)}, "need at least 2 samples of each class"),
        ({"x1": np.where(np.arange(40)[:, None, None] == 7, np.nan, np.ones((40, 10, 18)))},
         "array 'x1' (image) has NaN or infinite values in 1 samples (first: sample 7)"),
        ({"x2": np.full((40, 6), np.inf)}, "array 'x2' (vector) has NaN or infinite values in 40 samples (first: sample 0)"),
        ({"x2": np.where(np.arange(40)[:, None] == 3, 1e300, np.zeros((40, 6)))},
         "array 'x2' (vector) has NaN or infinite values in 1 samples (first: sample 3)"),
        ({"x1": np.array(["a"] * 40)}, "array 'x1' (image) must be numeric (got dtype <U1)"),
        # A cast to float32 would silently drop the imaginary part, or make numbers of durations.
        ({"x1": np.ones((40, 10, 18)) + 1j}, "array 'x1' (image) is complex (dtype complex128); only real numbers"),
        ({"x2": np.ones((40, 6), dtype=np.complex64)}, "array 'x2' (vector) is complex (dtype complex64)"),
        ({"y": np.zeros(40, dtype=complex)}, "array 'y' (label) is complex"),
        ({"x2": np.zeros((40, 6), dtype="m8[s]")}, "array 'x2' (vector) must be numeric (got dtype timedelta64[s])"),
        ({"x1": np.zeros((0, 10, 18)), "x2": np.zeros((0, 6)), "y": np.zeros(0, dtype=np.int64)},
         "arrays x1, x2, y have no samples (0 rows)"),
    ],
)
def test_npz_errors_are_one_clear_line(tmp_path: Path, arrays: dict, message: str) -> None:
    config = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_npz(config)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(tmp_path / "bad.npz") + ": ")
    assert message in text


def test_npz_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_npz(DataConfig(source="npz", path=str(tmp_path / "missing.npz")))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_npz(DataConfig(source="npz", path=str(tmp_path / "junk.npz")))
    # Object arrays would need unpickling, which we never do.
    np.savez(tmp_path / "obj.npz", x1=np.array([{"a": 1}] * 3, dtype=object), x2=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match="not a readable .npz file") as info:
        load_npz(DataConfig(source="npz", path=str(tmp_path / "obj.npz")))
    assert "pickled objects, which are never loaded" in str(info.value) and "allow_pickle" not in str(info.value)
    # A pickle is not unpickled either, whatever numpy would suggest.
    import pickle

    (tmp_path / "pickled.npz").write_bytes(pickle.dumps({"x1": [1, 2]}))
    with pytest.raises(DataError, match="not a readable .npz file") as info:
        load_npz(DataConfig(source="npz", path=str(tmp_path / "pickled.npz")))
    assert "allow_pickle" not in str(info.value)
    # A .npy (one array) under a .npz name: refused with what to do instead.
    np.save(tmp_path / "one.npy", np.zeros((40, 10, 18)))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(DataError) as info:
        load_npz(DataConfig(source="npz", path=str(tmp_path / "one.npz")))
    assert str(info.value) == (f"{tmp_path / 'one.npz'}: is a .npy file (a single array); source: npz needs a .npz "
                               "archive holding the image, vector and label arrays (numpy.savez)")
