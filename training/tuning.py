"""Hyperparameter search with Keras Tuner: ``glimpse tune``.

The search space is the chapter's: learning rate, fraction of the backbone fine-tuned (pretrained models only),
dropout, dense units of the head, optimizer, and augmentation. The data is loaded once (as in ``glimpse study``) and
every trial sees the same images. The best trial's model is exported through the model contract
(``training.export.export_classifier``); the best hyperparameters go to ``best_hyperparameters.json`` and every trial
to ``trials.csv`` / ``trials.md``.

TensorFlow, Keras and keras-tuner are imported inside functions: ``configure_tune`` stays light.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from training.studies import (
    PRETRAINED_MODELS,
    StudyData,
    StudyError,
    add_run_flags,
    array_dataset,
    default_image_size,
    make_augmenter,
    prepare_data,
    user_errors,
)
from training.train import make_optimizer

__all__ = [
    "SEARCH_OPTIMIZERS",
    "TRIAL_COLUMNS",
    "TUNERS",
    "TuneConfig",
    "TuneResult",
    "configure_tune",
    "define_search_space",
    "execute_tune",
    "run_tune",
]

TUNERS: tuple[str, ...] = ("random", "hyperband", "bayesian")
# Adadelta and Adagrad are left out of the search: at these learning rates they barely move in a few epochs.
SEARCH_OPTIMIZERS: tuple[str, ...] = ("adam", "rmsprop", "momentum", "sgd")
UNFREEZE_CHOICES: tuple[float, ...] = (0.0, 0.25, 0.5)
DENSE_CHOICES: tuple[int, ...] = (64, 128, 256, 512)
AUGMENT_CHOICES: tuple[str, ...] = ("none", "basic", "randaugment")
OBJECTIVE = "val_accuracy"

TRIAL_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "status",
    "val_accuracy",
    "best_epoch",
    "seconds",
    "lr",
    "optimizer",
    "unfreeze",
    "dropout",
    "dense_units",
    "augment",
    "epochs_run",
)


@dataclass(frozen=True)
class TuneConfig:
    """One search. ``epochs`` is the epochs per trial (Hyperband: its max_epochs)."""

    out: Path
    dataset: str = "tuxpaint"
    model: str = "efficientnet_lite0"
    weights: str = "imagenet"
    tuner: str = "random"
    max_trials: int = 10
    epochs: int = 6
    image_size: int = 128
    batch_size: int = 32
    patience: int = 3
    seed: int = 42
    max_examples: int | None = None
    export_dir: Path | None = Path("models")
    name: str = "tuned"
    deterministic: bool = True
    verbose: int | str = "auto"

    def __post_init__(self) -> None:
        if self.tuner not in TUNERS:
            raise StudyError(f"unknown tuner {self.tuner!r}; expected one of {', '.join(TUNERS)}")
        if self.max_trials < 1:
            raise StudyError(f"max_trials must be >= 1, got {self.max_trials}")
        if self.epochs < 1:
            raise StudyError(f"epochs must be >= 1, got {self.epochs}")
        if self.tuner == "hyperband" and self.epochs < 2:
            raise StudyError("hyperband needs --epochs >= 2 (its max_epochs)")
        if self.image_size < 8:
            raise StudyError(f"image_size must be >= 8, got {self.image_size}")
        if self.batch_size < 1:
            raise StudyError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.patience < 0:
            raise StudyError(f"patience must be >= 0, got {self.patience}")
        if self.max_examples is not None and self.max_examples < 1:
            raise StudyError(f"max_examples must be >= 1, got {self.max_examples}")
        if not self.name or any(ch in self.name for ch in "/\\") or self.name in (".", ".."):
            raise StudyError(f"--name must be a plain directory name, got {self.name!r}")

    @property
    def pretrained(self) -> bool:
        return self.model in PRETRAINED_MODELS and self.weights != "none"


@dataclass(frozen=True)
class TuneResult:
    config: TuneConfig
    best_hyperparameters: dict[str, Any]
    best_val_accuracy: float
    test_accuracy: float
    trials: tuple[dict[str, Any], ...]
    wall_seconds: float
    version_dir: Path | None
    files: tuple[Path, ...] = field(default=())


def define_search_space(hp: Any, *, pretrained: bool) -> dict[str, Any]:
    """Register the chapter's hyperparameters on a keras_tuner ``HyperParameters`` and return their values."""
    values: dict[str, Any] = {
        "lr": hp.Float("lr", 1e-4, 1e-2, sampling="log"),
        "optimizer": hp.Choice("optimizer", list(SEARCH_OPTIMIZERS)),
        "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1),
        "dense_units": hp.Choice("dense_units", list(DENSE_CHOICES)),
        "augment": hp.Choice("augment", list(AUGMENT_CHOICES)),
    }
    # Fine-tuning depth only means something for a pretrained backbone; scratch models train everything.
    values["unfreeze"] = hp.Choice("unfreeze", list(UNFREEZE_CHOICES)) if pretrained else 1.0
    return values


