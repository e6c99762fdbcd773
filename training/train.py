"""Seeded, logged training runs that end in an exported, explainable model.

``train(TrainConfig(...))`` loads the data, builds the model, fits it with early stopping and TensorBoard logging
(scalars, weight histograms, sample images, the HParams record), evaluates on the held-out split and exports the
model through the model contract.

With ``config.cv = K`` it cross-validates instead (``training.cv``): K folds (times ``cv_repeats``) over every
example, each fold fitted from the same initialisation and early-stopped on an inner validation split, then one model
trained on all the examples for the epoch count the folds chose is exported. With ``config.distribute`` the fit runs
under a ``tf.distribute`` strategy (``training.distribute``); the chief alone logs and exports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.cv import cv_folds, stratified_subset, summarize
from training.data import load_dataset, load_pool
from training.distribute import Distribution, backup_dir, make_distribution
from training.export import export_classifier
from training.fit import (
    LR_SCHEDULES,
    OPTIMIZERS,
    FitData,
    TrainConfig,
    build_classifier,
    default_image_size,
    epoch_timer,
    fit,
    hparams_of,
    make_optimizer,
    recipe_config,
    seed_everything,
    seeded,
    write_hparams,
)
from training.models import build_model

__all__ = [
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "TrainConfig",
    "TrainResult",
    "default_image_size",
    "epoch_timer",
    "make_optimizer",
    "pipeline_benchmark",
    "run_pipeline_benchmarks",
    "seed_everything",
    "train",
    "write_metrics",
]


@dataclasses.dataclass
class TrainResult:
    model: Any
    history: dict[str, list[float]]
    metrics: dict[str, float]
    wall_s: float
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    version_dir: Path | None = None
    run_dir: Path | None = None
    class_names: tuple[str, ...] = ()
    chief: bool = True  # False on the other workers of a multi-worker run (they neither log nor export)


def write_metrics(path: str | Path, result: TrainResult) -> Path:
    """``glimpse train --metrics-out``: the run's metrics and its wall time (``wall_s``) as one JSON object."""
    out = Path(path)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result.metrics, "wall_s": round(result.wall_s, 3)}, indent=1) + "\n")
    return out


