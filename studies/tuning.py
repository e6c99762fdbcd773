"""Hyperparameter and architecture search: ``glimpse tune``.

``random``, ``hyperband`` and ``bayesian`` search the chapter's space with Keras Tuner: learning rate, fraction of the
backbone fine-tuned (pretrained models only), dropout, dense units of the head, optimizer, and augmentation.
``autokeras`` searches architectures with AutoKeras' ``ImageClassifier`` (its greedy oracle: a plain CNN, a ResNet, an
EfficientNet, then variations of the best), without pretrained weights, which cannot be had offline. The data is
loaded once (as in ``glimpse study``) and every trial sees the same images. The best trial's model is exported
through the model contract (``training.export.export_classifier``). A search starts from one ``TrainConfig`` (the
base run); each Keras Tuner trial is a ``dataclasses.replace`` of it with the searched values, fitted by
``training.fit.fit`` as ``glimpse train`` and the studies are; the best hyperparameters go to
``best_hyperparameters.json`` and every trial to ``trials.csv`` / ``trials.md``. ``--time-limit S`` stops starting
trials (and epochs) once S seconds of search have passed.

Keras Tuner searches can be distributed over processes or machines with keras-tuner's own mode, read from its
environment variables: ``KERASTUNER_TUNER_ID=chief`` makes this process the chief, whose oracle serves trials over
gRPC on ``KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`` until every worker has been told the search is over, and
then evaluates, exports and reports the best trial as a single process does; any other tuner id makes a worker, which
takes trials from the chief at that address, trains them and reports their metrics (its trials' checkpoints go to the
shared ``--out``, from which the chief reloads the best one) and writes ``OUT/workers/<tuner id>.json``.
``k8s/tuning/`` runs a chief and an indexed Job of workers.

TensorFlow, Keras, keras-tuner and AutoKeras are imported inside functions: ``configure_tune`` stays light.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from studies.chapter import (
    QUICK_IMAGE_SIZE,
    QUICK_MAX_EXAMPLES,
    STUDY_IMAGE_SIZE,
    StudyData,
    StudyError,
    add_run_flags,
    array_dataset,
    make_augmenter,
    prepare_data,
    user_errors,
)
from training.export import ExportError, export_classifier, find_gradcam_layer
from training.fit import FitData, TrainConfig, build_classifier, compile_classifier, default_image_size, fit, seeded
from training.models import PRETRAINED_MODELS

__all__ = [
    "AUTOKERAS_TRIAL_COLUMNS",
    "ORACLE_ENV",
    "SEARCH_OPTIMIZERS",
    "TRIAL_COLUMNS",
    "TUNERS",
    "DistributedTuning",
    "TuneConfig",
    "TuneResult",
    "autokeras_contract_model",
    "configure_tune",
    "define_search_space",
    "distributed_tuning",
    "execute_tune",
    "offline_autokeras_values",
    "run_tune",
    "trial_columns",
]

TUNERS: tuple[str, ...] = ("random", "hyperband", "bayesian", "autokeras")
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
# AutoKeras searches other hyperparameters: the image block (vanilla CNN, resnet, xception, efficient), whether it
# normalises and augments, the optimizer, its learning rate and the classification head's dropout.
AUTOKERAS_TRIAL_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "status",
    "val_accuracy",
    "best_epoch",
    "seconds",
    "block_type",
    "normalize",
    "augment",
    "optimizer",
    "lr",
    "dropout",
    "epochs_run",
)
# Where those values live among AutoKeras' hyperparameter names (its blocks are numbered from 1 in a new AutoModel).
_AUTOKERAS_HP_NAMES: dict[str, str] = {
    "block_type": "image_block_1/block_type",
    "normalize": "image_block_1/normalize",
    "augment": "image_block_1/augment",
    "optimizer": "optimizer",
    "lr": "learning_rate",
    "dropout": "classification_head_1/dropout",
}
AUTOKERAS_PROJECT = "autokeras"
# What the exported AutoKeras model does to its 0-255 input (model card ``input.preprocessing``).
AUTOKERAS_PREPROCESSING = ("autokeras_normalization", "none")


# keras-tuner's distributed mode: this process's tuner id ("chief" in it: the chief), and where the chief's oracle
# listens (on the chief) or is reached (on a worker).
ORACLE_ENV: tuple[str, str, str] = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
# Written by whoever ran a trial into its directory: the chief's reports take the workers' timings from there.
_TRIAL_TIMING = "glimpse_trial.json"


@dataclass(frozen=True)
class DistributedTuning:
    """This process's part in a distributed Keras Tuner search (keras-tuner's environment variables)."""

    tuner_id: str
    oracle_ip: str
    oracle_port: int

    @property
    def is_chief(self) -> bool:
        return "chief" in self.tuner_id  # keras-tuner's own rule (keras_tuner distribute utils)

    def environ(self) -> dict[str, str]:
        return dict(zip(ORACLE_ENV, (self.tuner_id, self.oracle_ip, str(self.oracle_port)), strict=True))


def distributed_tuning(env: Mapping[str, str] | None = None) -> DistributedTuning | None:
    """keras-tuner's distributed settings from ``env`` (default: this process's environment): None when
    ``KERASTUNER_ORACLE_IP`` is unset (one process), StudyError when it is set without a tuner id or a valid port."""
    env = os.environ if env is None else env
    tuner_id, ip, port = (env.get(name, "").strip() for name in ORACLE_ENV)
    if not ip:
        return None
    if not tuner_id:
        raise StudyError("KERASTUNER_ORACLE_IP is set but not KERASTUNER_TUNER_ID (chief, or a worker's own id)")
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise StudyError(f"KERASTUNER_ORACLE_PORT must be a port number when KERASTUNER_ORACLE_IP is set, got {port!r}")
    return DistributedTuning(tuner_id, ip, number)


def _default_base() -> TrainConfig:
    return TrainConfig(image_size=STUDY_IMAGE_SIZE, epochs=6, patience=3, name="tuned")


@dataclass(frozen=True)
class TuneConfig:
    """One search: ``base`` is the run every trial starts from (its ``epochs`` are the epochs per trial, Hyperband's
    max_epochs; ``name`` and ``export_dir`` say where the best model goes); a trial replaces the searched fields."""

    out: Path
    base: TrainConfig = field(default_factory=_default_base)
    tuner: str = "random"
    max_trials: int = 10
    export: bool = True  # False: write the reports only
    deterministic: bool = True
    verbose: int | str = "auto"
    time_limit: float | None = None  # seconds of search after which no trial (and no epoch) starts
    distributed: DistributedTuning | None = None  # keras-tuner's distributed mode: this process's part

    def __post_init__(self) -> None:
        if self.tuner not in TUNERS:
            raise StudyError(f"unknown tuner {self.tuner!r}; expected one of {', '.join(TUNERS)}")
        if self.max_trials < 1:
            raise StudyError(f"max_trials must be >= 1, got {self.max_trials}")
        if self.tuner == "hyperband" and self.base.epochs < 2:
            raise StudyError("hyperband needs --epochs >= 2 (its max_epochs)")
        if self.distributed is not None and self.tuner == "autokeras":
            raise StudyError("--tuner autokeras runs in one process; unset KERASTUNER_ORACLE_IP")
        if self.time_limit is not None and not (isinstance(self.time_limit, (int, float)) and self.time_limit > 0):
            raise StudyError(f"time_limit must be a positive number of seconds, got {self.time_limit!r}")
        name = self.base.model_name
        if not name or any(ch in name for ch in "/\\") or name in (".", ".."):
            raise StudyError(f"--name must be a plain directory name, got {name!r}")

    @property
    def model(self) -> str:
        """The searched model: ``autokeras`` (AutoKeras picks the architecture) or the base run's."""
        return "autokeras" if self.tuner == "autokeras" else self.base.model

    @property
    def pretrained(self) -> bool:
        return self.tuner != "autokeras" and self.base.model in PRETRAINED_MODELS and self.base.weights != "none"

    def describe(self) -> dict[str, Any]:
        """The search's settings, flat, as the model card's ``training`` and the reports record them."""
        b = self.base
        return {
            "out": str(self.out), "dataset": b.dataset, "model": self.model, "weights": b.weights,
            "tuner": self.tuner, "max_trials": self.max_trials, "epochs": b.epochs, "image_size": b.size,
            "batch_size": b.batch_size, "patience": b.patience, "seed": b.seed, "max_examples": b.max_examples,
            "export_dir": b.export_dir if self.export else None, "name": b.model_name,
            "deterministic": self.deterministic, "verbose": self.verbose, "time_limit": self.time_limit,
            **({"distributed": self.distributed.environ()} if self.distributed is not None else {}),
        }


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
    tuned_with: str = ""


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


