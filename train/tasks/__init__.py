"""Training tasks: what model the trainer trains, on what data, with what loss.

A spec names its task as `train.task: "package.module:ClassName"` (default:
`train.tasks.seed_convnet:SeedConvNet`, the seed's two-input ConvNet) and gives the task's
options under `train.options`. The trainer (`train.trainer`) owns everything else: the
device, data-parallel ranks, the optimizer, the learning-rate schedule, precision, the
sampler, checkpoints and exact resume, the deadline, `metrics.jsonl`, `summary.json`
(with `weights_sha256`), progress and TensorBoard.

The protocol (subclass `Task` for the defaults, or write the same attributes yourself):

    class MyTask(Task):
        @dataclass(frozen=True)
        class Options:                      # torch-free: validated by `cluster check`
            width: int = 64                 # int, float, bool, str, X | None, tuple[X, ...]
            def __post_init__(self):        # optional rules: SpecError("width", "...") or ValueError
                ...

        best_metric = "val_loss"            # which validation metric picks best.pt ...
        best_mode = "min"                   # ... and whether lower ("min") or higher ("max") is better

        def __init__(self, options, config):   # options: an Options; config: the whole TrainConfig
        def data(self) -> (train, val)      # each: a tuple of tensors (inputs..., target), or a
                                            #   torch.utils.data.Dataset whose items are such tuples
        def model(self) -> torch.nn.Module  # called after the trainer seeds torch with train.seed;
                                            #   forward(*inputs) -> output
        def loss(self, output, target, reduction)  # a scalar tensor; reduction "mean" or "sum", as torch's
        def metrics(self, output, target) -> dict  # optional: validation metrics (names start val_)
        def sample_weights(self, train)     # optional: one weight per training sample, drawn with
                                            #   replacement; None (default): a random permutation per epoch
        def identity(self) -> dict          # optional: what a checkpoint depends on beyond the options
                                            #   (e.g. a data file's hash); resuming with it changed is refused
        data_workers = None                 # optional: processes reading a training Dataset ahead (None:
                                            #   the job's spare CPUs; 0: in the training process, for a
                                            #   Dataset that a forked process cannot read, e.g. an open
                                            #   connection)

Rules a task must keep:

- **No torch at import time.** `cluster check` imports the task's module on the login
  node to validate `train.options`, and that path never imports torch (it takes seconds
  and may not be installed there). Import torch inside the methods. A module that does
  import it is refused with one line naming `train.task`. The module must be importable
  both where `cluster check` runs and in the job: an installed package, or a directory on
  PYTHONPATH (in the job: `environment.env: {PYTHONPATH: /path/to/dir}`).
- **Exact resume: randomness only from the generators the trainer seeds and restores.**
  Those are torch's global generator (and the CUDA one), which the trainer seeds with
  `train.seed` before `data()` and again before `model()`, and saves and restores in every
  checkpoint, so dropout or random augmentation in `forward` drawn from it replays
  exactly; the sampler's own generator, which picks the batches; and, while a training
  Dataset's items are read (in a DataLoader worker or in the training process alike),
  torch's generator seeded for that batch (`train.batches.batch_seed`), so random
  augmentation in `__getitem__` replays exactly whichever process reads it. Data must be
  a deterministic function of the options and `config.seed` (use
  `numpy.random.default_rng(config.seed)` or the seeded torch generator in `data()`, never
  the clock, `random` without a seed, or DataLoader worker processes). Then a run stopped
  anywhere and resumed ends with bitwise the weights of an uninterrupted one (on the CPU;
  see the README for GPUs).
- `data()` and `model()` are called once per attempt, in that order; the model is moved
  to the training device by the trainer, and tensors of a tuple split are too (a Dataset
  is read on the CPU, batch by batch, and each batch moved).
- `loss(..., "sum")` must be the sum of per-sample losses: with several ranks each
  computes its share of a batch and the trainer divides by the whole batch's size.
"""

from __future__ import annotations

from typing import Any


class Task:
    """Defaults for the optional parts of the protocol (no torch here: see above)."""

    Options: Any = None
    best_metric = "val_loss"
    best_mode = "min"
    data_workers: int | None = None

    def __init__(self, options: Any, config: Any) -> None:
        self.options = options
        self.config = config

    def metrics(self, output: Any, target: Any) -> dict[str, Any]:
        return {}

    def sample_weights(self, train: Any) -> Any:
        return None

    def identity(self) -> dict:
        return {}