def _unique_run_dir(logdir: str, stem: str) -> Path:
    """``logdir/stem-<timestamp>``, with a counter when two runs start within the same second."""
    base = Path(logdir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


def _log_run_start(run_dir: Path, splits: Any, config: TrainConfig) -> None:
    import tensorflow as tf

    with tf.summary.create_file_writer(str(run_dir / "samples")).as_default():
        for images, _ in splits.train.take(1):
            tf.summary.image("train_samples", images[:8] / 255.0, max_outputs=8, step=0)
        tf.summary.text("config", json.dumps(dataclasses.asdict(config), indent=1), step=0)


def train(config: TrainConfig, *, export: bool = True, callbacks: Sequence[Any] = (), verbose: int | str = "auto"
          ) -> TrainResult:
    """Train, evaluate on the test split, and (``export=True``) export the next version of the model.

    The run is seeded with ``config.seed`` and TF op determinism is on while it runs: two runs with the same config
    and data give identical weights and metrics. ``callbacks`` are added to Keras' fit; ``verbose`` is fit's.
    ``config.cv``: cross-validate (see the module docstring); ``config.distribute``: fit under a strategy.
    """
    t_start = time.perf_counter()
    dist = make_distribution(config.distribute)  # first: the multi-worker strategy must precede other TF work
    with seeded(config.seed):
        if config.cv:
            return _train_cv(config, export=export, callbacks=callbacks, verbose=verbose, t_start=t_start)
        return _train(config, export=export, callbacks=callbacks, verbose=verbose, t_start=t_start, dist=dist)


def _start_epoch_callback() -> Any:
    """A Keras callback whose ``epoch`` is the 0-based epoch the fit began at (after a backup was restored)."""
    import keras

    class StartEpoch(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epoch: int | None = None

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if self.epoch is None:
                self.epoch = epoch

    return StartEpoch()


def _train(config: TrainConfig, *, export: bool, callbacks: Sequence[Any], verbose: int | str, t_start: float,
           dist: Distribution) -> TrainResult:
    # Under a strategy, --batch-size is per replica and the learning rate scales with the replicas (linear rule).
    fit_config = config if dist.replicas == 1 else dataclasses.replace(
        config, batch_size=config.batch_size * dist.replicas, lr=config.lr * dist.replicas)
    splits = load_dataset(config.dataset, image_size=config.size, seed=config.seed, max_examples=config.max_examples,
                          batch_size=fit_config.batch_size, augment=config.augment)
    train_ds, val_ds, test_ds = (dist.shard(ds, config.dataset) for ds in (splits.train, splits.val, splits.test))
    channels = splits.channels  # grey stays grey: pretrained models repeat it to RGB inside
    num_classes = len(splits.class_names)
    # Under a strategy, fit builds the model inside the strategy's scope.
    model, info = build_classifier(config, num_classes, channels) if dist.strategy is None else (None, None)
    run_dir = None
    if dist.chief:  # TensorBoard from the chief only
        run_dir = _unique_run_dir(config.logdir, f"{config.model_name}-{config.model}")
        _log_run_start(run_dir, splits, config)
    run_callbacks = list(callbacks)
    if config.explain_every:
        from training.callbacks import ExplainCallbackConfig, explanation_callbacks  # TF and tf-explain at import

        run_callbacks += explanation_callbacks(
            model, gradcam_layer=info.gradcam_layer, validation=splits.val, class_names=splits.class_names,
            log_dir=run_dir / "explain",
            config=ExplainCallbackConfig(every=config.explain_every, num_images=config.explain_images))
    start_epoch = None
    if dist.strategy is not None:
        import keras

        # A restarted worker resumes at the epoch its backup recorded (the backup is deleted when the fit ends).
        start_epoch = _start_epoch_callback()
        backup = backup_dir(config.logdir, f"{config.model_name}-{config.model}", dist.task)
        run_callbacks = [keras.callbacks.BackupAndRestore(str(backup)), start_epoch, *run_callbacks]
    fitted = fit(fit_config, FitData(train_ds, num_classes, channels, splits.num_train, val=val_ds), model=model,
                 callbacks=run_callbacks, log_dir=run_dir, histograms=True, verbose=verbose, strategy=dist.strategy)
    model, hist, info = fitted.model, fitted.history, info or fitted.info
    val_loss, val_acc = model.evaluate(val_ds, verbose=0)
    best_epoch = fitted.best_epoch
    refit: dict[str, int] = {}
    if config.refit:
        # The validation split has chosen the epoch count; now it becomes training data too. Same seed, same
        # initialisation and the same learning-rate path per epoch, on train+val for best_epoch epochs. The
        # reported validation accuracy stays the early-stopped run's: the refit model has seen those examples.
        examples = splits.num_train + splits.num_val
        model = fit(config, FitData(splits.train_and_val(), num_classes, channels, examples), epochs=best_epoch,
                    log_dir=run_dir / "refit", verbose=verbose).model
        refit = {"refit_epochs": best_epoch, "refit_examples": examples}
    test_loss, test_acc = model.evaluate(test_ds, verbose=0)
    wall = time.perf_counter() - t_start
    metrics = {
        "test_accuracy": float(test_acc), "test_loss": float(test_loss),
        "val_accuracy": float(val_acc), "val_loss": float(val_loss),
        "epochs_run": len(hist["loss"]), "best_epoch": best_epoch, **refit, "train_seconds": round(wall, 1),
    }
    distribution: dict[str, Any] = {}
    if dist.strategy is not None:
        metrics["start_epoch"] = int(start_epoch.epoch or 0)
        distribution = dist.describe(config.batch_size, config.lr)
    if run_dir is not None:
        write_hparams(run_dir, hparams_of(config), metrics, trial_id=run_dir.name, metric_prefix="hparams/")

    version_dir = None
    if export and dist.chief:
        if dist.strategy is not None:  # export a plain copy: the same SavedModel as a run without a strategy
            plain, _ = build_classifier(config, num_classes, channels)
            plain.set_weights(model.get_weights())
            model = plain
        card = {
            "training": {**dataclasses.asdict(config), "image_size": config.size, "name": config.model_name},
            "dataset": splits.describe(),
            "metrics": metrics,
            **({"distribution": distribution} if distribution else {}),
        }
        version_dir = export_classifier(model, splits.class_names, config.export_dir, config.model_name,
                                        image_size=config.size, channels=channels, preprocessing=info.preprocessing,
                                        gradcam_layer=info.gradcam_layer, card=card, examples=splits.test_records())
    print(
        f"[glimpse] {config.model} on {config.dataset}: val_accuracy={val_acc:.4f} test_accuracy={test_acc:.4f} "
        f"epochs={metrics['epochs_run']}"
        + (f" refit={best_epoch} epochs on {refit['refit_examples']} examples" if refit else "")
        + (f" distribute={dist.mode} replicas={dist.replicas} task={dist.task} resumed_at_epoch="
           f"{metrics['start_epoch']}" if distribution else "")
        + f" wall={wall:.1f}s"
        + (f" exported={version_dir}" if version_dir else ""),
        flush=True,
    )
    return TrainResult(model, hist, metrics, wall, fitted.epoch_seconds, version_dir, run_dir, splits.class_names,
                       dist.chief)


def _train_cv(config: TrainConfig, *, export: bool, callbacks: Sequence[Any], verbose: int | str, t_start: float
              ) -> TrainResult:
    pool = load_pool(config.dataset, image_size=config.size, seed=config.seed, batch_size=config.batch_size,
                     augment=config.augment)
    chosen = (np.arange(len(pool)) if config.max_examples is None
              else stratified_subset(pool.labels, config.max_examples, config.seed))
    folds = cv_folds(pool.labels[chosen], config.cv, repeats=config.cv_repeats, seed=config.seed)
    num_classes = len(pool.class_names)
    run_dir = _unique_run_dir(config.logdir, f"{config.model_name}-{config.model}-cv{config.cv}")
    records: list[dict[str, Any]] = []
    correct = predictions = 0
    epoch_seconds: list[float] = []
    for fold in folds:
        train_idx, val_idx, test_idx = chosen[fold.train], chosen[fold.val], chosen[fold.test]
        if not len(val_idx) or not len(train_idx):
            raise ValueError(f"too few examples for {config.cv} folds with an inner validation split "
                             f"({len(chosen)} examples)")
        with seeded(config.seed):  # every fold starts from the same initialisation and the same random streams
            fitted = fit(config, FitData(pool.dataset(train_idx, train=True), num_classes, pool.channels,
                                         len(train_idx), val=pool.dataset(val_idx, train=False)),
                         callbacks=callbacks, log_dir=run_dir / fold.name, verbose=verbose)
        probabilities = fitted.model.predict(pool.dataset(test_idx, train=False), verbose=0)
        right = int(np.sum(np.argmax(probabilities, axis=-1) == pool.labels[test_idx]))
        correct, predictions = correct + right, predictions + len(test_idx)
        epoch_seconds += fitted.epoch_seconds
        record = {"repeat": fold.repeat + 1, "fold": fold.fold + 1, "test_accuracy": right / len(test_idx),
                  "val_accuracy": fitted.best_val_accuracy, "best_epoch": fitted.best_epoch,
                  "epochs_run": len(fitted.history["loss"]), "num_train": len(train_idx), "num_val": len(val_idx),
                  "num_test": len(test_idx)}
        records.append(record)
        write_hparams(run_dir / fold.name, hparams_of(config, cv_fold=fold.name),
                      {k: float(record[k]) for k in ("test_accuracy", "val_accuracy", "best_epoch")},
                      trial_id=f"{run_dir.name}/{fold.name}", metric_prefix="hparams/")
        print(f"[glimpse] cv {fold.name}: test_accuracy={record['test_accuracy']:.4f} ({right}/{len(test_idx)}) "
              f"val_accuracy={record['val_accuracy']:.4f} best_epoch={fitted.best_epoch}", flush=True)
    summary = summarize([r["test_accuracy"] for r in records], correct, predictions)
    best_epochs = [r["best_epoch"] for r in records]
    final_epochs = max(1, round(statistics.median(best_epochs)))
    metrics: dict[str, Any] = {
        "test_accuracy": summary.mean,  # the cross-validated estimate of held-out accuracy
        "val_accuracy": float(np.mean([r["val_accuracy"] for r in records])),
        "epochs_run": final_epochs,  # what the model trained on all the examples runs (the folds' median best)
        "cv_accuracy_mean": summary.mean, "cv_accuracy_std": summary.std,
        "cv_fold_accuracies": list(summary.fold_accuracies), "cv_pooled_accuracy": summary.pooled,
        "cv_folds": config.cv, "cv_repeats": config.cv_repeats, "cv_examples": len(chosen),
        "cv_fold_best_epochs": best_epochs,
    }
    repeats = f" x {config.cv_repeats} repeats" if config.cv_repeats > 1 else ""
    print(f"[glimpse] {config.model} on {config.dataset}: cv_accuracy={summary.mean:.4f} ± {summary.std:.4f} "
          f"over {config.cv} folds{repeats}; cv_pooled_accuracy={summary.pooled:.4f} "
          f"({summary.correct}/{summary.predictions} predictions)", flush=True)

    model = None
    version_dir = None
    if export:
        # The folds have measured the recipe; the exported model is that recipe trained on every example, for the
        # median of the epoch counts early stopping chose in the folds (no validation split is left to stop on).
        with seeded(config.seed):
            fitted_all = fit(config, FitData(pool.dataset(chosen, train=True), num_classes, pool.channels,
                                             len(chosen)), epochs=final_epochs, callbacks=callbacks,
                             log_dir=run_dir / "all", verbose=verbose)
        model, info = fitted_all.model, fitted_all.info
        metrics["final_examples"] = len(chosen)
        card = {
            "training": {**dataclasses.asdict(config), "image_size": config.size, "name": config.model_name},
            "dataset": pool.describe(),
            "metrics": metrics,
            "cross_validation": {"folds": records, "final_epochs": final_epochs, "final_examples": len(chosen),
                                 "inner_validation": "stratified share of each fold's training part"},
        }
        version_dir = export_classifier(model, pool.class_names, config.export_dir, config.model_name,
                                        image_size=config.size, channels=pool.channels,
                                        preprocessing=info.preprocessing, gradcam_layer=info.gradcam_layer,
                                        card=card, examples=pool.records(chosen))
    wall = time.perf_counter() - t_start
    metrics["train_seconds"] = round(wall, 1)
    write_hparams(run_dir, hparams_of(config), {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
                  trial_id=run_dir.name, metric_prefix="hparams/")
    print(f"[glimpse] cv wall={wall:.1f}s" + (f" exported={version_dir} (trained on all {len(chosen)} examples for "
                                              f"{final_epochs} epochs)" if version_dir else ""), flush=True)
    return TrainResult(model, {}, metrics, wall, epoch_seconds, version_dir, run_dir, pool.class_names)


def pipeline_benchmark(dataset: str = "tuxpaint", model: str = "efficientnet_lite0", image_size: int = 128,
                       steps: int = 20, batch_size: int = 32, rounds: int = 3, max_examples: int | None = None
                       ) -> dict[str, float]:
    """Seconds per training step with the real input pipeline vs the same step on synthetic tensors in memory.

    A ratio near 1 means the pipeline keeps up with the model (it is not the bottleneck). The real pipeline is
    timed after one full pass (its cache is filled, as in every epoch after the first); augmentation is included.
    The two are timed alternately ``rounds`` times, ``steps`` steps each, and the medians compared, so that load from
    other processes hits both alike. ``max_examples`` caps the training split (a shorter first pass).
    """
    import statistics

    import keras
    import numpy as np
    import tensorflow as tf

    if steps < 1 or rounds < 1:
        raise ValueError("steps and rounds must be at least 1")
    keras.utils.set_random_seed(0)
    splits = load_dataset(dataset, image_size=image_size, batch_size=batch_size, seed=0, max_examples=max_examples)
    m, _ = build_model(model, len(splits.class_names), image_size=image_size, channels=splits.channels)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    real = splits.train.repeat()
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch_size, image_size, image_size, splits.channels)),
                    tf.float32)
    y = tf.constant(np.zeros(batch_size), tf.int32)
    synthetic = tf.data.Dataset.from_tensors((x, y)).repeat()
    m.fit(synthetic, steps_per_epoch=3, epochs=1, shuffle=False, verbose=0)  # build and warm up
    one_pass = math.ceil(splits.num_train / batch_size) + 1
    m.fit(real, steps_per_epoch=one_pass, epochs=1, shuffle=False, verbose=0)  # fill the cache, trace a short batch

    def timed(ds: Any) -> float:
        t0 = time.perf_counter()
        m.fit(ds, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
        return (time.perf_counter() - t0) / steps

    synthetic_times: list[float] = []
    real_times: list[float] = []
    for _ in range(rounds):
        synthetic_times.append(timed(synthetic))
        real_times.append(timed(real))
    real_s, synthetic_s = statistics.median(real_times), statistics.median(synthetic_times)
    return {"real_step_s": real_s, "synthetic_step_s": synthetic_s, "ratio": real_s / synthetic_s,
            "steps": steps, "rounds": rounds, "batch_size": batch_size, "image_size": image_size}


def recipe_epoch_benchmark(dataset: str = "fashion_mnist", *, steps: int = 20, rounds: int = 3,
                           max_examples: int = 5120) -> dict[str, float]:
    """Seconds per epoch of ``glimpse train --dataset DATASET`` at its recipe (``recipe_config``): float32 as
    trained, against the same steps under XLA (``jit_compile=True``) and under bf16 mixed precision.

    Each variant is the recipe's model and optimizer over the recipe's real input pipeline (augmentation included,
    its cache filled first); the variants are timed alternately ``rounds`` times, ``steps`` steps each. A step is the
    interval between two batch ends inside one ``fit`` (so ``fit``'s own start-up and the refill of the shuffle
    buffer at each new iterator are left out, as they are once per epoch, not once per step), and an epoch is the
    median step x the steps of one epoch over the full training split (the pipeline is capped at ``max_examples``
    only to fill its cache sooner: a cached step does not depend on the split's size).
    """
    import keras

    if steps < 1 or rounds < 1:
        raise ValueError("steps and rounds must be at least 1")
    config = recipe_config(dataset)
    size = config.image_size or default_image_size(dataset, config.model)
    kwargs = {"image_size": size, "batch_size": config.batch_size, "seed": config.seed, "augment": config.augment}
    splits = load_dataset(dataset, max_examples=max_examples, **kwargs)
    full_split = load_dataset(dataset, **kwargs).num_train  # the split is only sized, never iterated
    epoch_steps = math.ceil(full_split / config.batch_size)
    real = splits.train.repeat()
    models = {}
    for variant in ("float32", "xla", "bf16"):
        keras.utils.set_random_seed(config.seed)
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if variant == "bf16" else "float32")
        try:
            m, _ = build_model(config.model, len(splits.class_names), image_size=size, channels=splits.channels,
                               dropout=config.dropout, dense_units=config.dense_units, seed=config.seed)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        m.compile(optimizer=make_optimizer(config.optimizer, config.lr), loss="sparse_categorical_crossentropy",
                  jit_compile=variant == "xla")
        fill = math.ceil(splits.num_train / config.batch_size) + 1  # one pass fills the cache
        m.fit(real, steps_per_epoch=fill, epochs=1, shuffle=False, verbose=0)
        models[variant] = m

    class StepEnds(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.ends.append(time.perf_counter())

    skip = 2  # the first intervals of a fit wait for the new iterator's shuffle buffer
    times: dict[str, list[float]] = {v: [] for v in models}
    for _ in range(rounds):
        for variant, m in models.items():
            ends = StepEnds()
            m.fit(real, steps_per_epoch=steps + skip + 1, epochs=1, shuffle=False, verbose=0, callbacks=[ends])
            times[variant] += [b - a for a, b in zip(ends.ends[skip:], ends.ends[skip + 1:], strict=False)]
    out = {f"{v}_epoch_s": statistics.median(t) * epoch_steps for v, t in times.items()}
    return {**out, "epoch_steps": epoch_steps, "epochs": config.epochs, "batch_size": config.batch_size,
            "image_size": size, "model": config.model, "augment": config.augment}


def run_pipeline_benchmarks(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for ``glimpse bench --suite pipeline``: Tux Paint into a frozen Lite0, Fashion-MNIST into scratch_bn."""
    rows = []
    cases = (
        ("tuxpaint", "efficientnet_lite0", 128, 32, None, "real tuxpaint pipeline (all 144, basic augmentation)"),
        ("fashion_mnist", "scratch_bn", 28, 256, 5120, "real fashion_mnist pipeline (5120, basic augmentation)"),
    )
    for dataset, model, size, batch, cap, what in cases:
        r = pipeline_benchmark(dataset, model, size, steps=5 if quick else 20, batch_size=batch,
                               rounds=1 if quick else 3, max_examples=cap)
        rows.append({
            "name": f"training step, {what} vs synthetic tensors ({model}, {size}px, batch {batch})",
            "ours_s": r["real_step_s"], "baseline_s": r["synthetic_step_s"], "ratio": r["ratio"],
            "note": "ratio ~1: the input pipeline is not the bottleneck; medians of alternating rounds",
        })
    r = recipe_epoch_benchmark("fashion_mnist", steps=5 if quick else 20, rounds=1 if quick else 3)
    recipe = f"fashion_mnist recipe: {r['model']} {r['image_size']}px, batch {r['batch_size']}, {r['augment']}"
    base = r["float32_epoch_s"]
    rows.append({"name": f"epoch seconds of the default recipe [{recipe}]", "ours_s": base,
                 "note": f"median step x {r['epoch_steps']} steps, float32 as trained; its {r['epochs']} epochs: "
                         f"{base * r['epochs'] / 60:.1f} min of training"})
    for variant, what in (("xla", "XLA (jit_compile)"), ("bf16", "bf16 mixed precision")):
        ours = r[f"{variant}_epoch_s"]
        rows.append({"name": f"epoch seconds of the default recipe, {what} vs float32", "ours_s": ours,
                     "baseline_s": base, "ratio": ours / base,
                     "note": "timed alternately with float32 in the same run; < 1 would make it worth switching on"})
    return rows
