"""Classifiers for ``glimpse train``: transfer learning on pretrained backbones, or CNNs from scratch.

Every model is a functional Keras model that takes float32 pixels 0-255 and holds its own preprocessing, so the
exporter, Grad-CAM and occlusion all see one input convention. Functional only: Grad-CAM needs the conv layer's
output in the same graph as the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MODELS", "ModelInfo", "ModelUnavailable", "build_model", "set_unfreeze"]

MODELS = ("efficientnet_lite0", "mobilenet_v2", "resnet50", "scratch", "scratch_bn")
_PRETRAINED = ("efficientnet_lite0", "mobilenet_v2", "resnet50")


class ModelUnavailable(RuntimeError):
    """The requested weights cannot be had here (e.g. Keras ImageNet weights without internet)."""


@dataclass(frozen=True)
class ModelInfo:
    preprocessing: str  # what the model does to its 0-255 input, recorded in the model card
    gradcam_layer: str | None  # last 4-D conv activation
    channels: int
    backbone_layers: tuple[str, ...] = ()  # names of the backbone's layers, in order (transfer models)


def _head(x: Any, num_classes: int, dense_units: int, dropout: float, seed: int | None) -> Any:
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    if dense_units > 0:
        x = keras.layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)


def set_unfreeze(model: Any, backbone_layers: tuple[str, ...], fraction: float) -> int:
    """Make the last ``fraction`` of the backbone's layers trainable (the chapter's semantics); the rest frozen.

    BatchNormalization layers stay frozen, which in Keras 3 also keeps them in inference mode, so fine-tuning
    does not wreck their statistics on small batches. Returns the number of trainable backbone layers.
    """
    import keras

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"--unfreeze must be in [0, 1], got {fraction}")
    names = [n for n in backbone_layers if model.get_layer(n).weights]
    n_train = round(len(names) * fraction)
    trainable = set(names[len(names) - n_train :]) if n_train else set()
    for name in backbone_layers:
        layer = model.get_layer(name)
        layer.trainable = name in trainable and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(1 for n in trainable if not isinstance(model.get_layer(n), keras.layers.BatchNormalization))


def _keras_application(name: str, inputs: Any, weights: str | None) -> tuple[Any, str, str]:
    import keras

    if name == "mobilenet_v2":
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocessing")(inputs)
        ctor, preprocessing, layer = keras.applications.MobileNetV2, "scale_-1_1", "out_relu"
    else:
        x = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=-1), name="rgb_to_bgr")(inputs)
        x = keras.layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0], name="preprocessing")(x)
        ctor, preprocessing, layer = keras.applications.ResNet50, "caffe", "conv5_block3_out"
    try:
        backbone = ctor(include_top=False, weights=None if weights == "none" else weights, input_tensor=x)
    except Exception as e:  # the download raises URL/OS/HTTP errors; all mean the same here
        if weights == "imagenet":
            raise ModelUnavailable(
                f"{name} with --weights imagenet downloads Keras' ImageNet weights, which needs internet "
                f"({type(e).__name__}: {e}). Offline, use --model efficientnet_lite0 (pretrained, bundled) "
                "or --weights none / --weights PATH"
            ) from e
        raise
    return backbone, preprocessing, layer


def build_model(
    name: str,
    num_classes: int,
    *,
    image_size: int,
    channels: int = 3,
    weights: str | None = "imagenet",
    unfreeze: float = 0.0,
    dropout: float = 0.2,
    dense_units: int = 256,
    seed: int | None = None,
) -> tuple[Any, ModelInfo]:
    """Build a classifier taking (image_size, image_size, channels) pixels 0-255; returns (model, info).

    Pretrained backbones need 3 channels (the data pipeline turns grey into RGB for them). ``weights`` for them:
    ``imagenet`` (bundled for efficientnet_lite0, downloaded for the Keras applications), ``none``, or a path to a
    weights file of the whole model.
    """
    import keras

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if name in _PRETRAINED and channels != 3:
        raise ValueError(f"{name} takes RGB input (3 channels), got {channels}")
    weights_path = None
    if weights not in (None, "none", "imagenet"):
        weights_path, weights = weights, "none"

    shape = (image_size, image_size, channels)
    if name == "efficientnet_lite0":
        from training.efficientnet_lite import LITE0_GRADCAM_LAYER, build_efficientnet_lite0

        backbone = build_efficientnet_lite0(
            shape, include_top=False, weights=None if weights in (None, "none") else "imagenet"
        )
        inputs, features, preprocessing, gradcam = backbone.input, backbone.output, "lite0", LITE0_GRADCAM_LAYER
        backbone_layers = tuple(layer.name for layer in backbone.layers[1:])
    elif name in ("mobilenet_v2", "resnet50"):
        inputs = keras.Input(shape, name="images")
        backbone, preprocessing, gradcam = _keras_application(name, inputs, weights)
        features = backbone.output
        backbone_layers = tuple(layer.name for layer in backbone.layers if layer.name not in ("images",))
    else:
        model = _scratch(name, num_classes, shape, dropout, seed)
        return model, ModelInfo("scale_0_1", "last_conv", channels)

    outputs = _head(features, num_classes, dense_units, dropout, seed)
    model = keras.Model(inputs, outputs, name=f"{name}_classifier")
    set_unfreeze(model, backbone_layers, unfreeze)
    if weights_path:
        model.load_weights(weights_path)
    return model, ModelInfo(preprocessing, gradcam, channels, backbone_layers)


def _scratch(name: str, num_classes: int, shape: tuple[int, int, int], dropout: float, seed: int | None) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input(shape, name="images")
    x = layers.Rescaling(1 / 255.0, name="preprocessing")(inputs)
    if name == "scratch":
        # The chapter's create_model: two conv/pool stages, a dense layer, dropout, softmax.
        x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
        x = layers.MaxPooling2D(name="pool1")(x)
        x = layers.Conv2D(64, 3, padding="same", name="conv2")(x)
        x = layers.Activation("relu", name="last_conv")(x)
        x = layers.MaxPooling2D(name="pool2")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(64, activation="relu", name="dense")(x)
        x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    else:
        # scratch_bn: three conv stages with BatchNorm, wider, global pooling; the model that reaches the
        # Fashion-MNIST goal on a CPU budget.
        def block(t: Any, filters: int, n: int, stage: int, last: bool = False) -> Any:
            for i in range(n):
                t = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"s{stage}_conv{i}")(t)
                t = layers.BatchNormalization(name=f"s{stage}_bn{i}")(t)
                act_name = "last_conv" if last and i == n - 1 else f"s{stage}_relu{i}"
                t = layers.Activation("relu", name=act_name)(t)
            return t

        x = block(x, 32, 2, 1)
        x = layers.MaxPooling2D(name="pool1")(x)
        x = layers.Dropout(0.1, seed=seed, name="drop1")(x)
        x = block(x, 64, 2, 2)
        x = layers.MaxPooling2D(name="pool2")(x)
        x = layers.Dropout(0.2, seed=seed, name="drop2")(x)
        x = block(x, 128, 1, 3, last=True)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        x = layers.Dense(128, activation="relu", name="dense")(x)
        x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)
