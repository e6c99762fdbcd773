"""The channels of one conv layer (tf-explain's ActivationsVisualization), per image: no class attribution.

Channel k goes to tile (k // n, k % n) of an n x n grid, n = ceil(sqrt(K)), missing tiles zero, the whole grid min-max
normalised, as tf-explain's ``ExtractActivations`` + ``utils.display.filter_display`` lay them out. The deliberate
difference: tf-explain tiles the channels of every image of a batch into one grid and normalises them together;
Glimpse makes one grid per image (the contract is per example), so a batch of one is tf-explain's grid. The layer is
chosen per example among the model's ``activation_layers`` (-1 = the Grad-CAM layer); outputs are padded to the
largest of them (``glimpse_wire.contract.ACTIVATIONS_OUTPUTS``). Cost: one forward pass per image; every layer is
tiled, then each image keeps its own.
"""

from __future__ import annotations

import math

import tensorflow as tf

from glimpse_wire.contract import (
    ACTIVATIONS_METHOD,
    OUT_ACTIVATION_SHAPE,
    OUT_ACTIVATIONS,
    OUT_CLASS_INDEX,
    OUT_GRID,
    OUT_GRID_SHAPE,
    OUT_LAYER,
    OUT_LAYER_NAME,
    OUT_PROBABILITIES,
    OUT_SCORE,
)
from training.explain.base import ExplainMethod, Inputs, gate, minmax_heatmap, target_class
from training.explain.model import ExplainModel

__all__ = ["METHOD", "grid_side", "grid_shapes", "tile_channels", "activation_grid", "explain_activations"]


def grid_side(channels: int) -> int:
    """Tiles per side of the channel grid: ceil(sqrt(K)), as tf-explain's ``grid_display`` (exact integer maths)."""
    if channels < 1:
        raise ValueError(f"need at least one channel, got {channels}")
    return math.isqrt(channels - 1) + 1


def grid_shapes(model: ExplainModel) -> tuple[tuple[int, int], ...]:
    """(rows, cols) of each activation layer's channel grid, in ``activation_layers`` order."""
    return tuple((grid_side(k) * h, grid_side(k) * w) for h, w, k in model.activation_shapes)


def tile_channels(activations: tf.Tensor) -> tf.Tensor:
    """[B,h,w,K] -> [B,n*h,n*w]: channel k at tile row k // n, column k % n, n = ceil(sqrt(K)); missing tiles 0.

    tf-explain's ``filter_display`` for one image (``np.rollaxis`` to channels-first, then ``grid_display``).
    """
    height, width, channels = (int(d) for d in activations.shape[1:])
    n = grid_side(channels)
    first = tf.transpose(activations, [0, 3, 1, 2])  # [B,K,h,w]
    padded = tf.pad(first, [[0, 0], [0, n * n - channels], [0, 0], [0, 0]])
    tiles = tf.reshape(padded, [-1, n, n, height, width])  # [B,row,col,h,w]
    return tf.reshape(tf.transpose(tiles, [0, 1, 3, 2, 4]), [-1, n * height, n * width])


def activation_grid(activations: tf.Tensor) -> tf.Tensor:
    """The tiled channels min-max normalised per image over the whole grid, missing tiles included (as tf-explain
    normalises its grid): [B,h,w,K] -> [B,n*h,n*w] in [0, 1]; a constant grid becomes zeros."""
    return minmax_heatmap(tile_channels(tf.cast(activations, tf.float32)))


def explain_activations(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """The channels of the chosen layer per image: ``layer`` [B] indexes ``activation_layers`` (-1 = the Grad-CAM
    layer). grid: ``activation_grid`` of that layer, zero padded to the largest grid among the layers (grid_shape says
    its own extent); activations: its raw [h,w,K] values flattened row-major, zero padded to the largest layer
    (activation_shape says h, w, K); layer / layer_name: the resolved choice; class_index, score, probabilities as for
    the other methods (the class is only reported: activations do not depend on it)."""
    count = len(model.activation_layers)
    layer_check = tf.debugging.assert_less(
        inputs.params["layer"],
        count,
        message=f"activations: layer must be -1 (the Grad-CAM layer) or in [0, {count - 1}], an index into "
        "the model card's activation_layers",
    )
    # the layer waits for the checks too: gathering with a bad index must not run first
    images, layer = gate(inputs, layer_check, also=(inputs.params["layer"],))
    chosen = tf.where(layer < 0, model.default_layer, layer)
    probabilities, outs = model.layer_outputs(images)
    target = target_class(inputs.class_index, probabilities)
    shapes = grid_shapes(model)
    rows = max(h for h, _ in shapes)
    cols = max(w for _, w in shapes)
    size = max(h * w * k for h, w, k in model.activation_shapes)
    grids, raws = [], []
    for out, (h, w, k) in zip(outs, model.activation_shapes, strict=True):
        values = tf.cast(out, tf.float32)
        grid = activation_grid(values)
        grids.append(tf.pad(grid, [[0, 0], [0, rows - int(grid.shape[1])], [0, cols - int(grid.shape[2])]]))
        raws.append(tf.pad(tf.reshape(values, [-1, h * w * k]), [[0, 0], [0, size - h * w * k]]))
    grid = tf.gather(tf.stack(grids, axis=1), chosen, batch_dims=1)
    raw = tf.gather(tf.stack(raws, axis=1), chosen, batch_dims=1)
    score = tf.gather(probabilities, target, batch_dims=1)
    return {
        OUT_GRID: tf.identity(grid, name=OUT_GRID),
        OUT_GRID_SHAPE: tf.gather(tf.constant(shapes, tf.int32), chosen, name=OUT_GRID_SHAPE),
        OUT_ACTIVATIONS: tf.identity(raw, name=OUT_ACTIVATIONS),
        OUT_ACTIVATION_SHAPE: tf.gather(
            tf.constant(model.activation_shapes, tf.int32), chosen, name=OUT_ACTIVATION_SHAPE
        ),
        OUT_LAYER: tf.identity(chosen, name=OUT_LAYER),
        OUT_LAYER_NAME: tf.gather(tf.constant(list(model.activation_layers)), chosen, name=OUT_LAYER_NAME),
        OUT_CLASS_INDEX: tf.identity(target, name=OUT_CLASS_INDEX),
        OUT_SCORE: tf.identity(score, name=OUT_SCORE),
        OUT_PROBABILITIES: tf.identity(probabilities, name=OUT_PROBABILITIES),
    }


def _has_activation_layers(model: ExplainModel) -> bool:
    return model.has_activation_layers


METHOD = ExplainMethod(
    name=ACTIVATIONS_METHOD,
    build=explain_activations,
    summary="The channels of one conv layer tiled into a grid (tf-explain's ActivationsVisualization); no class map",
    supports=_has_activation_layers,
    unsupported="this model has no activation layer (no 4-D conv activation); use another method",
)
