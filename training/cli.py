"""`glimpse train` and `glimpse export`. Flags are declared here; TensorFlow is imported only when a command runs."""

from __future__ import annotations

import argparse
import sys

from training.recipes import DATASET_RECIPES

__all__ = ["configure_train", "run_train", "configure_export", "run_export"]

_MODELS = ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2", "resnet50", "scratch", "scratch_bn")
_OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop", "adagrad", "adadelta")
_AUGMENTATIONS = ("basic", "randaugment", "none", "shift", "flip")
_PREPROCESSING = ("none", "scale_0_1", "scale_-1_1", "caffe", "lite0")
_DISTRIBUTE = ("none", "mirrored", "multiworker")
_EARLY_STOPPING = ("accuracy", "loss")


def _fraction(value: str) -> float:
    f = float(value)
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return f


def _smoothing(value: str) -> float:
    f = float(value)
    if not 0.0 <= f < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return f


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def _folds(value: str) -> int:
    n = int(value)
    if n != 0 and n < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 folds (0 = off), got {value}")
    return n


def configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="tuxpaint",
                   help="tuxpaint | fashion_mnist | folder:PATH | tfds:NAME[:TRAIN,VAL,TEST] (default tuxpaint)")
    # The flags of a dataset's recipe default to None: run_train fills them from training.recipes.DATASET_RECIPES, then
    # from TrainConfig's defaults (shown in each help), so that a flag given always wins.
    recipes = "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in recipe.items())
                        for name, recipe in DATASET_RECIPES.items())
    p.description = ("Train a classifier and export it through the model contract. A dataset with a measured "
                     f"recipe trains with it where flags are not given ({recipes}); a --model other than the "
                     "recipe's drops the recipe.")
    p.add_argument("--model", default=None, choices=_MODELS,
                   help="default efficientnet_lite0 (tuxpaint's recipe: efficientnet_lite2)")
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="input side in pixels (default 160 for pretrained, 64 for scratch, 28 on fashion_mnist)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="default 10")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="default 32")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3")
    p.add_argument("--optimizer", default=None, choices=_OPTIMIZERS, help="default adam")
    p.add_argument("--lr-schedule", default=None, choices=("constant", "cosine"),
                   help="constant (the default), or cosine decay to 0 over --epochs")
    p.add_argument("--patience", type=_positive_int, default=None, help="early-stopping patience (default 5)")
    p.add_argument("--early-stopping", default=None, choices=_EARLY_STOPPING,
                   help="the validation metric early stopping watches and picks the best epoch by: accuracy (the "
                        "default) or loss (finer-grained on a small validation split; tuxpaint's recipe)")
    p.add_argument("--label-smoothing", type=_smoothing, default=None, metavar="S",
                   help="train towards 1 - S on the true class and S spread over all classes (default 0: off)")
    p.add_argument("--unfreeze", type=_fraction, default=None,
                   help="fraction of the backbone's last layers to fine-tune (0 = frozen, the default; 1 = all)")
    p.add_argument("--dropout", type=float, default=None, help="default 0.2")
    p.add_argument("--dense-units", type=int, default=None, help="default 256")
    p.add_argument("--augment", default=None, choices=_AUGMENTATIONS, help="default basic")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-examples", type=_positive_int, default=None, help="cap each split (quick runs)")
    p.add_argument("--weights", default="imagenet", help="imagenet | none | PATH to a weights file")
    p.add_argument("--logdir", default="runs", help="TensorBoard log directory")
    p.add_argument("--export-dir", default="models", help="model base directory: writes NAME/<next version>/")
    p.add_argument("--name", default=None, help="model name (default: from the dataset)")
    p.add_argument("--no-export", action="store_true", help="train and evaluate only")
    p.add_argument("--explain-every", type=int, default=0, metavar="N",
                   help="every N epochs, write Grad-CAM, occlusion and activation images of fixed validation images "
                        "to TensorBoard (RUN/explain; 0 = off, the default)")
    p.add_argument("--explain-images", type=_positive_int, default=6, metavar="K",
                   help="how many validation images --explain-every explains (the first K; default 6)")
    p.add_argument("--ema", type=float, default=0.0, metavar="M",
                   help="keep an exponential moving average of the weights (momentum M per step, e.g. 0.95) and "
                        "validate, early-stop and export the averaged model (0 = off, the default)")
    p.add_argument("--refit", action="store_true",
                   help="after early stopping, train a fresh model on the training and validation splits together "
                        "for the best epoch count, and test and export that one")
    p.add_argument("--cv", type=_folds, default=0, metavar="K",
                   help="stratified K-fold cross-validation over every example (train+val+test) of tuxpaint, "
                        "fashion_mnist or folder:PATH: each fold trains from the same initialisation and early-stops "
                        "on an inner validation split of its training part; prints cv_accuracy=MEAN ± STD and the "
                        "pooled accuracy; the export is trained on all the examples for the folds' median best "
                        "epoch count (0 = off, the default)")
    p.add_argument("--cv-repeats", type=_positive_int, default=1, metavar="R",
                   help="repeat the K-fold cross-validation R times with fresh seeded partitions (default 1)")
    p.add_argument("--metrics-out", default=None, metavar="FILE",
                   help="write the run's metrics as JSON (test_accuracy, val_accuracy, wall_s, epochs_run, and with "
                        "--cv the cv_* figures); in a multi-worker run the chief writes it")
    p.add_argument("--distribute", default="none", choices=_DISTRIBUTE,
                   help="none (default), mirrored (tf.distribute.MirroredStrategy over all local GPUs) or "
                        "multiworker (MultiWorkerMirroredStrategy, cluster from TF_CONFIG); --batch-size is per "
                        "replica and --lr is scaled by the replica count")