def _hypermodel(config: TuneConfig, data: StudyData) -> Any:
    import keras_tuner as kt

    from training.models import build_model

    class ClassifierHyperModel(kt.HyperModel):
        """build(hp) makes and compiles the model; fit(hp, ...) trains it on data augmented as hp says."""

        def __init__(self) -> None:
            super().__init__(name="glimpse_classifier")
            self.last_info: Any = None
            self.trial_id: str | None = None  # set by the tuner when a trial begins
            self.epochs_run: dict[str, int] = {}

        def build(self, hp: Any) -> Any:
            values = define_search_space(hp, pretrained=config.pretrained)
            model, info = build_model(
                config.model,
                data.num_classes,
                image_size=config.image_size,
                channels=data.channels,
                weights=config.weights,
                unfreeze=values["unfreeze"],
                dropout=values["dropout"],
                dense_units=values["dense_units"],
                seed=config.seed,
            )
            model.compile(
                optimizer=make_optimizer(values["optimizer"], values["lr"]),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            # Built now, so that keras-tuner's reload of the best checkpoint (weights + optimizer slots) matches.
            model.optimizer.build(model.trainable_variables)
            self.last_info = info
            return model

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            train_ds = array_dataset(
                data.x_train,
                data.y_train,
                config.batch_size,
                shuffle_seed=config.seed,
                augmenter=make_augmenter(hp.get("augment"), config.seed),
            )
            val_ds = array_dataset(data.x_val, data.y_val, max(config.batch_size, 64))
            history = model.fit(train_ds, validation_data=val_ds, shuffle=False, **kwargs)
            if self.trial_id is not None:
                self.epochs_run[self.trial_id] = len(history.epoch)
            return history

    return ClassifierHyperModel()


def _tuner(config: TuneConfig, hypermodel: Any, directory: Path) -> Any:
    import keras_tuner as kt

    def timed(base: type) -> type:
        class Timed(base):  # type: ignore[misc, valid-type]
            """Records each trial's wall time (the trial table's ``seconds``) and tells the hypermodel the trial id."""

            def on_trial_begin(self, trial: Any) -> None:
                self.__dict__.setdefault("trial_seconds", {})[trial.trial_id] = -time.perf_counter()
                self.hypermodel.trial_id = trial.trial_id
                super().on_trial_begin(trial)

            def on_trial_end(self, trial: Any) -> None:
                self.trial_seconds[trial.trial_id] += time.perf_counter()
                super().on_trial_end(trial)

        return Timed

    common = {
        "objective": kt.Objective(OBJECTIVE, direction="max"),
        "seed": config.seed,
        "directory": str(directory),
        "project_name": "tuner",
        "overwrite": True,
    }
    if config.tuner == "random":
        return timed(kt.RandomSearch)(hypermodel, max_trials=config.max_trials, **common)
    if config.tuner == "bayesian":
        initial = max(1, min(3, config.max_trials // 2))
        return timed(kt.BayesianOptimization)(
            hypermodel, max_trials=config.max_trials, num_initial_points=initial, **common
        )
    tuner = timed(kt.Hyperband)(hypermodel, max_epochs=config.epochs, factor=3, **common)
    # Hyperband sizes its brackets from max_epochs; --max-trials caps the total number of trials on top of that.
    tuner.oracle.max_trials = config.max_trials
    return tuner


def _trial_rows(tuner: Any) -> list[dict[str, Any]]:
    seconds = getattr(tuner, "trial_seconds", {})
    epochs = getattr(tuner.hypermodel, "epochs_run", {})
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        values = trial.hyperparameters.values
        score = trial.score
        rows.append(
            {
                "trial_id": trial_id,
                "status": str(trial.status),
                "val_accuracy": None if score is None else round(float(score), 4),
                "best_epoch": int(trial.best_step) + 1 if score is not None else None,
                "seconds": round(seconds.get(trial_id, float("nan")), 1),
                "lr": values.get("lr"),
                "optimizer": values.get("optimizer"),
                "unfreeze": values.get("unfreeze", 1.0),
                "dropout": values.get("dropout"),
                "dense_units": values.get("dense_units"),
                "augment": values.get("augment"),
                "epochs_run": epochs.get(trial_id),
            }
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 0.01 and value != 0 else f"{value:.4g}"
    return str(value)


def _write_reports(result: TuneResult) -> list[Path]:
    config = result.config
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    best = {
        "hyperparameters": result.best_hyperparameters,
        "val_accuracy": result.best_val_accuracy,
        "test_accuracy": result.test_accuracy,
        "tuner": config.tuner,
        "model": config.model,
        "dataset": config.dataset,
        "image_size": config.image_size,
        "seed": config.seed,
        "version_dir": str(result.version_dir) if result.version_dir else None,
    }
    best_path = out / "best_hyperparameters.json"
    best_path.write_text(json.dumps(best, indent=2))
    csv_path = out / "trials.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(TRIAL_COLUMNS))
        writer.writeheader()
        for row in result.trials:
            writer.writerow({c: "" if row[c] is None else row[c] for c in TRIAL_COLUMNS})
    ranked = sorted(result.trials, key=lambda r: -1.0 if r["val_accuracy"] is None else r["val_accuracy"], reverse=True)
    lines = [
        f"# Keras Tuner: {config.tuner} search",
        "",
        f"Dataset `{config.dataset}`, model `{config.model}` (weights {config.weights}), image size "
        f"{config.image_size}, batch {config.batch_size}, {config.epochs} epochs per trial, up to {config.max_trials} "
        f"trials, seed {config.seed}"
        + (f", at most {config.max_examples} examples per split" if config.max_examples else "")
        + f". Wall time {result.wall_seconds:.0f} s.",
        "",
        f"Best trial: val accuracy {result.best_val_accuracy:.3f}, test accuracy {result.test_accuracy:.3f}"
        + (f"; exported to `{result.version_dir}`." if result.version_dir else "."),
        "",
        "| " + " | ".join(TRIAL_COLUMNS) + " |",
        "|" + "---|" * len(TRIAL_COLUMNS),
    ]
    lines += ["| " + " | ".join(_cell(r[c]) for c in TRIAL_COLUMNS) + " |" for r in ranked]
    md_path = out / "trials.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [best_path, csv_path, md_path]


def _export(
    config: TuneConfig,
    model: Any,
    info: Any,
    data: StudyData,
    result_metrics: Mapping[str, float],
    best_values: Mapping[str, Any],
) -> Path:
    from training.export import export_classifier

    card = {
        "metrics": dict(result_metrics),
        "training": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            "hyperparameters": dict(best_values),
            "tuned_with": f"keras_tuner {config.tuner}",
        },
        "dataset": {
            "spec": config.dataset,
            "class_names": list(data.class_names),
            "num_train": len(data.y_train),
            "num_val": len(data.y_val),
            "num_test": len(data.y_test),
        },
    }
    return export_classifier(
        model,
        list(data.class_names),
        config.export_dir,
        config.name,
        image_size=config.image_size,
        channels=data.channels,
        preprocessing=info.preprocessing,
        gradcam_layer=info.gradcam_layer,
        card=card,
        examples=data.splits.test_records(),
    )


def execute_tune(config: TuneConfig) -> TuneResult:
    """Run the search, evaluate the best model on the test split, export it (unless export_dir is None), report."""
    import keras
    import tensorflow as tf

    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(
        config.dataset, image_size=config.image_size, seed=config.seed, max_examples=config.max_examples
    )
    if config.model in PRETRAINED_MODELS:
        data = data.as_rgb()  # pretrained backbones take RGB
    hypermodel = _hypermodel(config, data)
    tuner = _tuner(config, hypermodel, out)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=OBJECTIVE, min_delta=1e-4, patience=config.patience),
        # keras-tuner gives each trial its own log dir and adds the HParams callback.
        keras.callbacks.TensorBoard(log_dir=str(out / "tb"), histogram_freq=0, write_graph=False),
    ]
    tuner.search(epochs=config.epochs, callbacks=callbacks, verbose=config.verbose)
    rows = _trial_rows(tuner)
    completed = [r for r in rows if r["val_accuracy"] is not None]
    if not completed:
        raise RuntimeError(f"no trial completed; see the keras-tuner logs under {out / 'tuner'}")
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best_trial = tuner.oracle.get_best_trials(1)[0]
    model = tuner.get_best_models(1)[0]
    info = hypermodel.last_info  # the build that get_best_models just made
    test_ds = array_dataset(data.x_test, data.y_test, max(config.batch_size, 64))
    test = model.evaluate(test_ds, verbose=0, return_dict=True)
    val = model.evaluate(array_dataset(data.x_val, data.y_val, 64), verbose=0, return_dict=True)
    best_values = {k: v for k, v in best_hp.values.items() if not k.startswith("tuner/")}
    metrics = {
        "val_accuracy": float(val["accuracy"]),
        "val_loss": float(val["loss"]),
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
    }
    version_dir = None
    if config.export_dir is not None:
        version_dir = _export(config, model, info, data, metrics, best_values)
    result = TuneResult(
        config=config,
        best_hyperparameters=best_values,
        best_val_accuracy=float(best_trial.score),
        test_accuracy=metrics["test_accuracy"],
        trials=tuple(rows),
        wall_seconds=time.perf_counter() - start,
        version_dir=version_dir,
    )
    files = _write_reports(result)
    return replace(result, files=tuple(files))


# --------------------------------------------------------------------------------------------------------------------
# CLI


def configure_tune(p: argparse.ArgumentParser) -> None:
    """Flags of ``glimpse tune``; imports nothing heavy."""
    add_run_flags(p)
    p.add_argument("--tuner", choices=TUNERS, default="random")
    p.add_argument("--max-trials", type=int, default=10, help="number of trials (Hyperband: a cap on its brackets)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial, Hyperband's max_epochs (default 6)")
    p.add_argument("--patience", type=int, default=3, help="early stopping patience within a trial")
    p.add_argument("--out", type=Path, default=None, help="reports and tuner state (default: out/tuning/DATASET-TUNER)")
    p.add_argument("--export-dir", type=Path, default=Path("models"), help="model base path for the best model")
    p.add_argument("--name", default=None, help="model name under --export-dir (default: DATASET-tuned)")
    p.add_argument("--no-export", action="store_true", help="write the reports only")
    p.add_argument("--no-determinism", action="store_true", help="skip tf.config.experimental.enable_op_determinism")
    p.add_argument("--verbose", choices=("auto", "0", "1", "2"), default="auto", help="Keras' per-epoch progress")


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text).strip("_") or "dataset"


