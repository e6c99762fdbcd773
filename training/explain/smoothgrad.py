"""SmoothGrad (tf-explain's SmoothGrad): the gradient of log p_c averaged over noisy copies of the image.

The mean over ``num_samples`` copies ``x + N(0, noise^2)`` of ``d log p_c / dx``. Deliberate differences from
tf-explain: it averages the gradient of the categorical cross-entropy, i.e. of ``-log p_c``; Glimpse returns the
gradient of ``+log p_c`` (from the logits where the model exposes them), so that positive means "more of the class" as
for every gradient method here; and the noise of sample ``k`` comes from the stateless generator seeded
``(seed, k)`` instead of ``np.random``, so maps are reproducible. ``attribution`` [B,H,W,C], signed. Cost: 1 +
``num_samples`` forward, ``num_samples`` backward passes per image.
"""

from __future__ import annotations

import tensorflow as tf

from training.explain.base import (
    ExplainMethod,
    Inputs,
    expand,
    expanded_sum,
    gate,
    saliency_result,
    target_class,
)
from training.explain.model import ExplainModel

__all__ = ["METHOD", "smoothgrad_noise", "explain_smoothgrad"]


def smoothgrad_noise(
    image_shape: tuple[int, int, int], seed: tf.Tensor, sample: tf.Tensor, noise: tf.Tensor
) -> tf.Tensor:
    """The noise SmoothGrad adds to sample ``sample`` of an image with ``seed``: N(0, noise^2), shape ``image_shape``,
    from the stateless generator seeded with (seed, sample). Vectorised: seed, sample, noise are [M] -> [M,H,W,C]."""
    seeds = tf.stack([tf.cast(seed, tf.int32), tf.cast(sample, tf.int32)], axis=1)
    unit = tf.map_fn(
        lambda s: tf.random.stateless_normal(image_shape, seed=s, dtype=tf.float32),
        seeds,
        fn_output_signature=tf.TensorSpec(image_shape, tf.float32),
    )
    return unit * tf.reshape(tf.cast(noise, tf.float32), [-1, 1, 1, 1])


def explain_smoothgrad(model: ExplainModel, inputs: Inputs) -> dict[str, tf.Tensor]:
    """The SmoothGrad map of each image for its target class."""
    p = inputs.params
    (images,) = gate(inputs)
    probabilities = model.forward(images).probabilities
    target = target_class(inputs.class_index, probabilities)
    total, ids, local = expand(p["num_samples"])

    def noisy_gradients(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        item = tf.gather(ids, idx)
        eps = smoothgrad_noise(
            model.image_shape, tf.gather(p["seed"], item), tf.gather(local, idx), tf.gather(p["noise"], item)
        )
        noisy = tf.gather(images, item) + eps
        with tf.GradientTape() as tape:
            tape.watch(noisy)
            log_p = model.forward(noisy).log_probabilities
            selected = tf.gather(log_p, tf.gather(target, item), batch_dims=1)
        return item, tape.gradient(selected, noisy)

    summed = expanded_sum(model, total, tf.shape(images)[0], noisy_gradients)
    attribution = summed / tf.reshape(tf.cast(p["num_samples"], tf.float32), [-1, 1, 1, 1])
    return saliency_result(attribution, model.config.heatmap_percentile, target, probabilities)


METHOD = ExplainMethod(
    name="smoothgrad",
    build=explain_smoothgrad,
    summary="SmoothGrad: the mean of `d log p_c / dx` over noisy copies `x + N(0, noise^2)`",
)
