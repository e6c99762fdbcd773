"""Domain functions (explain_api.service) against the fake serving client: validation, targets, batching,
metadata caching and the black-box occlusion path. Errors are domain errors; their statuses come from the one table
(``explain_api.errors.status_for``), so these tests also pin what HTTP clients see."""

from __future__ import annotations

import numpy as np
import pytest

from explain_api import service
from explain_api.errors import status_for
from explain_api.exceptions import ExplainError
from explain_api.service import ExplainSpec, ModelCatalog
from glimpse_wire import contract as c
from glimpse_wire.client import ModelRef
from glimpse_wire.errors import Unavailable
from rendering.images import DecodedImage, decode_image
from rendering.render import normalize
from tests.explain_api.fakes import FakeServing
from tests.rendering.conftest import solid

REF = ModelRef("tiny")


def _image(color: tuple[int, int, int], size: tuple[int, int] = (60, 40)) -> DecodedImage:
    return decode_image(solid(color, size), max_pixels=10**7)


def _catalog(fake: FakeServing, **kw) -> ModelCatalog:
    return ModelCatalog(fake, ttl_s=kw.pop("ttl_s", 30.0), **kw)


def _error(fn, *args, **kwargs) -> ExplainError:
    with pytest.raises(ExplainError) as info:
        fn(*args, **kwargs)
    return info.value


def _status(error: Exception) -> int:
    return status_for(error)[0]


# ---------------------------------------------------------------------------------------------------- validation


def test_unknown_method_lists_all_methods() -> None:
    err = _error(service.validate_method, "lime")
    assert _status(err) == 400
    for method in c.EXPLAIN_METHODS:
        assert method in err.message
    assert service.validate_method("smoothgrad") == "smoothgrad"


def test_params_get_defaults_types_and_ranges() -> None:
    assert service.validate_params("smoothgrad", {}) == {"num_samples": 5, "noise": 1.0, "seed": 0}
    got = service.validate_params("smoothgrad", {"num_samples": "12", "noise": "2.5"})
    assert got == {"num_samples": 12, "noise": 2.5, "seed": 0}
    assert service.validate_params("gradcam", {"use_guided_grads": "false"}) == {"use_guided_grads": False}
    assert service.validate_params("vanilla_gradients", None) == {}
    err = _error(service.validate_params, "occlusion", {"patch": 3})
    assert _status(err) == 400 and "allowed: patch_size, stride" in err.message
    assert "allowed: none" in _error(service.validate_params, "vanilla_gradients", {"x": 1}).message
    assert "integer" in _error(service.validate_params, "integrated_gradients", {"n_steps": "ten"}).message
    assert "integer" in _error(service.validate_params, "integrated_gradients", {"n_steps": 2.5}).message
    assert "out of range" in _error(service.validate_params, "integrated_gradients", {"n_steps": 0}).message
    assert "out of range" in _error(service.validate_params, "smoothgrad", {"noise": 1e9}).message
    assert "number" in _error(service.validate_params, "smoothgrad", {"noise": "nan"}).message
    assert "boolean" in _error(service.validate_params, "gradcam", {"use_guided_grads": "maybe"}).message


def test_blackbox_occlusion_accepts_its_own_scaling_params() -> None:
    got = service.validate_params("occlusion", {"input_scale": "0.5"}, blackbox=True)
    assert got == {"patch_size": 0, "stride": 0, "mode": 0, "input_scale": 0.5, "input_offset": 0.0}
    assert "input_scale" in _error(service.validate_params, "gradcam", {"input_scale": 1}, blackbox=True).message


def test_targets(fake: FakeServing) -> None:
    info = _catalog(fake).get(REF)
    assert service.resolve_target(info) == -1
    assert service.resolve_target(info, label="blue") == 2
    assert service.resolve_target(info, class_index="1") == 1
    assert service.resolve_target(info, class_index=-1) == -1
    err = _error(service.resolve_target, info, label="purple")
    assert _status(err) == 400 and "red, green, blue" in err.message
    assert "[0, 2]" in _error(service.resolve_target, info, class_index=3).message
    assert _status(_error(service.resolve_target, info, class_index=-2)) == 400
    assert "integer" in _error(service.resolve_target, info, class_index="x").message
    assert "not both" in _error(service.resolve_target, info, class_index=1, label="red").message


def test_top_k_orders_by_score_and_clamps_k(fake: FakeServing) -> None:
    info = _catalog(fake).get(REF)
    top = service.top_k_predictions(np.array([0.2, 0.5, 0.3]), 2, info)
    assert [(p.class_index, p.label) for p in top] == [(1, "green"), (2, "blue")]
    assert len(service.top_k_predictions(np.array([0.2, 0.5, 0.3]), 10, info)) == 3