def _searched_values(hp: Any, *, pretrained: bool) -> dict[str, Any]:
    """The values ``define_search_space`` registered on ``hp``, read back (as a trial's TrainConfig fields)."""
    names = ("lr", "optimizer", "dropout", "dense_units", "augment")
    return {**{name: hp.get(name) for name in names}, "unfreeze": hp.get("unfreeze") if pretrained else 1.0}


def _hypermodel(config: TuneConfig, data: StudyData) -> Any:
    import keras_tuner as kt

    num_train = len(data.y_train)

    class ClassifierHyperModel(kt.HyperModel):
        """build(hp) makes and compiles the trial's model; fit(hp, ...) trains it through ``training.fit.fit`` on data
        augmented as hp says. A trial's parameters are the base run's with the searched values replaced."""

        def __init__(self) -> None:
            super().__init__(name="glimpse_classifier")
            self.last_info: Any = None

        def build(self, hp: Any) -> Any:
            trial = replace(config.base, **define_search_space(hp, pretrained=config.pretrained))
            model, info = build_classifier(trial, data.num_classes, data.channels)
            compile_classifier(model, trial, num_train)
            # Built now, so that keras-tuner's reload of the best checkpoint (weights + optimizer slots) matches.
            model.optimizer.build(model.trainable_variables)
            self.last_info = info
            return model

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            unknown = set(kwargs) - {"epochs", "initial_epoch", "callbacks", "verbose"}
            if args or unknown:
                raise TypeError(f"unexpected fit arguments from the tuner: {len(args)} positional, {sorted(unknown)}")
            trial = replace(config.base, **_searched_values(hp, pretrained=config.pretrained))
            train_ds = array_dataset(
                data.x_train,
                data.y_train,
                trial.batch_size,
                shuffle_seed=trial.seed,
                augmenter=make_augmenter(trial.augment, trial.seed),
            )
            val_ds = array_dataset(data.x_val, data.y_val, max(trial.batch_size, 64))
            fitted = fit(
                trial,
                FitData(train_ds, data.num_classes, data.channels, num_train, val=val_ds),
                model=model,
                epochs=kwargs.get("epochs"),
                initial_epoch=kwargs.get("initial_epoch", 0),
                callbacks=kwargs.get("callbacks", ()),
                verbose=kwargs.get("verbose", "auto"),
            )
            return fitted.keras_history

    return ClassifierHyperModel()


