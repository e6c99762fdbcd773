"""Cross-validation: the split logic (stratified, disjoint, every example tested once per repeat, early stopping never
sees a fold's test part), and one small real ``glimpse train --cv 2`` run with its printed line, metrics file and
model card."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from training.cv import cv_folds, stratified_kfold, stratified_subset, summarize

# Tux Paint's class sizes: imbalanced, with small classes (9 insects).
TUX_COUNTS = (65, 35, 26, 25, 19, 18, 11, 9)


def _labels(counts=TUX_COUNTS, seed=0):
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_kfold_partitions_every_example_once_and_stratifies(k):
    y = _labels()
    folds = stratified_kfold(y, k, seed=3)
    assert len(folds) == k
    everything = np.concatenate(folds)
    assert sorted(everything.tolist()) == list(range(len(y)))  # disjoint and complete
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for c, n in enumerate(TUX_COUNTS):  # each class spread as evenly as it can be
        per_fold = [int(np.sum(y[f] == c)) for f in folds]
        assert sum(per_fold) == n and max(per_fold) - min(per_fold) <= 1, (c, per_fold)


def test_kfold_is_seeded():
    y = _labels()
    a, b, c = (stratified_kfold(y, 5, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x, z) for x, z in zip(a, b, strict=True))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_cv_folds_every_example_tested_exactly_once_per_repeat():
    y = _labels()
    folds = cv_folds(y, 5, repeats=3, seed=7)
    assert len(folds) == 15 and [f.name for f in folds[:2]] == ["repeat1-fold1", "repeat1-fold2"]
    partitions = []
    for r in range(3):
        tested = np.concatenate([f.test for f in folds if f.repeat == r])
        assert sorted(tested.tolist()) == list(range(len(y)))
        partitions.append(tuple(tuple(f.test.tolist()) for f in folds if f.repeat == r))
    assert len(set(partitions)) == 3  # each repeat is a fresh partition


def test_no_leakage_of_the_test_part_into_fitting_or_early_stopping():
    y = _labels()
    for fold in cv_folds(y, 5, repeats=2, seed=11):
        train, val, test = (set(a.tolist()) for a in (fold.train, fold.val, fold.test))
        assert not train & test and not val & test and not train & val  # disjoint
        assert train | val | test == set(range(len(y)))  # and nothing is left out
        assert val, "every fold has an inner validation split to early-stop on"
        # the inner validation split is stratified too: every class of the training part that can spare one
        for c in np.unique(y[fold.train]):
            in_part = int(np.sum(y[fold.train] == c)) + int(np.sum(y[fold.val] == c))
            assert (int(np.sum(y[fold.val] == c)) >= 1) == (in_part >= 2)


def test_inner_validation_share_and_errors():
    y = _labels()
    fold = cv_folds(y, 5, seed=0, inner_val_fraction=0.2)[0]
    share = len(fold.val) / (len(fold.val) + len(fold.train))
    assert 0.15 < share < 0.3
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_kfold(y, 1, seed=0)
    with pytest.raises(ValueError, match="examples"):
        stratified_kfold([0, 1, 0], 5, seed=0)
    with pytest.raises(ValueError, match="repeats"):
        cv_folds(y, 5, repeats=0)


def test_stratified_subset_keeps_every_class():
    y = _labels()
    idx = stratified_subset(y, 40, seed=3)
    assert len(idx) == 40 and len(set(idx.tolist())) == 40
    assert set(np.unique(y[idx]).tolist()) == set(range(len(TUX_COUNTS)))
    assert np.array_equal(idx, stratified_subset(y, 40, seed=3))
    assert np.array_equal(stratified_subset(y, 10_000, seed=3), np.arange(len(y)))


def test_summarize_mean_sample_std_and_pooled():
    s = summarize([0.8, 0.9, 1.0], correct=27, predictions=30)
    assert s.mean == pytest.approx(0.9) and s.std == pytest.approx(0.1) and s.pooled == pytest.approx(0.9)
    assert summarize([0.5], 1, 2).std == 0.0


@pytest.mark.slow
def test_cli_cv_prints_the_line_writes_metrics_and_records_cv_in_the_card(tmp_path, capsys):
    from glimpse.cli import main

    out = tmp_path / "metrics.json"
    rc = main(["train", "--dataset", "tuxpaint", "--model", "scratch", "--image-size", "32", "--epochs", "2",
               "--batch-size", "16", "--max-examples", "40", "--seed", "7", "--cv", "2",
               "--logdir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "m"), "--name", "tux",
               "--metrics-out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    line = re.search(r"cv_accuracy=(\d\.\d{4}) ± (\d\.\d{4}) over 2 folds; cv_pooled_accuracy=(\d\.\d{4}) "
                     r"\((\d+)/40 predictions\)", printed)
    assert line, printed
    metrics = json.loads(out.read_text())
    assert len(metrics["cv_fold_accuracies"]) == 2 and metrics["cv_examples"] == 40
    assert metrics["cv_accuracy_mean"] == pytest.approx(np.mean(metrics["cv_fold_accuracies"]))
    assert metrics["cv_accuracy_std"] == pytest.approx(np.std(metrics["cv_fold_accuracies"], ddof=1))
    assert metrics["cv_pooled_accuracy"] == pytest.approx(int(line.group(4)) / 40)
    assert float(line.group(1)) == pytest.approx(metrics["cv_accuracy_mean"], abs=1e-4)
    assert {"test_accuracy", "val_accuracy", "wall_s", "epochs_run"} <= set(metrics)
    assert metrics["epochs_run"] == round(float(np.median(metrics["cv_fold_best_epochs"])))
    card = json.loads((tmp_path / "m" / "tux" / "1" / "assets.extra" / "model_card.json").read_text())
    assert card["metrics"]["cv_accuracy_mean"] == pytest.approx(metrics["cv_accuracy_mean"])
    assert card["metrics"]["cv_pooled_accuracy"] == pytest.approx(metrics["cv_pooled_accuracy"])
    assert card["training"]["cv"] == 2 and card["cross_validation"]["final_examples"] == 40
    assert [f["num_test"] for f in card["cross_validation"]["folds"]] == [20, 20]
    assert not (tmp_path / "m" / "tux" / "2").exists()
    # TensorBoard: one run per fold, and one for the model trained on all the examples
    run_dir = next((tmp_path / "runs").iterdir())
    assert {p.name for p in run_dir.iterdir() if p.is_dir()} == {"repeat1-fold1", "repeat1-fold2", "all"}
    assert list((run_dir / "repeat1-fold1").glob("validation/events.out.tfevents.*"))
