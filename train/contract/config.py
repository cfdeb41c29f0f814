"""The `train:` section of a job spec, as frozen dataclasses.

This module imports only the standard library (and the contract's error type): the
login node imports it through `cluster check` to validate a spec without torch.

Every field carries a docstring; every rule that is not obvious from the type says why it
exists in its error message. `TrainConfig.from_dict` is the one way in from YAML: it turns
YAML's loose types into the exact ones (an int where a float is meant, a list where a
tuple is meant) and reports mistakes as `SpecError(dotted.key, message)`. Constructing the
dataclasses directly in code runs the same checks in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from train.contract import SpecError
from train.contract.record import Record
from train.contract.task import DEFAULT_TASK, CheckedOptions, options_to_dict, resolve_task
from train.contract.task_probe import find_task, task_options

DEVICES = ("auto", "cpu", "cuda")
"""`train.device`: one of these, or `cuda:N` (N in ASCII digits; see `is_device`)."""


def is_device(value: Any) -> bool:
    """`auto`, `cpu`, `cuda` or `cuda:N`, exactly (no trailing newline, no non-ASCII digit)."""
    if not isinstance(value, str):
        return False
    index = value[5:] if value.startswith("cuda:") else None
    return value in DEVICES or (index is not None and index.isascii() and index.isdigit())

DATA_SOURCES = ("synthetic", "npz")

# The two 3x3 convolutions (no padding) take 4 off each side length and the 2x2 max
# pooling then halves it, so an image needs at least 6x6 pixels to leave one feature.
MIN_IMAGE_SIDE = 6


def conv_features(image_shape: tuple[int, int]) -> int:
    """Number of features the convolutional branch produces for an image of this shape.

    (H, W) -> two valid 3x3 convolutions -> (H-4, W-4) -> 2x2 max pool -> floor halves.
    The tutorial's 10x18 image gives 3 * 7 = 21.
    """
    height, width = image_shape
    return ((height - 4) // 2) * ((width - 4) // 2)


# The largest values accepted (the login node checks them in `cluster check`): beyond these
# a run would not fit in memory or a seed would not fit torch's and numpy's 64 bits.
MAX_SEED = 2**63 - 1
MAX_EPOCHS = 10**6
MAX_SAMPLES = 10**8
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_ELEMENTS = 2**31
"""image height x width x samples: the synthetic images alone are float32, 4 bytes each."""
MAX_VECTOR_FEATURES = 65536

MAX_ECHO = 70
"""Longest value quoted back in a message (a spec can hold a megabyte-long string): cut as
`cluster check` cuts the values it shows (cluster.spec._show), so both say the same."""


# --- small checkers: each returns nothing and raises SpecError naming the full key ---------


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 3] + "..."


def _short(value: Any, budget: int) -> str:
    """str() of a value (repr() of a string), stopped once it is surely longer than `budget`.

    Bounded in time and memory: str() of an int of more than 4,300 digits raises (Python
    3.11+), YAML reads any run of digits as one int, and a list may hold a million items.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 3 * budget + 8:
            return f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
        return str(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= budget else repr(value[:budget])[:-1]
    if isinstance(value, (list, tuple)):
        out, used = [], 1
        for item in value:
            if used > budget:
                out.append("...")
                break
            out.append(_short(item, budget - used))
            used += len(out[-1]) + 2
        return "[" + ", ".join(out) + "]"
    return str(value)[: budget + 1]


def _text(value: Any) -> str:
    """`value` (a key: str() of it) in at most `MAX_ECHO` characters."""
    return _cut(value if isinstance(value, str) else _short(value, MAX_ECHO + 1))


def _describe(value: Any) -> str:
    """`value` as a message quotes it (a string in quotes), in at most `MAX_ECHO` characters."""
    return _cut(_short(value, MAX_ECHO + 1))


def _check_at_most(key: str, value: int, maximum: int, shown: str, why: str) -> None:
    """After the type check: refuse an absurd size before anything allocates it."""
    if value > maximum:
        raise SpecError(key, f"must be at most {shown} (got {_describe(value)}): {why}")


def _check_int(key: str, value: Any, *, minimum: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(key, f"must be {what} (got {_describe(value)})")


def _check_number(key: str, value: Any, *, positive: bool, what: str) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if not ok:
        raise SpecError(key, f"must be {what} (got {_describe(value)})")


def _as_float(value: Any) -> Any:
    """YAML-friendly float: ints become floats, and so do numeric strings.

    PyYAML follows YAML 1.1, which reads `1e-3` (no dot) as the *string* "1e-3"; accepting
    it here spares users a confusing type error. Anything else is returned unchanged for
    the checker to reject.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_keys(prefix: str, d: Mapping, valid: list[str]) -> None:
    for k in d:
        if k not in valid:
            raise SpecError(f"{prefix}.{_text(k)}", f"unknown key (valid: {', '.join(valid)})")


def _mapping(prefix: str, d: Any) -> Mapping:
    """A missing or empty section means "all defaults"; anything but a mapping is an error."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise SpecError(prefix, f"must be a mapping of keys to values (got {type(d).__name__})")
    return d


def _build(cls: type, kwargs: dict, prefix: str, default_prefix: str) -> Any:
    """Construct a config class; re-key the errors its __post_init__ raises under `prefix`.

    __post_init__ cannot know where in a document the section sits, so it names keys under
    the default prefix; from_dict knows the real one.
    """
    try:
        return cls(**kwargs)
    except SpecError as err:
        key = err.key
        if key == default_prefix or key.startswith(default_prefix + "."):
            key = prefix + key[len(default_prefix) :]
        raise SpecError(key, err.message, err.file) from None


# --- the sections ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class NpzKeys(Record):
    """Names of the three arrays inside a user's `.npz` file."""

    image: str = "x1"
    """Array of images, shape (N, H, W) or (N, 1, H, W): the tutorial's `train_feature_1`."""

    vector: str = "x2"
    """Array of feature vectors, shape (N, F): the tutorial's "DCGR features"."""

    label: str = "y"
    """Array of labels, shape (N,), values 0 (negative) or 1 (positive)."""

    def __post_init__(self) -> None:
        self.validate("train.data.keys")

    def validate(self, prefix: str) -> None:
        names = dataclasses.asdict(self)
        for name, value in names.items():
            if not isinstance(value, str) or not value:
                raise SpecError(f"{prefix}.{name}", f"must be a non-empty string (got {_describe(value)})")
        if len(set(names.values())) != len(names):
            shown = ", ".join(f"{k}: {_describe(v)}" for k, v in names.items())
            raise SpecError(prefix, f"image, vector and label must name three different arrays (got {shown})")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "train.data.keys") -> NpzKeys:
        d = _mapping(prefix, d)
        _check_keys(prefix, d, [f.name for f in dataclasses.fields(cls)])
        return _build(cls, dict(d), prefix, "train.data.keys")


@dataclass(frozen=True, eq=False, repr=False)
class DataConfig(Record):
    """Where the training data comes from and how it is split."""

    source: str = "synthetic"
    """`synthetic` (a deterministic generated data set with a learnable signal) or `npz`
    (the user's arrays from `path`)."""

    samples: int = 4000
    """synthetic only: number of samples generated (training + validation)."""

    positive_fraction: float = 0.1
    """synthetic only: share of positive (label 1) samples; the tutorial's data is
    imbalanced at about 10%."""

    image_shape: tuple[int, int] = (10, 18)
    """synthetic only: (height, width) of each image. 10x18 gives the tutorial's 21
    convolutional features. For npz data the shape is read from the file."""

    vector_features: int = 64
    """synthetic only: length of each feature vector (the second input). For npz data the
    length is read from the file."""

    path: str | None = None
    """npz only: the `.npz` file. A relative path is resolved against the working
    directory of the training process."""

    keys: NpzKeys = field(default_factory=NpzKeys)
    """npz only: names of the image, vector and label arrays in the file."""

    val_fraction: float = 0.2
    """Share of each class held out for validation (a stratified split, so the rare class
    is represented in both parts)."""

    def __post_init__(self) -> None:
        self.validate("train.data")

    def validate(self, prefix: str) -> None:
        if self.source not in DATA_SOURCES:
            raise SpecError(f"{prefix}.source", f"must be one of {', '.join(DATA_SOURCES)} (got {_describe(self.source)})")
        _check_number(f"{prefix}.val_fraction", self.val_fraction, positive=True, what="a number between 0 and 1")
        if not self.val_fraction < 1:
            raise SpecError(f"{prefix}.val_fraction", f"must be a number between 0 and 1 (got {self.val_fraction})")
        if not isinstance(self.keys, NpzKeys):
            raise SpecError(f"{prefix}.keys", "must be a mapping with image, vector and label")
        if self.source == "npz":
            if not isinstance(self.path, str) or not self.path:
                raise SpecError(f"{prefix}.path", "is required with source: npz (the .npz file to read)")
            if self.path.lower().endswith(".npy"):
                raise SpecError(f"{prefix}.path", f"is a .npy file (a single array; got {_describe(self.path)}): source: npz reads "
                                                  "a .npz archive holding the image, vector and label arrays (numpy.savez)")
            return
        if self.path is not None:
            raise SpecError(f"{prefix}.path", "is only used with source: npz (source is synthetic)")
        _check_int(f"{prefix}.samples", self.samples, minimum=1, what="a positive integer")
        _check_at_most(f"{prefix}.samples", self.samples, MAX_SAMPLES, "10**8",
                       "the synthetic data set is generated in memory")
        _check_number(f"{prefix}.positive_fraction", self.positive_fraction, positive=True, what="a number between 0 and 1")
        if not self.positive_fraction < 1:
            raise SpecError(f"{prefix}.positive_fraction", f"must be a number between 0 and 1 (got {self.positive_fraction})")
        shape = self.image_shape
        if (
            not isinstance(shape, tuple)
            or len(shape) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s < MIN_IMAGE_SIDE for s in shape)
        ):
            raise SpecError(
                f"{prefix}.image_shape",
                f"must be [height, width], each at least {MIN_IMAGE_SIDE} (got {_describe(shape)}): "
                "two 3x3 convolutions and a 2x2 pooling must leave at least one feature",
            )
        for side in shape:
            _check_at_most(f"{prefix}.image_shape", side, MAX_IMAGE_SIDE, f"{MAX_IMAGE_SIDE} on each side",
                           "the model is sized for small images")
        elements = shape[0] * shape[1] * self.samples
        if elements > MAX_IMAGE_ELEMENTS:
            raise SpecError(
                f"{prefix}.image_shape",
                f"{shape[0]}x{shape[1]} images x {self.samples} samples = {elements} pixels, more than 2**31: the "
                f"synthetic images alone would need {elements * 4 / 2**30:.0f} GiB of memory (float32)",
            )
        _check_int(f"{prefix}.vector_features", self.vector_features, minimum=1, what="a positive integer")
        _check_at_most(f"{prefix}.vector_features", self.vector_features, MAX_VECTOR_FEATURES, str(MAX_VECTOR_FEATURES),
                       "the model's first layer takes them all")
        # The stratified split puts at least one sample of each class on each side, and the
        # sampler needs both classes in training: two of each is the least that works.
        positives = round(self.samples * self.positive_fraction)
        if positives < 2 or self.samples - positives < 2:
            raise SpecError(
                f"{prefix}.samples",
                f"must give at least 2 samples of each class (samples {self.samples} x positive_fraction "
                f"{self.positive_fraction} = {positives} positives): the split needs each class on both sides",
            )

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "train.data") -> DataConfig:
        d = dict(_mapping(prefix, d))
        valid = [f.name for f in dataclasses.fields(cls)]
        _check_keys(prefix, d, valid)
        source = d.get("source", "synthetic")
        only = {"npz": ("path", "keys"), "synthetic": ("samples", "positive_fraction", "image_shape", "vector_features")}
        for src, names in only.items():
            for name in names:
                if name in d and source != src and source in DATA_SOURCES:
                    raise SpecError(f"{prefix}.{name}", f"is only used with source: {src} (source is {source})")
        for name in ("positive_fraction", "val_fraction"):
            if name in d:
                d[name] = _as_float(d[name])
        if "image_shape" in d and isinstance(d["image_shape"], list):
            d["image_shape"] = tuple(d["image_shape"])
        if "keys" in d:
            d["keys"] = NpzKeys.from_dict(d["keys"], f"{prefix}.keys")
        return _build(cls, d, prefix, "train.data")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"source": self.source}
        if self.source == "synthetic":
            out.update(
                samples=self.samples,
                positive_fraction=self.positive_fraction,
                image_shape=list(self.image_shape),
                vector_features=self.vector_features,
            )
        else:
            out.update(path=self.path, keys=dataclasses.asdict(self.keys))
        out["val_fraction"] = self.val_fraction
        return out