def run_train(args: argparse.Namespace) -> int:
    from training.data import DatasetUnavailable
    from training.fit import recipe_config
    from training.models import ModelUnavailable
    from training.train import train, write_metrics

    try:
        config = recipe_config(
            args.dataset, model=args.model, image_size=args.image_size, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, lr_schedule=args.lr_schedule,
            patience=args.patience, early_stopping=args.early_stopping, label_smoothing=args.label_smoothing,
            unfreeze=args.unfreeze, dropout=args.dropout, dense_units=args.dense_units, augment=args.augment,
            seed=args.seed, max_examples=args.max_examples, weights=args.weights, logdir=args.logdir,
            export_dir=args.export_dir, name=args.name, explain_every=args.explain_every,
            explain_images=args.explain_images, refit=args.refit, ema=args.ema, cv=args.cv,
            cv_repeats=args.cv_repeats, distribute=args.distribute,
        )
        result = train(config, export=not args.no_export)
        if args.metrics_out and result.chief:
            write_metrics(args.metrics_out, result)
    except (DatasetUnavailable, ModelUnavailable, ValueError, FileNotFoundError) as e:
        print(f"glimpse train: error: {e}", file=sys.stderr)
        return 2
    return 0


def configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keras-model", required=True, help="a functional Keras classifier (.keras or .h5)")
    p.add_argument("--name", required=True, help="model name: writes EXPORT_DIR/NAME/<next version>/")
    p.add_argument("--export-dir", default="models")
    p.add_argument("--labels", default=None, help="class names, one per line (default class_0..class_N)")
    p.add_argument("--image-size", type=_positive_int, default=None, help="needed when the model's input size is free")
    p.add_argument("--preprocessing", default=None, choices=_PREPROCESSING,
                   help="what the model expects its input scaled to (default none: pixels 0-255)")
    p.add_argument("--chunk-size", type=_positive_int, default=None, metavar="N",
                   help="images per forward pass of occlusion, SmoothGrad and integrated gradients (default: the "
                        "batch size fastest for this model on this machine, measured at export; export on the kind "
                        "of machine that serves, or give it)")


def run_export(args: argparse.Namespace) -> int:
    from training.export import ExportError, export_keras_file

    try:
        version_dir = export_keras_file(args.keras_model, args.name, args.export_dir, labels_file=args.labels,
                                        image_size=args.image_size, preprocessing=args.preprocessing,
                                        chunk_size=args.chunk_size)
    except (ExportError, ValueError, FileNotFoundError, OSError) as e:
        print(f"glimpse export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported {version_dir}")
    return 0
