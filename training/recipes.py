"""What a dataset trains with when ``glimpse train`` is not told otherwise: the best recipe measured for it.

Plain data, free of TensorFlow, so that the CLI can show it in its help. ``training.fit.recipe_config`` applies it:
TrainConfig's defaults, the dataset's recipe over them, the flags given over both. A dataset without an entry trains
with TrainConfig's defaults.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DATASET_RECIPES"]

DATASET_RECIPES: dict[str, dict[str, Any]] = {
    # the best 5-fold cross-validated Tux Paint recipe measured: 0.923 +- 0.066 (seed 42) and 0.928 +- 0.045 (seed 7)
    # against 0.842 and 0.842 for the frozen Lite0 at 160 px, and 0.889 and 0.899 on two partitions not used to choose
    # it (seeds 1 and 3; docs/training.md, "Cross-validated"): a frozen Lite2 at 300 px and early stopping on the
    # validation loss (finer-grained than the accuracy of 24 validation photos); the rest is TrainConfig's defaults
    # (dense head, basic augmentation, 10 epochs: 20 moved 2 of 624 predictions at 1.6-1.9x the time, patience 5)
    "tuxpaint": {
        "model": "efficientnet_lite2",
        "image_size": 300,
        "early_stopping": "loss",
    },
    # the best Fashion-MNIST run measured, 0.9381 test in 25 epochs, 16.6 minutes for the whole command on 2 cores
    # (docs/training.md, "Fashion-MNIST, scratch_bn"); TrainConfig's default model, the ImageNet EfficientNet-Lite0,
    # would upsample the 28-px grey images to 160 px
    "fashion_mnist": {
        "model": "scratch_bn",
        "epochs": 25,
        "batch_size": 256,
        "lr": 2e-3,
        "lr_schedule": "cosine",
        "augment": "flip",
        "dropout": 0.3,
        "patience": 8,
    },
}
