"""The chunk-size calibration: the measured minimum wins, the sweep stops going up and stays in its time and memory
bounds, a fixed chunk size skips it, one model is measured once, and the exporter records it in the model card."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import pytest

import training.explain.model as model_module
from glimpse_wire.contract import MODEL_CARD_ASSET
from tests.conftest import ExportedModel
from training.cli import configure_export
from training.explain import ExplainerConfig, GraphExplainer
from training.explain.calibrate import Calibration, device_description, fastest_batch, measure_batches
from training.export import ExportError, export_classifier


class _FakeDevice:
    """A clock and a forward pass whose time per image is a table: ``run(b)`` advances the clock by b x table[b]
    (plus ``extra`` seconds on the calls listed there), so the calibration is exact and instant."""

    def __init__(self, per_image: Mapping[int, float], extra: Mapping[int, float] | None = None) -> None:
        self.per_image = per_image
        self.extra = dict(extra or {})
        self.now = 0.0
        self.calls: list[int] = []

    def clock(self) -> float:
        return self.now

    def run(self, batch: int) -> None:
        self.now += batch * self.per_image[batch] + self.extra.get(len(self.calls), 0.0)
        self.calls.append(batch)


_SIZES = (1, 2, 4, 8, 16, 32, 64)


def _measure(device: _FakeDevice, candidates: tuple[int, ...] = _SIZES, **kwargs: float) -> Calibration:
    return measure_batches(device.run, candidates, clock=device.clock, device="fake", **kwargs)


def _tiny_classifier(size: int = 8) -> keras.Model:
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


# ------------------------------------------------------------------------------------------------------------------
# measure_batches: the timing itself, on a fake device


def test_the_measured_minimum_per_image_wins() -> None:
    device = _FakeDevice({1: 5.0, 2: 4.0, 4: 2.5, 8: 2.0, 16: 2.1, 32: 2.15, 64: 2.3})
    calibration = _measure(device, budget_s=1e9)
    assert calibration.chunk_size == 8
    assert calibration.per_image_s == pytest.approx({1: 5.0, 2: 4.0, 4: 2.5, 8: 2.0, 16: 2.1, 32: 2.15, 64: 2.3})
    assert calibration.device == "fake"
    assert calibration.seconds == device.now


def test_a_tie_goes_to_the_smaller_batch() -> None:
    calibration = _measure(_FakeDevice(dict.fromkeys(_SIZES, 1.0)), budget_s=1e9)
    assert calibration.chunk_size == 1


def test_going_up_stops_after_two_clearly_slower_sizes_in_a_row() -> None:
    device = _FakeDevice({1: 3.0, 2: 2.0, 4: 1.0, 8: 1.2, 16: 1.3, 32: 9.0, 64: 9.0})
    calibration = _measure(device, budget_s=1e9)
    assert calibration.chunk_size == 4
    assert list(calibration.per_image_s) == [1, 2, 4, 8, 16]
    assert not {32, 64} & set(device.calls)


def test_one_slower_size_does_not_stop_the_sweep() -> None:
    calibration = _measure(_FakeDevice({1: 3.0, 2: 2.0, 4: 2.5, 8: 1.0, 16: 1.05, 32: 1.08, 64: 1.09}), budget_s=1e9)
    assert calibration.chunk_size == 8
    assert list(calibration.per_image_s) == list(_SIZES)


def test_a_hiccup_in_one_round_does_not_move_the_choice() -> None:
    table = {1: 2.0, 2: 1.5, 4: 1.0, 8: 1.2, 16: 1.25}
    # the calls of batch 4's first timed sample: the warm-up calls of 1, 2 and 4, the two samples before (8 calls of
    # batch 1, 4 of batch 2), then batch 4's two calls; the second of them takes 100 s longer
    hiccup = 3 + 8 + 4 + 1
    device = _FakeDevice(table, extra={hiccup: 100.0})
    calibration = _measure(device, candidates=tuple(table), budget_s=1e9)
    assert device.calls[hiccup] == 4
    assert calibration.chunk_size == 4
    assert calibration.per_image_s[4] == pytest.approx(1.0)


def test_the_time_budget_bounds_the_sweep_and_the_rounds() -> None:
    device = _FakeDevice(dict.fromkeys(_SIZES, 1.0))
    calibration = _measure(device, budget_s=60.0)
    assert calibration.seconds <= 60.0
    assert list(calibration.per_image_s) == [1, 2, 4, 8]  # at 47 s, batch 16 would need 32 s more: not started
    assert device.calls.count(1) == 1 + 8  # one sample each: another round would not fit either


def test_the_first_candidate_is_measured_whatever_the_budget() -> None:
    calibration = _measure(_FakeDevice(dict.fromkeys(_SIZES, 1.0)), budget_s=0.0)
    assert calibration.chunk_size == 1
    assert list(calibration.per_image_s) == [1]


def test_rounds_and_candidates_are_checked() -> None:
    device = _FakeDevice({1: 1.0})
    with pytest.raises(ValueError, match="rounds"):
        _measure(device, candidates=(1,), rounds=0)
    with pytest.raises(ValueError, match="candidate"):
        _measure(device, candidates=())
    with pytest.raises(ValueError, match="candidate"):
        _measure(device, candidates=(0, 1))


# ------------------------------------------------------------------------------------------------------------------
# fastest_batch: a real forward pass


def test_fastest_batch_times_a_real_model_within_its_bytes_cap() -> None:
    model = _tiny_classifier()
    per_image_bytes = 8 * 8 * 3 * 4
    calibration = fastest_batch(model, (8, 8, 3), max_input_bytes=4 * per_image_bytes)
    assert set(calibration.per_image_s) <= {1, 2, 4}
    assert calibration.chunk_size in calibration.per_image_s
    assert all(t > 0 for t in calibration.per_image_s.values())
    assert calibration.device == device_description()
    assert calibration.device.startswith(("CPU: ", "GPU: "))


def test_fastest_batch_tries_the_smallest_candidate_even_over_the_cap() -> None:
    calibration = fastest_batch(_tiny_classifier(), (8, 8, 3), candidates=(4, 2), max_input_bytes=1)
    assert list(calibration.per_image_s) == [2]
    assert calibration.chunk_size == 2


# ------------------------------------------------------------------------------------------------------------------
# ExplainModel: None measures (once per model), an int fixes


def test_a_fixed_chunk_size_skips_the_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> Calibration:
        raise AssertionError("calibrated although the chunk size was given")

    monkeypatch.setattr(model_module, "fastest_batch", refuse)
    explainer = GraphExplainer(_tiny_classifier(), "conv", ExplainerConfig(chunk_size=3))
    assert explainer.chunk_size == 3
    assert explainer.calibration is None


def test_no_chunk_size_measures_once_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []

    def fake(model: keras.Model, image_shape: tuple[int, ...]) -> Calibration:
        calls.append(tuple(image_shape))
        return Calibration(7, {4: 0.02, 7: 0.01}, "fake", 0.1)

    monkeypatch.setattr(model_module, "fastest_batch", fake)
    model = _tiny_classifier()
    first = GraphExplainer(model, "conv")
    second = GraphExplainer(model, None)
    assert calls == [(8, 8, 3)]
    assert first.chunk_size == second.chunk_size == 7
    assert first.calibration is second.calibration
    GraphExplainer(_tiny_classifier(), "conv")
    assert len(calls) == 2


def test_a_model_that_does_not_fit_fails_before_any_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> Calibration:
        raise AssertionError("calibrated a model that does not fit")

    monkeypatch.setattr(model_module, "fastest_batch", refuse)
    with pytest.raises(ValueError, match="not a top-level layer"):
        GraphExplainer(_tiny_classifier(), "nope")


def test_the_config_still_refuses_a_chunk_size_below_one() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        ExplainerConfig(chunk_size=0)


# ------------------------------------------------------------------------------------------------------------------
# The exporter and its command line


@pytest.mark.slow
def test_the_model_card_records_the_measured_chunk_size(exported_model: ExportedModel) -> None:
    card = json.loads((exported_model.version_dir / MODEL_CARD_ASSET).read_text())
    record = card["explain_chunk_size"]
    assert set(record) == {"chunk_size", "measured_on", "per_image_ms", "calibration_s"}
    assert str(record["chunk_size"]) in record["per_image_ms"]
    assert record["per_image_ms"][str(record["chunk_size"])] == min(record["per_image_ms"].values())
    assert record["measured_on"] == device_description()
    assert record["calibration_s"] > 0


@pytest.mark.slow
def test_a_given_chunk_size_is_recorded_without_a_measurement(tmp_path: Path) -> None:
    version_dir = _export_tiny(tmp_path, explainer_config=ExplainerConfig(chunk_size=3))
    card = json.loads((version_dir / MODEL_CARD_ASSET).read_text())
    assert card["explain_chunk_size"] == {
        "chunk_size": 3,
        "measured_on": None,
        "per_image_ms": {},
        "calibration_s": None,
    }


def test_the_card_record_is_the_exporters_own(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="explain_chunk_size"):
        _export_tiny(tmp_path, card={"explain_chunk_size": 4})


def _export_tiny(tmp_path: Path, **kwargs: Any) -> Path:
    """The tiny classifier exported to ``tmp_path`` as model ``m``, with extra exporter arguments."""
    return export_classifier(
        _tiny_classifier(),
        ["a", "b"],
        tmp_path,
        "m",
        image_size=8,
        preprocessing="none",
        gradcam_layer="conv",
        **kwargs,
    )


def test_the_export_command_takes_a_chunk_size() -> None:
    parser = argparse.ArgumentParser()
    configure_export(parser)
    required = ["--keras-model", "m.keras", "--name", "m"]
    assert parser.parse_args(required).chunk_size is None
    assert parser.parse_args([*required, "--chunk-size", "16"]).chunk_size == 16
    with pytest.raises(SystemExit):
        parser.parse_args([*required, "--chunk-size", "0"])
