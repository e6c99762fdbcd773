"""Classifiers for ``glimpse train``: transfer learning on pretrained backbones, or CNNs from scratch.

Every model is a functional Keras model that takes float32 pixels 0-255 and holds its own preprocessing, so the
exporter, Grad-CAM and occlusion all see one input convention. Functional only: Grad-CAM needs the conv layer's
output in the same graph as the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.efficientnet_lite import LITE0_GRADCAM_LAYER, build_efficientnet_lite

__all__ = ["MODELS", "PRETRAINED_MODELS", "ModelInfo", "ModelUnavailable", "build_model", "set_unfreeze"]

MODELS = ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2", "resnet50", "scratch", "scratch_bn")
PRETRAINED_MODELS = ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2", "resnet50")
# Layers put in front of a Keras application's backbone; not part of it for --unfreeze.
_OWN_INPUT_LAYERS = ("images", "grey_to_rgb", "rgb_to_bgr", "preprocessing")


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
    does not wreck their statistics on small batches. The frozen part runs as at inference in training too: its
    Dropout layers (EfficientNet's drop-connect) are switched off, so the trained layers see the same features
    in training as in serving. Returns the number of trainable backbone layers.
    """
    import keras

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"--unfreeze must be in [0, 1], got {fraction}")
    names = [n for n in backbone_layers if model.get_layer(n).weights]
    n_train = round(len(names) * fraction)
    trainable = set(names[len(names) - n_train :]) if n_train else set()
    first_trainable = min((backbone_layers.index(n) for n in trainable), default=len(backbone_layers))
    for position, name in enumerate(backbone_layers):
        layer = model.get_layer(name)
        layer.trainable = name in trainable and not isinstance(layer, keras.layers.BatchNormalization)
        if isinstance(layer, keras.layers.Dropout):
            if not hasattr(layer, "_glimpse_rate"):
                layer._glimpse_rate = layer.rate
            layer.rate = layer._glimpse_rate if position > first_trainable else 0.0
    return sum(1 for n in trainable if not isinstance(model.get_layer(n), keras.layers.BatchNormalization))


def _grey_to_rgb(inputs: Any) -> Any:
    """Grey images repeated to 3 channels inside the model, so a grey model still uses an RGB backbone."""
    import keras

    return keras.layers.Concatenate(axis=-1, name="grey_to_rgb")([inputs, inputs, inputs])


def _keras_application(name: str, inputs: Any, weights: str | None) -> tuple[Any, str, str]:
    import keras

    if name == "mobilenet_v2":
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocessing")(inputs)
        ctor, preprocessing, layer = keras.applications.MobileNetV2, "scale_-1_1", "out_relu"
    else:
        from training.layers import ReverseChannels

        x = ReverseChannels(name="rgb_to_bgr")(inputs)
        x = keras.layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0],
                                       name="preprocessing")(x)
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


def _lite_backbone(
    variant: str, image_size: int, channels: int, weights: str | None
) -> tuple[Any, Any, tuple[str, ...]]:
    """(model input, feature map, backbone layer names) of EfficientNet-Lite0/-Lite2 at ``image_size``.

    For grey input the backbone's layers are called again on the repeated channels, so they stay top-level layers
    of the classifier (Grad-CAM and ``set_unfreeze`` find them by name) and share the pretrained weights.
    """
    import keras

    backbone = build_efficientnet_lite(
        variant,
        (image_size, image_size, 3),
        include_top=False,
        weights=None if weights in (None, "none") else "imagenet",
    )
    names = tuple(layer.name for layer in backbone.layers[1:])
    if channels == 3:
        return backbone.input, backbone.output, names
    inputs = keras.Input((image_size, image_size, channels), name="images")
    features = backbone._run_through_graph(_grey_to_rgb(inputs), operation_fn=lambda layer: layer)
    return inputs, features, names


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

    ``channels`` is 3 (RGB) or 1 (grey); pretrained backbones get grey input repeated to 3 channels inside the
    model. ``weights`` for them: ``imagenet`` (bundled for efficientnet_lite0/2, downloaded for the Keras
    applications), ``none``, or a path to a weights file of the whole model (``model.save_weights``).
    """
    import keras

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if image_size < 8:
        raise ValueError(f"image size must be at least 8, got {image_size}")
    weights_path = None
    if weights not in (None, "none", "imagenet"):
        weights_path, weights = Path(str(weights)).expanduser(), "none"
        if not weights_path.is_file():
            raise FileNotFoundError(f"weights file not found: {weights_path} (expected imagenet, none or a file)")

    shape = (image_size, image_size, channels)
    if name in ("efficientnet_lite0", "efficientnet_lite2"):
        inputs, features, backbone_layers = _lite_backbone(name.removeprefix("efficientnet_"), image_size, channels,
                                                           weights)
        preprocessing, gradcam = "lite0", LITE0_GRADCAM_LAYER
    elif name in ("mobilenet_v2", "resnet50"):
        inputs = keras.Input(shape, name="images")
        rgb = inputs if channels == 3 else _grey_to_rgb(inputs)
        backbone, preprocessing, gradcam = _keras_application(name, rgb, weights)
        features = backbone.output
        backbone_layers = tuple(layer.name for layer in backbone.layers if layer.name not in _OWN_INPUT_LAYERS)
    else:
        model = _scratch(name, num_classes, shape, dropout, dense_units, seed)
        if weights_path:
            model.load_weights(str(weights_path))
        return model, ModelInfo("scale_0_1", "last_conv", channels)

    if channels == 1:
        preprocessing = f"grey_to_rgb,{preprocessing}"
    outputs = _head(features, num_classes, dense_units, dropout, seed)
    model = keras.Model(inputs, outputs, name=f"{name}_classifier")
    set_unfreeze(model, backbone_layers, unfreeze)
    if weights_path:
        model.load_weights(str(weights_path))
    return model, ModelInfo(preprocessing, gradcam, channels, backbone_layers)


def _scratch(
    name: str, num_classes: int, shape: tuple[int, int, int], dropout: float, dense_units: int, seed: int | None
) -> Any:
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
        # scratch_bn: conv + BatchNorm stages, each halving the side, until the map is at most 8 px; then a
        # flattened dense head (aligned small images like Fashion-MNIST keep their layout). One conv at full
        # resolution and two per later stage: the accuracy per CPU second that reaches the Fashion-MNIST goal.
        def conv_bn(t: Any, filters: int, name: str, act_name: str | None = None) -> Any:
            t = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(t)
            t = layers.BatchNormalization(name=f"{name}_bn")(t)
            return layers.Activation("relu", name=act_name or f"{name}_relu")(t)

        x = conv_bn(x, 32, "s1")
        x = layers.MaxPooling2D(name="s1_pool")(x)
        side, filters, stage = shape[0] // 2, 64, 2
        while True:
            last = side // 2 <= 8
            x = conv_bn(x, filters, f"s{stage}a")
            x = conv_bn(x, filters, f"s{stage}b", "last_conv" if last else None)
            x = layers.MaxPooling2D(name=f"s{stage}_pool")(x)
            side, filters, stage = side // 2, min(filters * 2, 256), stage + 1
            if last:
                break
        x = layers.Dropout(0.1, seed=seed, name="conv_dropout")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(dense_units or 256, activation="relu", name="dense")(x)
        x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)