# ------------------------------------------------------------------------------------------------ model metadata


def test_model_info_from_metadata_and_classify(fake: FakeServing) -> None:
    info = service.build_model_info(fake, REF)
    assert info.version == 1 and info.input_size == (32, 32) and info.num_classes == 3
    assert info.labels == ("red", "green", "blue")  # from the classification signature's classes
    assert info.methods == c.EXPLAIN_METHODS and info.fallback_methods == ()
    assert info.has_image_bytes and info.pixel_signature == service.PixelSignature(
        c.SIG_PIXELS, c.IN_IMAGES, c.OUT_PROBABILITIES
    )


def test_model_info_without_classify_or_pixels() -> None:
    fake = FakeServing(with_classify=False, with_pixels=False, input_size=(24, 24))
    info = service.build_model_info(fake, REF)
    assert info.labels == () and info.label_of(2) == "class_2"
    assert info.input_size == (24, 24)  # from the explain signatures' heatmap output
    assert info.fallback_methods == ()


def test_catalog_caches_per_ref_for_ttl(fake: FakeServing) -> None:
    now = [100.0]
    catalog = _catalog(fake, ttl_s=10.0, clock=lambda: now[0])
    catalog.get(REF)
    catalog.get(REF)
    assert len(fake.calls_of("GetModelMetadata")) == 1
    catalog.get(ModelRef("tiny", label="stable"))
    assert len(fake.calls_of("GetModelMetadata")) == 2
    now[0] += 11.0
    catalog.get(REF)
    assert len(fake.calls_of("GetModelMetadata")) == 3
    catalog.invalidate("tiny")
    catalog.get(REF)
    assert len(fake.calls_of("GetModelMetadata")) == 4


def test_catalog_does_not_cache_failures(fake: FakeServing) -> None:
    catalog = _catalog(fake)
    fake.failures.append(Unavailable("connection refused"))
    with pytest.raises(Unavailable):
        catalog.get(REF)
    assert catalog.get(REF).version == 1


# ---------------------------------------------------------------------------------------------------- predictions


def test_predict_batches_images_into_one_call(fake: FakeServing) -> None:
    images = [_image((255, 0, 0)), _image((0, 255, 0)), _image((0, 0, 255))]
    out = service.predict_images(fake, _catalog(fake), REF, images, top_k=2, budget=4 * 2**20)
    assert [r.predictions[0].label for r in out.images] == ["red", "green", "blue"]
    assert all(len(r.predictions) == 2 for r in out.images)
    predicts = fake.calls_of("Predict")
    assert len(predicts) == 1 and predicts[0].batch == 3 and predicts[0].signature == c.SIG_DEFAULT
    assert predicts[0].version == 1  # pinned to the version the metadata came from
    assert out.version == 1


def test_predict_splits_batches_over_the_message_budget(fake: FakeServing) -> None:
    images = [_image((255, 0, 0)) for _ in range(5)]
    service.predict_images(fake, _catalog(fake), REF, images, top_k=1, budget=1)
    assert [call.batch for call in fake.calls_of("Predict")] == [1, 1, 1, 1, 1]


def test_predict_on_a_pixels_only_model_uses_predict_pixels() -> None:
    fake = FakeServing(with_image_bytes=False, methods=())
    out = service.predict_images(fake, _catalog(fake), REF, [_image((0, 0, 255))], top_k=1, budget=2**22)
    assert out.images[0].predictions[0].label == "blue"
    assert fake.calls_of("Predict")[0].signature == c.SIG_PIXELS


# --------------------------------------------------------------------------------------------------- explanations


def test_explain_in_graph_one_call_for_the_batch(fake: FakeServing) -> None:
    images = [_image((255, 0, 0)), _image((0, 0, 255))]
    out = service.explain_images(
        fake, _catalog(fake), REF, images, ExplainSpec("smoothgrad", {"num_samples": 3}), top_k=3, budget=2**22
    )
    assert out.via == "signature" and out.method == "smoothgrad"
    assert out.params == {"num_samples": 3, "noise": 1.0, "seed": 0}
    assert [e.label for e in out.images] == ["red", "blue"]
    calls = fake.calls_of("Predict")
    assert len(calls) == 1 and calls[0].batch == 2 and calls[0].signature == "explain_smoothgrad"
    heat = out.images[0].heatmap
    assert heat.shape == (32, 32) and heat.min() >= 0.0 and heat.max() <= 1.0