@dataclass(frozen=True, eq=False, repr=False)
class SamplerConfig(Record):
    """Per-class weights of the weighted random sampler (draws with replacement).

    Three ways to write it in YAML: `{positive_weight: 0.85, negative_weight: 0.1}` (the
    tutorial's values, and the default), the equivalent `{class_weights: {0: 0.1, 1: 0.85}}`,
    or `{balanced: true}` for inverse class frequency (each class drawn equally often).
    Only the ratio of the two weights matters.
    """

    positive_weight: float = 0.85
    """Sampling weight of each positive (label 1) training sample."""

    negative_weight: float = 0.1
    """Sampling weight of each negative (label 0) training sample."""

    balanced: bool = False
    """Weight each class by the inverse of its frequency in the training split instead of
    by the two weights above."""

    def __post_init__(self) -> None:
        self.validate("train.sampler")

    def validate(self, prefix: str) -> None:
        for name in ("positive_weight", "negative_weight"):
            _check_number(f"{prefix}.{name}", getattr(self, name), positive=True, what="a positive number")
        if not isinstance(self.balanced, bool):
            raise SpecError(f"{prefix}.balanced", f"must be true or false (got {_describe(self.balanced)})")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "train.sampler") -> SamplerConfig:
        d = dict(_mapping(prefix, d))
        _check_keys(prefix, d, ["positive_weight", "negative_weight", "class_weights", "balanced"])
        if "class_weights" in d:
            for name in ("positive_weight", "negative_weight"):
                if name in d:
                    raise SpecError(
                        f"{prefix}.class_weights", f"give either class_weights or {name}, not both (they say the same thing)"
                    )
            weights = _mapping(f"{prefix}.class_weights", d.pop("class_weights"))
            by_class: dict[int, Any] = {}
            for k, v in weights.items():
                label = {0: 0, 1: 1, "0": 0, "1": 1}.get(k) if not isinstance(k, bool) else None
                if label is None:
                    raise SpecError(f"{prefix}.class_weights.{_text(k)}", "unknown class (valid: 0, 1)")
                by_class[label] = v
            if 0 in by_class:
                d["negative_weight"] = by_class[0]
            if 1 in by_class:
                d["positive_weight"] = by_class[1]
        if d.get("balanced") is True:
            for name in ("positive_weight", "negative_weight"):
                if name in d:
                    raise SpecError(f"{prefix}.balanced", f"balanced: true computes the weights; drop {name} or set balanced: false")
        for name in ("positive_weight", "negative_weight"):
            if name in d:
                d[name] = _as_float(d[name])
        return _build(cls, d, prefix, "train.sampler")

    def to_dict(self) -> dict:
        if self.balanced:
            return {"balanced": True}
        return {"positive_weight": self.positive_weight, "negative_weight": self.negative_weight}