def _timed(base: type) -> type:
    """``base``, a keras-tuner or AutoKeras tuner class, that records each trial's wall time and epochs run and starts
    no new trial once its ``deadline`` (a ``time.perf_counter()`` value, or None) has passed."""

    class Timed(base):  # type: ignore[misc, valid-type]
        deadline: float | None = None

        def on_trial_begin(self, trial: Any) -> None:
            self.__dict__.setdefault("trial_seconds", {})[trial.trial_id] = -time.perf_counter()
            super().on_trial_begin(trial)

        def _build_and_fit_model(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            history = super()._build_and_fit_model(trial, *args, **kwargs)
            epochs = getattr(history, "epoch", None)
            if epochs is not None:
                self.__dict__.setdefault("epochs_run", {})[trial.trial_id] = len(epochs)
            return history

        def on_trial_end(self, trial: Any) -> None:
            self.trial_seconds[trial.trial_id] += time.perf_counter()
            _write_trial_timing(
                Path(self.get_trial_dir(trial.trial_id)),
                tuner_id=self.tuner_id,
                seconds=self.trial_seconds[trial.trial_id],
                epochs_run=getattr(self, "epochs_run", {}).get(trial.trial_id),
            )
            super().on_trial_end(trial)
            # A worker's oracle is the chief's (over gRPC): the chief stops creating trials at the deadline.
            if self.deadline is not None and time.perf_counter() >= self.deadline and not self._is_worker():
                # An oracle that holds max_trials trials creates no more: the search loop ends here.
                self.oracle.max_trials = len(self.oracle.trials)

    Timed.__name__ = Timed.__qualname__ = f"Timed{base.__name__}"
    return Timed


def _write_trial_timing(trial_dir: Path, *, tuner_id: str, seconds: float, epochs_run: int | None) -> None:
    trial_dir.mkdir(parents=True, exist_ok=True)
    timing = {"tuner_id": tuner_id, "seconds": seconds, "epochs_run": epochs_run}
    (trial_dir / _TRIAL_TIMING).write_text(json.dumps(timing))


def _read_trial_timing(tuner: Any, trial_id: str) -> dict[str, Any]:
    """What the process that ran a trial recorded of it (a distributed chief ran none itself); {} if nothing."""
    path = Path(tuner.get_trial_dir(trial_id)) / _TRIAL_TIMING
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stop_creating_trials_after(oracle: Any, deadline: float) -> None:
    """Make a chief's ``oracle`` answer every request for a new trial after ``deadline`` (perf_counter) with "the
    search is over": it caps max_trials at the trials it already has (keras-tuner then stops the asking worker)."""
    create_trial = oracle.create_trial

    def create_trial_until_deadline(tuner_id: str) -> Any:
        if time.perf_counter() >= deadline:
            oracle.max_trials = max(1, len(oracle.trials))
        return create_trial(tuner_id)

    oracle.create_trial = create_trial_until_deadline


def _deadline_callback(deadline: float) -> Any:
    """A Keras callback that ends a trial's training after the epoch in which ``deadline`` (perf_counter) passes."""
    import keras

    class StopAtDeadline(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            if time.perf_counter() >= deadline:
                self.model.stop_training = True

    return StopAtDeadline()


def _tuner(config: TuneConfig, hypermodel: Any, directory: Path) -> Any:
    import keras_tuner as kt

    worker = config.distributed is not None and not config.distributed.is_chief
    common = {
        "objective": kt.Objective(OBJECTIVE, direction="max"),
        "seed": config.base.seed,
        "directory": str(directory),
        "project_name": "tuner",
        # A worker shares the chief's directory (the trials' checkpoints): only the chief starts it afresh.
        "overwrite": not worker,
    }
    if config.tuner == "random":
        return _timed(kt.RandomSearch)(hypermodel, max_trials=config.max_trials, **common)
    if config.tuner == "bayesian":
        initial = max(1, min(3, config.max_trials // 2))
        return _timed(kt.BayesianOptimization)(
            hypermodel, max_trials=config.max_trials, num_initial_points=initial, **common
        )
    tuner = _timed(kt.Hyperband)(hypermodel, max_epochs=config.base.epochs, factor=3, **common)
    # Hyperband sizes its brackets from max_epochs; --max-trials caps the total number of trials on top of that.
    tuner.oracle.max_trials = config.max_trials
    return tuner


def _trial_rows(tuner: Any, *, autokeras: bool = False) -> list[dict[str, Any]]:
    seconds = getattr(tuner, "trial_seconds", {})
    epochs = getattr(tuner, "epochs_run", {})
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        values = trial.hyperparameters.values
        score = trial.score
        timing = {} if trial_id in seconds else _read_trial_timing(tuner, trial_id)
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "status": str(trial.status),
            "val_accuracy": None if score is None else round(float(score), 4),
            "best_epoch": int(trial.best_step) + 1 if score is not None else None,
            "seconds": round(seconds.get(trial_id, timing.get("seconds", float("nan"))), 1),
            "epochs_run": epochs.get(trial_id, timing.get("epochs_run")),
        }
        if autokeras:
            row.update({column: values.get(name) for column, name in _AUTOKERAS_HP_NAMES.items()})
        else:
            row.update(
                {
                    "lr": values.get("lr"),
                    "optimizer": values.get("optimizer"),
                    "unfreeze": values.get("unfreeze", 1.0),
                    "dropout": values.get("dropout"),
                    "dense_units": values.get("dense_units"),
                    "augment": values.get("augment"),
                }
            )
        rows.append(row)
    return rows


def trial_columns(tuner: str) -> tuple[str, ...]:
    """The columns of ``trials.csv`` / ``trials.md`` for a tuner: AutoKeras searches other hyperparameters."""
    return AUTOKERAS_TRIAL_COLUMNS if tuner == "autokeras" else TRIAL_COLUMNS


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 0.01 and value != 0 else f"{value:.4g}"
    return str(value)


def _search_description(config: TuneConfig, result: TuneResult) -> str:
    base = config.base
    if config.tuner == "autokeras":
        what = f"architecture searched by {result.tuned_with}"
    else:
        what = f"model `{config.model}` (weights {base.weights})"
    limit = f", time limit {config.time_limit:g} s" if config.time_limit is not None else ""
    return (
        f"Dataset `{base.dataset}`, {what}, image size {base.size}, batch {base.batch_size}, "
        f"{base.epochs} epochs per trial, up to {config.max_trials} trials{limit}, seed {base.seed}"
        + (f", at most {base.max_examples} examples per split" if base.max_examples else "")
        + f". Wall time {result.wall_seconds:.0f} s."
    )


def _write_reports(result: TuneResult) -> list[Path]:
    config = result.config
    columns = trial_columns(config.tuner)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    best = {
        "hyperparameters": result.best_hyperparameters,
        "val_accuracy": result.best_val_accuracy,
        "test_accuracy": result.test_accuracy,
        "tuner": config.tuner,
        "tuned_with": result.tuned_with,
        "model": config.model,
        "dataset": config.base.dataset,
        "image_size": config.base.size,
        "seed": config.base.seed,
        "time_limit": config.time_limit,
        "trials_run": len(result.trials),
        "version_dir": str(result.version_dir) if result.version_dir else None,
    }
    best_path = out / "best_hyperparameters.json"
    best_path.write_text(json.dumps(best, indent=2))
    csv_path = out / "trials.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in result.trials:
            writer.writerow({c: "" if row[c] is None else row[c] for c in columns})
    ranked = sorted(result.trials, key=lambda r: -1.0 if r["val_accuracy"] is None else r["val_accuracy"], reverse=True)
    title = "AutoKeras: architecture search" if config.tuner == "autokeras" else f"Keras Tuner: {config.tuner} search"
    lines = [
        f"# {title}",
        "",
        _search_description(config, result),
        "",
        f"Best trial: val accuracy {result.best_val_accuracy:.3f}, test accuracy {result.test_accuracy:.3f}"
        + (f"; exported to `{result.version_dir}`." if result.version_dir else "."),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in ranked]
    md_path = out / "trials.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [best_path, csv_path, md_path]


@dataclass(frozen=True)
class _Searched:
    """What a search hands to evaluation and export."""

    model: Any  # functional Keras model: float32 pixels 0-255 in, class probabilities out
    preprocessing: str
    gradcam_layer: str | None
    best_values: dict[str, Any]
    best_score: float
    rows: list[dict[str, Any]]
    tuned_with: str


def _export(config: TuneConfig, searched: _Searched, data: StudyData, result_metrics: Mapping[str, float]) -> Path:
    card = {
        "metrics": dict(result_metrics),
        "training": {
            **config.describe(),
            "hyperparameters": dict(searched.best_values),
            "tuned_with": searched.tuned_with,
        },
        "dataset": {
            "spec": config.base.dataset,
            "class_names": list(data.class_names),
            "num_train": len(data.y_train),
            "num_val": len(data.y_val),
            "num_test": len(data.y_test),
        },
    }
    return export_classifier(
        searched.model,
        list(data.class_names),
        config.base.export_dir,
        config.base.model_name,
        image_size=config.base.size,
        channels=data.channels,
        preprocessing=searched.preprocessing,
        gradcam_layer=searched.gradcam_layer,
        card=card,
        examples=data.splits.test_records(),
    )


def _require_completed(rows: Sequence[Mapping[str, Any]], logs: Path) -> None:
    if not any(r["val_accuracy"] is not None for r in rows):
        raise RuntimeError(f"no trial completed; see the tuner's logs under {logs}")


def _keras_tuner_search(config: TuneConfig, data: StudyData, callbacks: list[Any], deadline: float | None) -> _Searched:
    hypermodel = _hypermodel(config, data)
    tuner = _tuner(config, hypermodel, Path(config.out))
    tuner.deadline = deadline
    if deadline is not None and config.distributed is not None and config.distributed.is_chief:
        _stop_creating_trials_after(tuner.oracle, deadline)
    # On a distributed chief this serves the oracle until every worker has been told the search is over.
    tuner.search(epochs=config.base.epochs, callbacks=callbacks, verbose=config.verbose)
    rows = _trial_rows(tuner)
    _require_completed(rows, Path(config.out) / "tuner")
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best_trial = tuner.oracle.get_best_trials(1)[0]
    model = tuner.get_best_models(1)[0]
    info = hypermodel.last_info  # the build that get_best_models just made
    return _Searched(
        model=model,
        preprocessing=info.preprocessing,
        gradcam_layer=info.gradcam_layer,
        best_values={k: v for k, v in best_hp.values.items() if not k.startswith("tuner/")},
        best_score=float(best_trial.score),
        rows=rows,
        tuned_with=f"keras_tuner {config.tuner}",
    )


# --------------------------------------------------------------------------------------------------------------------
# AutoKeras


def offline_autokeras_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """AutoKeras hyperparameter values with every ``.../pretrained`` set to False (and the ``.../trainable`` that
    only applies to pretrained backbones dropped): ImageNet weights are downloaded at build time, which fails offline.
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "trainable":
            continue
        out[name] = False if leaf == "pretrained" else value
    return out


def _import_autokeras() -> Any:
    try:
        import autokeras
    except ImportError as e:
        raise StudyError(f"--tuner autokeras needs AutoKeras: pip install autokeras==3.0.0 ({e})") from e
    return autokeras


def _autokeras_tuner_class() -> type:
    """AutoKeras' image-classifier tuner (its greedy oracle, the three starting architectures first), offline."""
    from autokeras.engine.tuner import AutoTuner
    from autokeras.tuners.greedy import GreedyOracle
    from autokeras.tuners.task_specific import IMAGE_CLASSIFIER

    class OfflineGreedyOracle(GreedyOracle):
        def populate_space(self, trial_id: str) -> dict[str, Any]:
            response = super().populate_space(trial_id)
            if response.get("values"):
                response["values"] = offline_autokeras_values(response["values"])
            return response

    class OfflineImageClassifierTuner(AutoTuner):
        """``autokeras.tuners.task_specific.ImageClassifierTuner`` without pretrained weights, on today's Keras."""

        def __init__(
            self, hypermodel: Any, objective: str = OBJECTIVE, max_trials: int = 10, seed: int | None = None, **kwargs
        ) -> None:
            self.seed = seed
            oracle = OfflineGreedyOracle(
                objective=objective,
                max_trials=max_trials,
                initial_hps=[offline_autokeras_values(values) for values in IMAGE_CLASSIFIER],
                seed=seed,
            )
            super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)

        def _prepare_model_build(self, hp: Any, **kwargs: Any) -> Any:
            pipeline, (x, y), validation = super()._prepare_model_build(hp, **kwargs)
            # AutoKeras 3.0.0 takes its layer sizes from np.array(x.shape), i.e. numpy ints, and Keras' Dense now
            # accepts only Python ints as units (keras-team/keras#21902): "Received an invalid value for `units`,
            # expected a positive integer. Received: units=8". Object arrays hold Python ints.
            self.hypermodel.set_io_shapes((np.array(x.shape, dtype=object), np.array(y.shape, dtype=object)))
            return pipeline, (x, y), validation

    return _timed(OfflineImageClassifierTuner)


@contextlib.contextmanager
def _autokeras_warnings_ignored() -> Iterator[None]:
    """Two UserWarnings AutoKeras 3.0.0 causes in Keras 3, harmless here, that would otherwise fail trials under an
    error filter: it builds list-input models and calls them on a bare array, and it reloads a trial's best weights
    into a model whose optimizer was never built (the exported model needs no optimizer)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The structure of `inputs` doesn't match", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"Skipping variable loading for optimizer", category=UserWarning)
        yield


def autokeras_contract_model(model: Any) -> Any:
    """AutoKeras' exported model as the contract wants it: a functional model with one float32 [B,H,W,C] pixel input
    (0-255: AutoKeras' own Normalization, adapted on our 0-255 arrays, is inside) and [B,C] probabilities out.

    The same layers and graph are re-wrapped (AutoKeras' models take a one-element list), so its conv layers, or a
    nested backbone such as ResNet, stay top-level layers that Grad-CAM can reach. A two-class AutoKeras head is one
    sigmoid unit p; it becomes [1 - p, p].
    """
    import keras

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"expected one image input and one output, got {len(model.inputs)} and {len(model.outputs)}")
    image, probabilities = model.inputs[0], model.outputs[0]
    if len(image.shape) != 4 or image.dtype != "float32":
        raise ExportError(f"expected a float32 [B,H,W,C] image input, got {image.dtype} {tuple(image.shape)}")
    if len(probabilities.shape) != 2:
        raise ExportError(f"expected [B,C] class probabilities, got {tuple(probabilities.shape)}")
    if probabilities.shape[-1] == 1:
        probabilities = keras.layers.Concatenate(name="two_class_probabilities")(
            [keras.ops.subtract(1.0, probabilities), probabilities]
        )
    return keras.Model(image, probabilities, name=f"{model.name}_contract")


def _autokeras_search(config: TuneConfig, data: StudyData, callbacks: list[Any], deadline: float | None) -> _Searched:
    import keras

    ak = _import_autokeras()
    # Two classes: AutoKeras wants 0/1 labels (one sigmoid unit); more: one-hot rows keep our class order (integer
    # labels would be sorted as strings, "10" before "2").
    if data.num_classes == 2:
        y_train, y_val = data.y_train, data.y_val
    else:
        y_train = keras.utils.to_categorical(data.y_train, data.num_classes)
        y_val = keras.utils.to_categorical(data.y_val, data.num_classes)
    with _autokeras_warnings_ignored():
        classifier = ak.ImageClassifier(
            max_trials=config.max_trials,
            directory=str(config.out),
            project_name=AUTOKERAS_PROJECT,
            objective=OBJECTIVE,
            tuner=_autokeras_tuner_class(),
            overwrite=True,
            seed=config.base.seed,
        )
        keras.utils.set_random_seed(config.base.seed)  # AutoKeras cleared the Keras session while building its graph
        classifier.tuner.deadline = deadline
        classifier.fit(
            data.x_train,
            y_train,
            validation_data=(data.x_val, y_val),
            epochs=config.base.epochs,
            batch_size=config.base.batch_size,
            # AutoKeras runs its own fit: early stopping within a trial goes in as a callback here.
            callbacks=[_early_stopping(config.base.patience), *callbacks],
            verbose=config.verbose,
        )
        rows = _trial_rows(classifier.tuner, autokeras=True)
        _require_completed(rows, Path(config.out) / AUTOKERAS_PROJECT)
        best_trial = classifier.tuner.oracle.get_best_trials(1)[0]
        best = classifier.export_model()
    model = autokeras_contract_model(best)
    normalizes = any(isinstance(layer, keras.layers.Normalization) for layer in model.layers)
    return _Searched(
        model=model,
        preprocessing=AUTOKERAS_PREPROCESSING[0] if normalizes else AUTOKERAS_PREPROCESSING[1],
        gradcam_layer=find_gradcam_layer(model),
        best_values=dict(best_trial.hyperparameters.values),
        best_score=float(best_trial.score),
        rows=rows,
        tuned_with=f"AutoKeras {ak.__version__} ImageClassifier (greedy, no pretrained weights)",
    )


# --------------------------------------------------------------------------------------------------------------------
# The search


def _early_stopping(patience: int) -> Any:
    import keras

    return keras.callbacks.EarlyStopping(monitor=OBJECTIVE, min_delta=1e-4, patience=patience)


def execute_tune(config: TuneConfig) -> TuneResult:
    """Run the search, evaluate the best model on the test split, export it (unless ``config.export`` is False),
    report. The search runs seeded (``training.fit.seeded``), with op determinism if ``config.deterministic``.

    With ``config.distributed`` this process is the chief (the same, the trials run by the workers) or a worker (it
    runs trials until the chief's oracle says the search is over, then writes ``OUT/workers/<tuner id>.json`` and
    returns its own trials; no evaluation, export or reports)."""
    with _keras_tuner_environ(config.distributed), seeded(config.base.seed, deterministic=config.deterministic):
        if config.distributed is not None and not config.distributed.is_chief:
            return _execute_worker(config)
        return _execute_tune(config)


@contextlib.contextmanager
def _keras_tuner_environ(distributed: DistributedTuning | None) -> Iterator[None]:
    """keras-tuner reads its distributed settings from the environment: set them as ``distributed`` says (unset
    them for a one-process search) while the search runs, then put back what was there."""
    saved = {name: os.environ.get(name) for name in ORACLE_ENV}
    wanted = distributed.environ() if distributed is not None else {}
    try:
        for name in ORACLE_ENV:
            if name in wanted:
                os.environ[name] = wanted[name]
            else:
                os.environ.pop(name, None)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _execute_worker(config: TuneConfig) -> TuneResult:
    """A distributed worker: train the trials the chief hands out, report them to it, record them."""
    assert config.distributed is not None
    base = config.base
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(base.dataset, image_size=base.size, seed=base.seed, max_examples=base.max_examples)
    if base.model in PRETRAINED_MODELS:
        data = data.as_rgb()
    callbacks: list[Any] = []
    deadline = None
    if config.time_limit is not None:
        deadline = time.perf_counter() + config.time_limit
        callbacks.append(_deadline_callback(deadline))
    hypermodel = _hypermodel(config, data)
    tuner = _tuner(config, hypermodel, out)
    tuner.deadline = deadline
    tuner.search(epochs=base.epochs, callbacks=callbacks, verbose=config.verbose)
    seconds = getattr(tuner, "trial_seconds", {})
    epochs = getattr(tuner, "epochs_run", {})
    rows = [
        {"trial_id": trial_id, "seconds": round(seconds[trial_id], 1), "epochs_run": epochs.get(trial_id)}
        for trial_id in sorted(seconds)
    ]
    wall = time.perf_counter() - start
    path = out / "workers" / f"{_safe(config.distributed.tuner_id)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tuner_id": config.distributed.tuner_id, "trials": rows, "wall_seconds": wall},
                               indent=2))
    return TuneResult(
        config=config,
        best_hyperparameters={},
        best_val_accuracy=float("nan"),
        test_accuracy=float("nan"),
        trials=tuple(rows),
        wall_seconds=wall,
        version_dir=None,
        files=(path,),
        tuned_with=f"keras_tuner {config.tuner} (worker {config.distributed.tuner_id})",
    )


def _execute_tune(config: TuneConfig) -> TuneResult:
    import keras

    base = config.base
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(base.dataset, image_size=base.size, seed=base.seed, max_examples=base.max_examples)
    if config.tuner != "autokeras" and base.model in PRETRAINED_MODELS:
        data = data.as_rgb()  # pretrained backbones take RGB
    # Keras Tuner's trials fit through training.fit.fit, which stops early on val_accuracy (base.patience); the
    # tuner gives each trial its own TensorBoard log dir (and adds the HParams callback).
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(out / "tb"), histogram_freq=0, write_graph=False)]
    deadline = None
    if config.time_limit is not None:
        deadline = time.perf_counter() + config.time_limit
        callbacks.append(_deadline_callback(deadline))
    search = _autokeras_search if config.tuner == "autokeras" else _keras_tuner_search
    searched = search(config, data, callbacks, deadline)
    model = searched.model
    if not getattr(model, "compiled", False):  # AutoKeras' model, re-wrapped for the contract
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    test_ds = array_dataset(data.x_test, data.y_test, max(base.batch_size, 64))
    test = model.evaluate(test_ds, verbose=0, return_dict=True)
    val = model.evaluate(array_dataset(data.x_val, data.y_val, 64), verbose=0, return_dict=True)
    metrics = {
        "val_accuracy": float(val["accuracy"]),
        "val_loss": float(val["loss"]),
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
    }
    version_dir = None
    if config.export:
        version_dir = _export(config, searched, data, metrics)
    result = TuneResult(
        config=config,
        best_hyperparameters=searched.best_values,
        best_val_accuracy=searched.best_score,
        test_accuracy=metrics["test_accuracy"],
        trials=tuple(searched.rows),
        wall_seconds=time.perf_counter() - start,
        version_dir=version_dir,
        tuned_with=searched.tuned_with,
    )
    files = _write_reports(result)
    return replace(result, files=tuple(files))


# --------------------------------------------------------------------------------------------------------------------
# CLI


def configure_tune(p: argparse.ArgumentParser) -> None:
    """Flags of ``glimpse tune``; imports nothing heavy."""
    add_run_flags(p)
    p.add_argument(
        "--tuner",
        choices=TUNERS,
        default="random",
        help="Keras Tuner's random, hyperband, bayesian; or autokeras: architecture search (--model/--weights unused)",
    )
    p.add_argument("--max-trials", type=int, default=10, help="number of trials (Hyperband: a cap on its brackets)")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="S",
        help="after S seconds of search start no new trial and end the running one after its current epoch",
    )
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


def _config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> TuneConfig:
    autokeras = args.tuner == "autokeras"
    # AutoKeras searches the architecture itself and trains from scratch: the base run is a scratch model's.
    model = "scratch" if autokeras else args.model
    image_size = args.image_size or (
        QUICK_IMAGE_SIZE if args.quick else default_image_size(args.dataset, model, pretrained_size=STUDY_IMAGE_SIZE)
    )
    epochs = args.epochs or (2 if args.quick and args.tuner == "hyperband" else 1 if args.quick else 6)
    max_trials = 2 if args.quick and args.max_trials == 10 else args.max_trials
    max_examples = args.max_examples or (QUICK_MAX_EXAMPLES if args.quick else None)
    dataset_name = _safe(args.dataset.split("/")[-1] if args.dataset.startswith("folder:") else args.dataset)
    base = TrainConfig(
        dataset=args.dataset,
        model=model,
        weights="none" if autokeras else args.weights,
        image_size=image_size,
        epochs=epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=args.seed,
        max_examples=max_examples,
        export_dir=str(args.export_dir),
        name=args.name or f"{dataset_name}-tuned",
    )
    return TuneConfig(
        out=args.out or Path("out") / "tuning" / f"{dataset_name}-{args.tuner}",
        base=base,
        tuner=args.tuner,
        max_trials=max_trials,
        export=not args.no_export,
        deterministic=not args.no_determinism,
        verbose=args.verbose if args.verbose == "auto" else int(args.verbose),
        time_limit=args.time_limit,
        distributed=distributed_tuning(env),
    )


def run_tune(args: argparse.Namespace) -> int:
    """``glimpse tune ...``: 0 on success, 2 with a one-line message on bad input."""
    try:
        config = _config_from_args(args)
    except ValueError as e:  # StudyError, or a TrainConfig value out of range
        print(f"glimpse tune: {e}", file=sys.stderr)
        return 2
    try:
        result = execute_tune(config)
    except user_errors() as e:
        print(f"glimpse tune: {e}", file=sys.stderr)
        return 2
    if config.distributed is not None and not config.distributed.is_chief:
        ran = ", ".join(str(row["trial_id"]) for row in result.trials) or "none"
        print(
            f"tune {config.tuner} worker {config.distributed.tuner_id}: trials {ran} in {result.wall_seconds:.0f} s; "
            f"the chief at {config.distributed.oracle_ip}:{config.distributed.oracle_port} reports"
        )
        return 0
    print(
        f"tune {config.tuner}: {len(result.trials)} trials in {result.wall_seconds:.0f} s; best val accuracy "
        f"{result.best_val_accuracy:.3f}, test accuracy {result.test_accuracy:.3f}; "
        + (f"exported to {result.version_dir}; " if result.version_dir else "")
        + f"reports in {config.out}"
    )
    return 0