def test_explain_for_a_chosen_label(fake: FakeServing) -> None:
    out = service.explain_images(
        fake, _catalog(fake), REF, [_image((255, 0, 0))], ExplainSpec("gradcam", label="green"), top_k=1, budget=2**22
    )
    assert out.images[0].class_index == 1 and out.images[0].label == "green"
    assert out.images[0].score < 0.01
    assert out.images[0].predictions[0].label == "red"


def test_activations_are_cropped_per_image(fake: FakeServing) -> None:
    images = [_image((255, 0, 0)), _image((0, 0, 200), (40, 40))]
    spec = ExplainSpec(c.ACTIVATIONS_METHOD, {"layer": 0})
    catalog = _catalog(fake)
    assert catalog.activation_layer_count(catalog.get(REF), REF) == 2  # learned once per version (probe calls)
    fake.calls.clear()
    out = service.explain_images(fake, catalog, REF, images, spec, top_k=2, budget=2**22)
    assert out.via == "signature" and out.params == {"layer": 0}
    calls = fake.calls_of("Predict")
    assert len(calls) == 1 and calls[0].batch == 2 and calls[0].signature == "explain_activations"
    first, second = (item.activations for item in out.images)
    assert first.layer == 0 and first.layer_name == "pixels" and out.images[0].heatmap is None
    assert first.channels.shape == (32, 32, 3) and first.grid.shape == (64, 64)  # pixels: 2x2 tiles of 32x32
    # a square blue image fills the input: channels (0, 0, 200) everywhere; channel 2 is tile (1, 0)
    np.testing.assert_allclose(second.channels, np.broadcast_to([0.0, 0.0, 200.0], (32, 32, 3)), atol=1.0)
    np.testing.assert_allclose(second.grid[32:, :32], 200.0 / 255.0, atol=1 / 255)
    np.testing.assert_array_equal(second.grid[:32, :], 0.0)  # channels 0 and 1 are empty
    np.testing.assert_array_equal(second.grid[32:, 32:], 0.0)  # no fourth channel: a zero tile
    assert out.images[0].label == "red" and out.images[1].label == "blue"
    default = service.explain_images(
        fake, _catalog(fake), REF, images[:1], ExplainSpec(c.ACTIVATIONS_METHOD), top_k=1, budget=2**22
    )
    maps = default.images[0].activations
    assert maps.layer == 1 and maps.layer_name == "pooled" and maps.channels.shape == (16, 16, 3)
    assert maps.grid.shape == (32, 32)  # cropped from the padded 64x64


def test_activations_with_inconsistent_shapes_are_502(fake: FakeServing, monkeypatch: pytest.MonkeyPatch) -> None:
    real = fake._activations

    def broken(pixels, layers):
        out = real(pixels, layers)
        out[c.OUT_ACTIVATION_SHAPE] = out[c.OUT_ACTIVATION_SHAPE] * 4  # more values than were sent
        return out

    monkeypatch.setattr(fake, "_activations", broken)
    err = _error(
        service.explain_images,
        fake,
        _catalog(fake),
        REF,
        [_image((1, 2, 3))],
        ExplainSpec(c.ACTIVATIONS_METHOD),
        top_k=1,
        budget=2**22,
    )
    assert _status(err) == 502 and "inconsistent activation shapes" in err.message


def test_activations_layer_is_validated(fake: FakeServing) -> None:
    assert service.validate_params(c.ACTIVATIONS_METHOD, {"layer": "2"}) == {"layer": 2}
    assert _status(_error(service.validate_params, c.ACTIVATIONS_METHOD, {"layer": -2})) == 400
    assert _status(_error(service.validate_params, c.ACTIVATIONS_METHOD, {"layer": 1.5})) == 400


def test_gradient_methods_without_signatures_are_422() -> None:
    fake = FakeServing(methods=())
    err = _error(
        service.explain_images,
        fake,
        _catalog(fake),
        REF,
        [_image((1, 2, 3))],
        ExplainSpec("gradcam"),
        top_k=1,
        budget=2**22,
    )
    assert _status(err) == 422 and "glimpse export" in err.message and "occlusion" in err.message
    assert fake.calls_of("Predict") == []


def test_occlusion_needs_pixels_or_a_signature() -> None:
    fake = FakeServing(methods=(), with_pixels=False)
    err = _error(
        service.explain_images,
        fake,
        _catalog(fake),
        REF,
        [_image((1, 2, 3))],
        ExplainSpec("occlusion"),
        top_k=1,
        budget=2**22,
    )
    assert _status(err) == 422 and "Available here: none" in err.message


# ------------------------------------------------------------------------------------------- black-box occlusion