@dataclass(frozen=True, eq=False, repr=False)
class CheckpointConfig(Record):
    """When checkpoints are written and how many are kept.

    A checkpoint is always written at the end of each epoch and when the job is asked to
    stop (SIGUSR2/SIGTERM, or its walltime is near); these settings add periodic ones.
    """

    every_steps: int = 0
    """Also checkpoint every this many optimizer steps; 0 turns this off."""

    every_minutes: float = 10.0
    """Also checkpoint when this many minutes have passed since the last checkpoint; 0
    turns this off. Bounds the work lost to a crash that gives no warning."""

    keep: int = 3
    """Number of rotating checkpoints kept (`best.pt` and `final.pt` come on top)."""

    deadline_margin_seconds: float = 10.0
    """The least time before the walltime deadline at which the job checkpoints and exits
    for requeue. The trainer widens it from measured step, validation and checkpoint times
    (see `Trainer.deadline_margin`)."""

    def __post_init__(self) -> None:
        self.validate("train.checkpoint")

    def validate(self, prefix: str) -> None:
        _check_int(f"{prefix}.every_steps", self.every_steps, minimum=0, what="a non-negative integer (0 = off)")
        _check_number(f"{prefix}.every_minutes", self.every_minutes, positive=False, what="a non-negative number (0 = off)")
        _check_number(f"{prefix}.deadline_margin_seconds", self.deadline_margin_seconds, positive=False, what="a non-negative number")
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 2:
            raise SpecError(
                f"{prefix}.keep",
                f"must be an integer of at least 2 (got {_describe(self.keep)}): the newest checkpoint may be cut short when the job "
                "is killed, so the one before it must survive",
            )

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "train.checkpoint") -> CheckpointConfig:
        d = dict(_mapping(prefix, d))
        _check_keys(prefix, d, [f.name for f in dataclasses.fields(cls)])
        for name in ("every_minutes", "deadline_margin_seconds"):
            if name in d:
                d[name] = _as_float(d[name])
        return _build(cls, d, prefix, "train.checkpoint")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True, eq=False, repr=False)
