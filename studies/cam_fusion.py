"""How the CAM methods fuse their layers' maps: the rules compared on the default export's localization sets.

LayerCAM (and Grad-CAM++ and HiResCAM with ``layers`` > 1) computes one map per conv layer, each made positive,
upsampled to the input and divided by its own maximum (``training.explain.cams``), then fuses them. This study
computes LayerCAM's per-layer maps once on the composites of ``studies.localization_default`` (the same sets, the same
cached default ``glimpse train`` models, the true class explained) and scores each fusion rule with the same
figures: strict pointing game and the share of the map's mass inside the object's box.

Rules (over the deepest ``n`` layers, deepest first):

- ``mean``: the arithmetic mean (Glimpse's first rule);
- ``geometric``: the geometric mean, high only where every layer is (the contract's rule);
- ``minimum``: the pixelwise minimum, the strictest agreement;
- ``max-tanh``: the LayerCAM paper's, the maximum of the deep map and ``tanh(2 x)`` of the shallower ones.

``python -m studies.cam_fusion --seeds 3`` prints a table per test variant (means over the seeds);
``--seed 3 --seeds 2`` runs other seeds, whose models and composites the rule was not chosen on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from studies.localization_default import (
    DEFAULT_CACHE,
    BenchConfig,
    _default_explainer,
    box_distance,
    make_sets,
    mass_in_box,
    train_default_model,
)
from training.explain.cams import FUSION_FLOOR
from training.fit import TrainConfig

__all__ = ["FUSIONS", "layer_maps", "main", "score_fusions"]

# name -> (per-layer maps [n][B,H,W] in [0, 1], deepest first) -> fused [B,H,W]
FUSIONS: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "mean": lambda maps: np.mean(maps, axis=0),
    "geometric": lambda maps: np.exp(np.mean([np.log(np.maximum(m, FUSION_FLOOR)) for m in maps], axis=0)),
    "minimum": lambda maps: np.min(maps, axis=0),
    "max-tanh": lambda maps: np.max([maps[0], *(np.tanh(2.0 * m) for m in maps[1:])], axis=0),
}


def layer_maps(explainer, images: np.ndarray, labels: np.ndarray, batch: int = 16) -> list[np.ndarray]:
    """LayerCAM's per-layer maps [B,H,W] of ``images`` for ``labels``, every activation layer, deepest first: ReLU,
    bilinear upsampling, division by the maximum (the graph's own per-layer step, ``cams.normalised_up``, eagerly)."""
    import tensorflow as tf

    from training.explain.cams import class_score, deepest_first, normalised_up
    from training.explain.layercam import layercam_map

    model = explainer._model
    order = deepest_first(model)
    size = model.image_shape[:2]
    per_layer: list[list[np.ndarray]] = [[] for _ in order]
    for start in range(0, len(images), batch):
        x = tf.constant(images[start : start + batch], tf.float32)
        with tf.GradientTape() as tape:
            fwd, outputs = model.cam_forward(x)
            score = class_score(fwd, tf.constant(labels[start : start + batch], tf.int32))
        sources = [outputs[i] for i in order]
        for k, (a, g) in enumerate(zip(sources, tape.gradient(score, sources), strict=True)):
            per_layer[k].append(normalised_up(layercam_map(a, g), size).numpy())
    return [np.concatenate(maps) for maps in per_layer]


def score_fusions(seed: int, layers: Sequence[int], cache_dir: Path = DEFAULT_CACHE) -> dict[str, dict[str, dict]]:
    """Per variant and ``rule, layers=n``: {"pointing", "mass_in_box"} for one seed's model and composites."""
    config = BenchConfig(seed=seed)
    train, tests = make_sets(config, TrainConfig().size)
    model, _ = train_default_model(config, train, cache_dir, log=lambda message: None)
    explainer = _default_explainer(model)
    out: dict[str, dict[str, dict]] = {}
    for variant, data in tests.items():
        maps = layer_maps(explainer, data.images.astype(np.float32), data.labels)
        for n in layers:
            for name, fuse in FUSIONS.items():
                fused = fuse(maps[:n])
                out.setdefault(variant, {})[f"{name}, layers={n}"] = {
                    "pointing": float((box_distance(fused, data.boxes) == 0).mean()),
                    "mass_in_box": float(mass_in_box(fused, data.boxes).mean()),
                }
    return out


def _table(results: Sequence[dict[str, dict[str, dict]]]) -> str:
    lines = []
    for variant in results[0]:
        lines += [f"`{variant}`", "", "| fusion | pointing game | mass in box |", "|---|---|---|"]
        for row in results[0][variant]:
            pointing = [r[variant][row]["pointing"] for r in results]
            mass = [r[variant][row]["mass_in_box"] for r in results]
            lines.append(f"| {row} | {np.mean(pointing):.3f} ({min(pointing):.2f}-{max(pointing):.2f}) | "
                         f"{np.mean(mass):.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.cam_fusion", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--layers", default="3", help="Layer counts to fuse, comma-separated (default 3).")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    layers = [int(n) for n in args.layers.split(",")]
    if args.seeds < 1 or min(layers) < 2:
        print("error: --seeds must be >= 1 and every --layers count >= 2", file=sys.stderr)
        return 2
    results = []
    for k in range(args.seeds):
        results.append(score_fusions(args.seed + k, layers, args.cache_dir))
        print(f"## seed {args.seed + k}\n" + _table(results[-1:]), flush=True)
    print(f"## mean over seeds {args.seed}-{args.seed + args.seeds - 1}\n" + _table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
