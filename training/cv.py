"""Cross-validation splits for ``glimpse train --cv K``: stratified K-fold, repeated, with an inner validation split.

On a dataset of a few hundred examples a single held-out split is too small to tell one recipe from another (one
Tux Paint test photo is 3 points). K-fold cross-validation tests every example exactly once per repeat, each time by
a model that never saw it. Early stopping needs a validation split too, and it must not be the fold's test part
(that would choose the epoch on the very examples being scored), so each fold's training part is split again: a
stratified inner validation split for early stopping, the rest for fitting.

NumPy only (no TensorFlow): the split logic is tested on its own, fast, and the training code only consumes indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "INNER_VAL_FRACTION",
    "CvFold",
    "CvSummary",
    "cv_folds",
    "stratified_kfold",
    "stratified_subset",
    "summarize",
]

# The share of a fold's training part held out for early stopping (Tux Paint's 15 of 85 is 0.18).
INNER_VAL_FRACTION = 0.15


@dataclass(frozen=True)
class CvFold:
    """One fold of one repeat: indices into the pooled examples (disjoint; together all of them)."""

    repeat: int  # 0-based
    fold: int  # 0-based
    train: np.ndarray  # what the fold's model fits on
    val: np.ndarray  # inner validation split, carved from the training part: early stopping only
    test: np.ndarray  # the fold's test part: scored once, never seen while fitting or early stopping

    @property
    def name(self) -> str:
        return f"repeat{self.repeat + 1}-fold{self.fold + 1}"


@dataclass(frozen=True)
class CvSummary:
    """The figures of a cross-validated run. ``std`` is the sample standard deviation (ddof=1) of the fold
    accuracies (0 for a single fold); ``pooled`` is correct predictions over all predictions (every example once per
    repeat)."""

    fold_accuracies: tuple[float, ...]
    mean: float
    std: float
    pooled: float
    correct: int
    predictions: int


def _by_class(labels: np.ndarray) -> dict[int, np.ndarray]:
    return {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}


def stratified_kfold(labels: Sequence[int] | np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Test indices of ``k`` stratified folds: each class's examples are shuffled (seeded) and dealt to the folds in
    turn, continuing where the previous class stopped, so that fold sizes differ by at most one and every class is
    spread as evenly as it can be. Every example is in exactly one fold."""
    y = np.asarray(labels).reshape(-1)
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    if k > len(y):
        raise ValueError(f"{k} folds need at least {k} examples, got {len(y)}")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    start = 0
    for _, idx in sorted(_by_class(y).items()):
        for j, i in enumerate(rng.permutation(idx)):
            folds[(start + j) % k].append(int(i))
        start = (start + len(idx)) % k
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def _inner_split(labels: np.ndarray, part: np.ndarray, fraction: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Split ``part`` (indices) into (train, val), stratified: each class gives ``fraction`` of its examples (rounded,
    at least one where it has two or more, never all of them)."""
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(labels[part]):
        idx = rng.permutation(part[labels[part] == c])
        n_val = round(len(idx) * fraction)
        if len(idx) >= 2:
            n_val = min(max(1, n_val), len(idx) - 1)
        else:
            n_val = 0
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def cv_folds(labels: Sequence[int] | np.ndarray, k: int, *, repeats: int = 1, seed: int = 42,
             inner_val_fraction: float = INNER_VAL_FRACTION) -> list[CvFold]:
    """``repeats`` x ``k`` folds: each repeat is a fresh stratified K-fold partition (seeded by ``seed`` and the
    repeat); each fold's training part gives a stratified inner validation split for early stopping."""
    y = np.asarray(labels).reshape(-1)
    if repeats < 1:
        raise ValueError(f"--cv-repeats must be at least 1, got {repeats}")
    if not 0.0 < inner_val_fraction < 1.0:
        raise ValueError(f"the inner validation fraction must be in (0, 1), got {inner_val_fraction}")
    folds: list[CvFold] = []
    everything = np.arange(len(y))
    for r in range(repeats):
        tests = stratified_kfold(y, k, seed + 1000 * r)
        rng = np.random.default_rng([seed, r])
        for f, test in enumerate(tests):
            rest = np.setdiff1d(everything, test, assume_unique=True)
            train, val = _inner_split(y, rest, inner_val_fraction, rng)
            folds.append(CvFold(r, f, train, val, test))
    return folds


def stratified_subset(labels: Sequence[int] | np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` examples drawn (seeded) so that each class keeps its share, at least one each where
    ``n`` allows (``--max-examples`` with ``--cv``: a small pool that still has every class)."""
    y = np.asarray(labels).reshape(-1)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    groups = {c: rng.permutation(idx) for c, idx in sorted(_by_class(y).items())}
    quota = {c: max(1, math.floor(n * len(idx) / len(y))) for c, idx in groups.items()}
    while sum(quota.values()) > n:  # more classes than n allows one each: drop from the largest quotas
        c = max(quota, key=lambda c: (quota[c], c))
        quota[c] -= 1
    order = sorted(groups, key=lambda c: (-len(groups[c]), c))
    while sum(quota.values()) < n:  # fill up, one at a time from the largest classes (n < len(y): room is left)
        for c in order:
            if sum(quota.values()) < n and quota[c] < len(groups[c]):
                quota[c] += 1
    chosen = np.concatenate([groups[c][: quota[c]] for c in groups])
    return np.sort(chosen.astype(np.int64))


def summarize(fold_accuracies: Sequence[float], correct: int, predictions: int) -> CvSummary:
    """Mean and sample standard deviation of the fold accuracies, and the pooled accuracy."""
    if not fold_accuracies or predictions < 1:
        raise ValueError("no folds to summarize")
    acc = np.asarray(fold_accuracies, dtype=np.float64)
    std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
    return CvSummary(tuple(float(a) for a in acc), float(acc.mean()), std, correct / predictions, int(correct),
                     int(predictions))