class OptimizerConfig(Record):
    """The optimizer. The default is the seed's: Adam, lr = train.lr (0.001)."""

    name: str = "adam"
    """`adam`, `adamw` (decoupled weight decay) or `sgd`."""

    lr: float | None = None
    """Learning rate; null takes `train.lr` (kept for specs written before this section)."""

    weight_decay: float = 0.0
    """L2 penalty (adam, sgd) or decoupled weight decay (adamw; 0 unless given here)."""

    momentum: float = 0.0
    """sgd only: momentum factor."""

    betas: tuple[float, float] = (0.9, 0.999)
    """adam and adamw only: the running averages' coefficients."""

    def __post_init__(self) -> None:
        self.validate("train.optimizer")

    def validate(self, prefix: str) -> None:
        if self.name not in OPTIMIZERS:
            raise SpecError(f"{prefix}.name", f"must be one of {', '.join(OPTIMIZERS)} (got {_describe(self.name)})")
        if self.lr is not None:
            _check_number(f"{prefix}.lr", self.lr, positive=True, what="a positive number")
        _check_number(f"{prefix}.weight_decay", self.weight_decay, positive=False, what="a non-negative number")
        _check_number(f"{prefix}.momentum", self.momentum, positive=False, what="a number in [0, 1)")
        if not self.momentum < 1:
            raise SpecError(f"{prefix}.momentum", f"must be a number in [0, 1) (got {self.momentum})")
        betas = self.betas
        if (not isinstance(betas, tuple) or len(betas) != 2
                or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1 for b in betas)):
            raise SpecError(f"{prefix}.betas", f"must be [beta1, beta2], each in [0, 1) (got {_describe(betas)})")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "train.optimizer") -> OptimizerConfig:
        d = dict(_mapping(prefix, d))
        _check_keys(prefix, d, [f.name for f in dataclasses.fields(cls)])
        name = d.get("name", "adam")
        if "momentum" in d and name != "sgd":
            raise SpecError(f"{prefix}.momentum", f"is only used with name: sgd (name is {_describe(name)})")
        if "betas" in d and name == "sgd":
            raise SpecError(f"{prefix}.betas", "is only used with name: adam or adamw (name is 'sgd')")
        for key in ("lr", "weight_decay", "momentum"):
            if key in d and d[key] is not None:
                d[key] = _as_float(d[key])
        if isinstance(d.get("betas"), list):
            d["betas"] = tuple(_as_float(b) for b in d["betas"])
        return _build(cls, d, prefix, "train.optimizer")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        if self.lr is not None:
            out["lr"] = self.lr
        out["weight_decay"] = self.weight_decay
        if self.name == "sgd":
            out["momentum"] = self.momentum
        else:
            out["betas"] = list(self.betas)
        return out


