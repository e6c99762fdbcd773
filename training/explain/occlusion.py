"""Occlusion sensitivity (tf-explain's OcclusionSensitivity, generalised to any stride).

A grey square (127.5, mid-grey of the 0-255 input) of side ``patch_size`` is put at each grid position
``(i*s, j*s)``; the map at that cell is ``1 - p_c(occluded image)``; the ``ceil(H/s) x ceil(W/s)`` grid is resized
bilinearly (half-pixel centres, as tf-explain's cv2.resize) to [H,W]. With stride = patch size (the default) the map is
tf-explain's exactly; edge patches are cut at the border. ``attribution`` is that [B,H,W] map, ``heatmap`` its per-image
min-max normalisation. Cost: 1 + ceil(H/s) * ceil(W/s) forward passes per image, packed into batches of
``chunk_size`` across the whole request; more than ``ExplainerConfig.max_occlusion_positions`` per image fail fast.
"""

from __future__ import annotations

import tensorflow as tf

from training.explain.base import (
    ExplainMethod,
    Inputs,
    attribution_result,
    expand,
    expanded_values,
    gate,
    minmax_heatmap,
    target_class,
)
from training.explain.model import ExplainModel

__all__ = ["GREY_VALUE", "METHOD", "occlusion_geometry", "explain_occlusion"]

# tf-explain's occlusion patch value (utils/image.py apply_grey_patch); our models take 0-255, so it is mid-grey.
GREY_VALUE = 127.5


def occlusion_geometry(
    size: tuple[int, int], patch_size: tf.Tensor, stride: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-example occlusion grid: (patch [B], stride [B], grid rows [B], grid cols [B]).

    A patch size of 0 means ``min(H, W) // 8`` (at least 1); a stride of 0 means the patch size (tf-explain's grid).
    Patches start at 0, s, 2s, ... < H (resp. W), so the grid is ceil(H / s) x ceil(W / s); edge patches are cut.
    """
    height, width = size
    patch = tf.cast(patch_size, tf.int32)
    patch = tf.where(patch > 0, patch, max(1, min(height, width) // 8))
    step = tf.cast(stride, tf.int32)
    step = tf.where(step > 0, step, patch)
    rows = (height + step - 1) // step
    cols = (width + step - 1) // step
    return patch, step, rows, cols


def explain_occlusion(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """The occlusion map of each image for its target class (see the module docstring)."""
    height, width = model.image_shape[:2]
    patch, step, rows, cols = occlusion_geometry((height, width), inputs.params["patch_size"], inputs.params["stride"])
    counts = rows * cols
    limit = model.config.max_occlusion_positions
    too_many = tf.debugging.assert_less_equal(
        counts,
        limit,
        message=f"occlusion: more than {limit} patch positions per image; use a larger patch size or stride",
    )
    (images,) = gate(inputs, too_many)
    probabilities = model.forward(images).probabilities
    target = target_class(inputs.class_index, probabilities)
    total, ids, local = expand(counts)
    tops = (local // tf.gather(cols, ids)) * tf.gather(step, ids)
    lefts = (local % tf.gather(cols, ids)) * tf.gather(step, ids)
    ys = tf.range(height)[tf.newaxis, :]
    xs = tf.range(width)[tf.newaxis, :]

    def occluded_confidence(idx: tf.Tensor) -> tf.Tensor:
        item = tf.gather(ids, idx)
        top = tf.gather(tops, idx)[:, tf.newaxis]
        left = tf.gather(lefts, idx)[:, tf.newaxis]
        size = tf.gather(patch, item)[:, tf.newaxis]
        in_rows = (ys >= top) & (ys < top + size)  # [m,H]
        in_cols = (xs >= left) & (xs < left + size)  # [m,W]
        mask = (in_rows[:, :, tf.newaxis] & in_cols[:, tf.newaxis, :])[..., tf.newaxis]
        occluded = tf.where(mask, tf.constant(GREY_VALUE, tf.float32), tf.gather(images, item))
        probs = model.forward(occluded).probabilities
        return tf.gather(probs, tf.gather(target, item), batch_dims=1)

    confidence = expanded_values(model, total, occluded_confidence)
    starts = tf.cumsum(counts, exclusive=True)

    def to_map(args: tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
        start, n, r, c = args
        grid = 1.0 - tf.reshape(confidence[start : start + n], tf.stack([r, c, 1]))
        return tf.image.resize(grid, (height, width), method="bilinear")[..., 0]

    attribution = tf.map_fn(
        to_map,
        (starts, counts, rows, cols),
        fn_output_signature=tf.TensorSpec((height, width), tf.float32),
    )
    return attribution_result(minmax_heatmap(attribution), attribution, target, probabilities)


METHOD = ExplainMethod(
    name="occlusion",
    build=explain_occlusion,
    summary="Occlusion sensitivity: `1 - p_c` with a grey square at each grid position",
)
