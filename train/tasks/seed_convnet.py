"""The seed's task: the two-input ConvNet (`train.model.TwoInputConvNet`) on imbalanced
image + vector data, cross-entropy loss, weighted sampling, ROC AUC picking best.pt.

Its settings are `train.data` and `train.sampler` (it predates `train.options`). Torch and
the data modules are imported inside the methods (see `train.tasks`).
"""

from __future__ import annotations

from typing import Any

from train.tasks import Task


class SeedConvNet(Task):
    """Conv branch over an image joined with a feature vector; binary labels."""

    best_metric = "val_auc"
    best_mode = "max"

    def data(self) -> tuple[tuple, tuple]:
        import torch

        from train.data import load_data, stratified_split

        cfg = self.config
        arrays = load_data(cfg.data, cfg.seed)
        train_index, val_index = stratified_split(arrays.label, cfg.data.val_fraction, cfg.seed)
        self.arrays = arrays
        # Tuples of tensors: the trainer stacks each split once on the training device, so
        # a batch is one indexing per input, with no per-sample Python and no collation.
        return tuple(tuple(torch.from_numpy(a) for a in (s.image, s.vector, s.label))
                     for s in (arrays.subset(train_index), arrays.subset(val_index)))

    def model(self) -> Any:
        from train.model import TwoInputConvNet

        return TwoInputConvNet(self.arrays.image_shape, self.arrays.vector_features)

    def loss(self, output: Any, target: Any, reduction: str) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(output, target, reduction=reduction)

    def metrics(self, output: Any, target: Any) -> dict[str, Any]:
        from train.metrics import balanced_accuracy, roc_auc

        # The logit difference orders samples like the positive-class probability does,
        # without the ties that a saturated float32 softmax would create.
        score = (output[:, 1] - output[:, 0]).double().cpu().numpy()
        predicted = output.argmax(dim=1).cpu().numpy()
        y = target.cpu().numpy()
        return {
            "val_accuracy": float((predicted == y).mean()),
            "val_balanced_accuracy": balanced_accuracy(y, predicted),
            "val_auc": roc_auc(y, score),
        }

    def sample_weights(self, train: tuple) -> Any:
        import numpy as np

        from train.data import class_weights

        label = train[2].numpy()
        negative, positive = class_weights(self.config.sampler, label)
        return np.where(label == 1, positive, negative)

    def identity(self) -> dict:
        cfg = self.config
        return {
            "train": {
                "seed": cfg.seed,
                "batch_size": cfg.batch_size,
                "data": {k: v for k, v in cfg.data.to_dict().items() if k not in ("path", "keys")},
                "sampler": cfg.sampler.to_dict(),
            },
            "model": {"image_shape": list(self.arrays.image_shape), "vector_features": self.arrays.vector_features},
            "data contents (sha256)": self.arrays.sha256(),
        }