@dataclass(frozen=True, eq=False, repr=False)
class ScheduleConfig(Record):
    """The learning rate as a function of the optimizer step (`train.optim.learning_rate`).

    A pure function of the global step, so resuming needs no scheduler state: the step in
    the checkpoint gives the rate. Linear warmup from 0 over `warmup_steps`, then:
    `constant`; `cosine` down to `min_factor` x lr at the last step of `train.epochs`
    (raising epochs on resume stretches the rest of the curve); `step`: x `gamma` every
    `step_size` steps after the warmup.
    """

    kind: str = "constant"
    """`constant`, `cosine` or `step`."""

    warmup_steps: int = 0
    """Steps of linear warmup (0 = none)."""

    min_factor: float = 0.0
    """cosine only: the final rate as a fraction of lr."""

    step_size: int = 1000
    """step only: steps between two decays."""

    gamma: float = 0.1
    """step only: the factor of each decay."""

    def __post_init__(self) -> None:
        self.validate("train.lr_schedule")

    def validate(self, prefix: str) -> None:
        if self.kind not in SCHEDULES:
            raise SpecError(f"{prefix}.kind", f"must be one of {', '.join(SCHEDULES)} (got {_describe(self.kind)})")
        _check_int(f"{prefix}.warmup_steps", self.warmup_steps, minimum=0, what="a non-negative integer")
        _check_int(f"{prefix}.step_size", self.step_size, minimum=1, what="a positive integer")
        _check_number(f"{prefix}.min_factor", self.min_factor, positive=False, what="a number in [0, 1]")
        if not self.min_factor <= 1:
            raise SpecError(f"{prefix}.min_factor", f"must be a number in [0, 1] (got {self.min_factor})")
        _check_number(f"{prefix}.gamma", self.gamma, positive=True, what="a positive number")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "train.lr_schedule") -> ScheduleConfig:
        d = dict(_mapping(prefix, d))
        _check_keys(prefix, d, [f.name for f in dataclasses.fields(cls)])
        kind = d.get("kind", "constant")
        for key, only in (("min_factor", "cosine"), ("step_size", "step"), ("gamma", "step")):
            if key in d and kind != only:
                raise SpecError(f"{prefix}.{key}", f"is only used with kind: {only} (kind is {_describe(kind)})")
        for key in ("min_factor", "gamma"):
            if key in d:
                d[key] = _as_float(d[key])
        return _build(cls, d, prefix, "train.lr_schedule")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind, "warmup_steps": self.warmup_steps}
        if self.kind == "cosine":
            out["min_factor"] = self.min_factor
        if self.kind == "step":
            out.update(step_size=self.step_size, gamma=self.gamma)
        return out