def _config_from_args(args: argparse.Namespace) -> TuneConfig:
    image_size = args.image_size or (32 if args.quick else default_image_size(args.dataset, args.model))
    epochs = args.epochs or (2 if args.quick and args.tuner == "hyperband" else 1 if args.quick else 6)
    max_trials = 2 if args.quick and args.max_trials == 10 else args.max_trials
    max_examples = args.max_examples or (48 if args.quick else None)
    dataset_name = _safe(args.dataset.split("/")[-1] if args.dataset.startswith("folder:") else args.dataset)
    return TuneConfig(
        out=args.out or Path("out") / "tuning" / f"{dataset_name}-{args.tuner}",
        dataset=args.dataset,
        model=args.model,
        weights=args.weights,
        tuner=args.tuner,
        max_trials=max_trials,
        epochs=epochs,
        image_size=image_size,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=args.seed,
        max_examples=max_examples,
        export_dir=None if args.no_export else args.export_dir,
        name=args.name or f"{dataset_name}-tuned",
        deterministic=not args.no_determinism,
        verbose=args.verbose if args.verbose == "auto" else int(args.verbose),
    )


def run_tune(args: argparse.Namespace) -> int:
    """``glimpse tune ...``: 0 on success, 2 with a one-line message on bad input."""
    try:
        config = _config_from_args(args)
    except StudyError as e:
        print(f"glimpse tune: {e}", file=sys.stderr)
        return 2
    try:
        result = execute_tune(config)
    except user_errors() as e:
        print(f"glimpse tune: {e}", file=sys.stderr)
        return 2
    print(
        f"tune {config.tuner}: {len(result.trials)} trials in {result.wall_seconds:.0f} s; best val accuracy "
        f"{result.best_val_accuracy:.3f}, test accuracy {result.test_accuracy:.3f}; "
        + (f"exported to {result.version_dir}; " if result.version_dir else "")
        + f"reports in {config.out}"
    )
    return 0