def test_blackbox_occlusion_finds_where_the_model_looks() -> None:
    """The fake model scores with the top-left quadrant of its 32x32 input only: occluding there lowers the score,
    occluding elsewhere changes nothing. The map must be hot there (the 4x4 grid of 8-pixel cells is resized
    bilinearly, so the edge of the hot quadrant is blended over the half cell on either side of it)."""
    fake = FakeServing(methods=())
    budget = 3 * (32 * 32 * 3 * 4 + 1024)
    image = decode_image(solid((255, 0, 0), (32, 32)), max_pixels=10**6)
    out = service.explain_images(
        fake, _catalog(fake), REF, [image], ExplainSpec("occlusion", {"patch_size": 8}), top_k=3, budget=budget
    )
    assert out.via == "blackbox" and out.params["patch_size"] == 8 and out.params["stride"] == 8
    item = out.images[0]
    assert item.label == "red" and item.score > 0.99
    heat = item.heatmap
    assert heat[:12, :12].min() > 0.5 and heat[20:, :].max() == 0.0 and heat[:, 20:].max() == 0.0
    assert np.allclose(heat, normalize(item.attribution)) and item.attribution.shape == (32, 32)
    calls = fake.calls_of("Predict")
    assert {call.signature for call in calls} == {c.SIG_PIXELS}
    assert sum(call.batch for call in calls) == 1 + 16  # the original plus 16 occluded copies
    assert max(call.batch for call in calls) == 3  # chunked to stay within the message budget


def test_blackbox_occlusion_refuses_too_many_patches() -> None:
    fake = FakeServing(methods=())
    err = _error(
        service.explain_images,
        fake,
        _catalog(fake),
        REF,
        [_image((255, 0, 0))],
        ExplainSpec("occlusion", {"patch_size": 1, "stride": 1}),
        top_k=1,
        budget=2**22,
        max_patches=100,
    )
    assert _status(err) == 400 and "1024" in err.message and "limit is 100" in err.message


def test_blackbox_input_scaling_is_applied(fake: FakeServing) -> None:
    fake = FakeServing(methods=())
    image = decode_image(solid((255, 0, 0), (32, 32)), max_pixels=10**6)
    out = service.explain_images(
        fake,
        _catalog(fake),
        REF,
        [image],
        ExplainSpec("occlusion", {"patch_size": 16, "input_scale": 0.0}),
        top_k=3,
        budget=2**22,
    )
    # Every pixel scaled to 0: the model sees black everywhere, nothing changes, the map is flat.
    assert out.images[0].heatmap.max() == 0.0 and out.images[0].score == pytest.approx(1 / 3, abs=1e-5)


def test_unusable_server_outputs_are_502(fake: FakeServing) -> None:
    class Truncating(FakeServing):
        def predict(self, model, inputs, **kwargs):
            result = super().predict(model, inputs, **kwargs)
            return type(result)(result.model, {k: v[:1] for k, v in result.outputs.items()})

    broken = Truncating()
    images = [_image((255, 0, 0)), _image((0, 255, 0))]
    err = _error(service.explain_images, broken, _catalog(broken), REF, images, ExplainSpec(), top_k=1, budget=2**22)
    assert _status(err) == 502 and "'heatmap'" in err.message
    err = _error(service.predict_images, broken, _catalog(broken), REF, images, top_k=1, budget=2**22)
    assert _status(err) == 502 and "'probabilities'" in err.message


# ------------------------------------------------------------------------------------------- the default method


@pytest.mark.parametrize(
    ("methods", "with_pixels", "expected"),
    [
        (c.EXPLAIN_METHODS, True, c.DEFAULT_EXPLAIN_METHOD),  # a current export
        (("gradcam", "occlusion", "vanilla_gradients"), True, "gradcam"),  # exported before the default moved
        ((), True, "occlusion"),  # a plain TF Serving model: the black-box path
    ],
)
def test_a_request_without_method_gets_the_models_default(
    methods: tuple[str, ...], with_pixels: bool, expected: str
) -> None:
    fake = FakeServing(methods=methods, with_pixels=with_pixels)
    catalog = _catalog(fake)
    assert catalog.get(REF).default_method == expected
    outcome = service.explain_images(fake, catalog, REF, [_image((9, 8, 7))], ExplainSpec(), top_k=1, budget=2**22)
    assert outcome.method == expected and outcome.images[0].heatmap is not None


def test_no_default_method_is_a_clear_error() -> None:
    fake = FakeServing(methods=(), with_pixels=False)
    assert service.validate_method(None) is None
    err = _error(service.explain_images, fake, _catalog(fake), REF, [_image((1, 2, 3))], ExplainSpec(), top_k=1,
                 budget=2**22)
    assert _status(err) == 422 and "answers no explanation method" in err.message