@dataclass(frozen=True, eq=False, repr=False)
class TrainConfig(Record):
    """Everything `python -m train` needs: the `train:` section of a job spec."""

    seed: int = 0
    """Seeds the data generation and split, the model initialisation, dropout and the
    sampler. Two runs with the same config and seed on CPU end with identical weights."""

    epochs: int = 30
    """Number of passes; one epoch draws as many samples as the training split holds.
    May be raised when resuming a finished or stopped run."""

    batch_size: int = 32
    """Samples per optimizer step (the last step of an epoch may take fewer)."""

    lr: float = 0.001
    """Learning rate (the optimizer's, unless `optimizer.lr` gives one)."""

    device: str = "auto"
    """`auto` (the first GPU when CUDA is available, else the CPU), `cpu`, `cuda` (=
    `cuda:0`) or `cuda:N`."""

    threads: int | None = None
    """torch's intra-op threads per task; null (the default) chooses: the scheduler's CPU
    allocation when there is one, else min(4, the CPUs the load average leaves idle), at
    least 1 (see `train.trainer.configure_threads`). More threads than idle cores make
    a step many times slower: measured on a 2-core machine beside one busy process, 2
    threads trained at a few hundred samples/s where 1 thread did 5,000 to 11,000. An explicit value wins over
    $OMP_NUM_THREADS; it does not change the weights, and may change between attempts."""

    data: DataConfig = field(default_factory=DataConfig)
    """The data set: see DataConfig."""

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Class weights of the weighted random sampler: see SamplerConfig."""

    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint schedule and rotation: see CheckpointConfig."""

    task: str = DEFAULT_TASK
    """The training task, "package.module:ClassName" (see `train.tasks`): what model is
    trained on what data with what loss. The default is the seed's two-input ConvNet,
    whose settings are `data` and `sampler`; other tasks take theirs under `options`."""

    options: Any = None
    """The task's options: an instance of the task's `Options` dataclass (null: its
    defaults), validated at `cluster check` like every other key."""

    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Optimizer and its hyperparameters: see OptimizerConfig."""

    lr_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Learning-rate schedule over the optimizer steps: see ScheduleConfig."""

    grad_clip: float | None = None
    """Clip the gradients' global L2 norm to this before each step; null = no clipping."""

    precision: str = "fp32"
    """`fp32`, `bf16` (autocast to bfloat16, also on the CPU) or `fp16` (autocast to
    float16 with a loss scaler whose state is checkpointed). Checkpoints stay float32."""

    tensorboard: bool = False
    """Write TensorBoard event files under the run directory's `tensorboard/` (needs the
    `tensorboard` extra): each step once, across requeues and resumes."""

    def __post_init__(self) -> None:
        self.validate("train")

    def validate(self, prefix: str) -> None:
        _check_int(f"{prefix}.seed", self.seed, minimum=0, what="a non-negative integer")
        _check_at_most(f"{prefix}.seed", self.seed, MAX_SEED, "2**63 - 1", "torch and numpy take 64-bit seeds")
        _check_int(f"{prefix}.epochs", self.epochs, minimum=1, what="a positive integer")
        _check_at_most(f"{prefix}.epochs", self.epochs, MAX_EPOCHS, "10**6", "more is surely a typo")
        _check_int(f"{prefix}.batch_size", self.batch_size, minimum=1, what="a positive integer")
        _check_number(f"{prefix}.lr", self.lr, positive=True, what="a positive number")
        if not is_device(self.device):
            raise SpecError(f"{prefix}.device", f"must be auto, cpu, cuda or cuda:N (got {_describe(self.device)})")
        if self.threads is not None:
            _check_int(f"{prefix}.threads", self.threads, minimum=1, what="a positive integer, or null to choose automatically")
        for name, cls in (("data", DataConfig), ("sampler", SamplerConfig), ("checkpoint", CheckpointConfig),
                          ("optimizer", OptimizerConfig), ("lr_schedule", ScheduleConfig)):
            if not isinstance(getattr(self, name), cls):
                raise SpecError(f"{prefix}.{name}", f"must be a {cls.__name__}")
        if self.grad_clip is not None:
            _check_number(f"{prefix}.grad_clip", self.grad_clip, positive=True, what="a positive number, or null for none")
        if self.precision not in PRECISIONS:
            raise SpecError(f"{prefix}.precision", f"must be one of {', '.join(PRECISIONS)} (got {_describe(self.precision)})")
        if not isinstance(self.tensorboard, bool):
            raise SpecError(f"{prefix}.tensorboard", f"must be true or false (got {_describe(self.tensorboard)})")
        if isinstance(self.options, CheckedOptions):  # validated by the task itself, in its probe
            if self.options.task != self.task:
                raise SpecError(f"{prefix}.options", f"are {self.options.task}'s, not {self.task}'s")
            return
        task = resolve_task(self.task, f"{prefix}.task")
        declared = getattr(task, "Options", None)
        if self.options is None and declared is not None:
            object.__setattr__(self, "options", declared())  # frozen: the defaults, once
        elif self.options is not None and (declared is None or not isinstance(self.options, declared)):
            raise SpecError(f"{prefix}.options", f"must be a {task.__name__}.Options (got {type(self.options).__name__})")

    @property
    def learning_rate(self) -> float:
        """The base learning rate: `optimizer.lr` if given, else `lr`."""
        return self.optimizer.lr if self.optimizer.lr is not None else self.lr

    @property
    def is_default_task(self) -> bool:
        return self.task == DEFAULT_TASK

    @classmethod
    def from_dict(cls, d: Mapping | None, prefix: str = "train") -> TrainConfig:
        """Validate the `train:` section of a spec (already parsed from YAML).

        Missing keys take their defaults. Raises `SpecError(dotted.key, message)` for the
        first mistake found.
        """
        d = dict(_mapping(prefix, d))
        _check_keys(prefix, d, [f.name for f in dataclasses.fields(cls)])
        if "lr" in d:
            d["lr"] = _as_float(d["lr"])
        task = find_task(d.get("task", DEFAULT_TASK), f"{prefix}.task")
        if d.get("task", DEFAULT_TASK) != DEFAULT_TASK:
            for name in ("data", "sampler"):
                if name in d:
                    raise SpecError(f"{prefix}.{name}", f"is only used by the seed task (train.task is "
                                    f"{_describe(d['task'])}): give this task's settings under {prefix}.options")
        d["options"] = task_options(task, d.get("options"), f"{prefix}.options")
        if "optimizer" in d:
            d["optimizer"] = OptimizerConfig.from_dict(d["optimizer"], f"{prefix}.optimizer")
            given = d["optimizer"].lr
            if given is not None and "lr" in d and d["lr"] != given:
                raise SpecError(f"{prefix}.optimizer.lr", f"is {given} but {prefix}.lr is {d['lr']}: give the rate once")
            if given is not None:
                d["lr"] = given  # one rate: resolved specs print it in both places
        if "lr_schedule" in d:
            d["lr_schedule"] = ScheduleConfig.from_dict(d["lr_schedule"], f"{prefix}.lr_schedule")
        if "grad_clip" in d and d["grad_clip"] is not None:
            d["grad_clip"] = _as_float(d["grad_clip"])
        if "data" in d:
            d["data"] = DataConfig.from_dict(d["data"], f"{prefix}.data")
        if "sampler" in d:
            d["sampler"] = SamplerConfig.from_dict(d["sampler"], f"{prefix}.sampler")
        if "checkpoint" in d:
            d["checkpoint"] = CheckpointConfig.from_dict(d["checkpoint"], f"{prefix}.checkpoint")
        return _build(cls, d, prefix, "train")

    def to_dict(self) -> dict:
        """Plain YAML/JSON-safe types; `TrainConfig.from_dict(c.to_dict()) == c`."""
        out: dict[str, Any] = {
            "seed": self.seed,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.learning_rate,
            "device": self.device,
        }
        if self.threads is not None:  # automatic is the default: resolved specs stay as they were
            out["threads"] = self.threads
        # The newer keys appear only when set, for the same reason.
        if not self.is_default_task:
            out["task"] = self.task
        if self.options is not None:
            out["options"] = options_to_dict(self.options)
        for name, default in (("optimizer", OptimizerConfig()), ("lr_schedule", ScheduleConfig())):
            if getattr(self, name) != default:
                out[name] = getattr(self, name).to_dict()
        if self.grad_clip is not None:
            out["grad_clip"] = self.grad_clip
        if self.precision != "fp32":
            out["precision"] = self.precision
        if self.tensorboard:
            out["tensorboard"] = True
        if self.is_default_task:
            out.update(data=self.data.to_dict(), sampler=self.sampler.to_dict())
        return {**out, "checkpoint": self.checkpoint.to_dict()}
