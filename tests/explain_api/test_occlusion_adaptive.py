"""Occlusion modes in the explain API: the adaptive grid's maths (explain_api.occlusion) against hand-computed values,
the ``mode`` parameter through the real routes on the fake serving client (black-box and in-graph), and exports that
predate the parameter."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from explain_api.occlusion import (
    adaptive_coarse_cells,
    adaptive_estimate,
    adaptive_evaluations,
    adaptive_occlusion,
    adaptive_refine_cells,
    occlusion_geometry,
    occlusion_map,
)
from glimpse_wire import contract as c
from glimpse_wire.client import SignatureInfo
from tests.explain_api.fakes import FakeServing
from tests.rendering.conftest import solid

RED = (255, 0, 0)


def _grid(rows: int, cols: int):
    """A grid of rows x cols positions: 4-pixel patches at stride 4."""
    grid = occlusion_geometry(4 * rows, 4 * cols, 4, 4)
    assert (grid.rows, grid.cols) == (rows, cols)
    return grid


# ------------------------------------------------------------------------------------------------ the coarse cells


def test_coarse_cells_are_the_even_rows_and_columns_row_major() -> None:
    assert c.ADAPTIVE_COARSE_STEP == 2 and c.ADAPTIVE_REFINE_FRACTION == 0.25
    assert adaptive_coarse_cells(_grid(5, 5)) == [(r, col) for r in (0, 2, 4) for col in (0, 2, 4)]
    assert adaptive_coarse_cells(_grid(4, 3)) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    assert adaptive_coarse_cells(_grid(1, 4)) == [(0, 0), (0, 2)]
    assert adaptive_coarse_cells(_grid(1, 1)) == [(0, 0)]


# --------------------------------------------------------------------------------------------- the interpolation


def test_estimate_of_a_5x5_grid_columns_then_rows() -> None:
    coarse = np.array([[0, 4, 0], [8, 0, 2], [0, 0, 1]], dtype=np.float32)
    # Coarse rows along the columns: [0, 2, 4, 2, 0], [8, 4, 0, 1, 2], [0, 0, 0, 0.5, 1]; then rows 1 and 3 halfway.
    expected = np.array(
        [
            [0, 2, 4, 2, 0],
            [4, 3, 2, 1.5, 1],
            [8, 4, 0, 1, 2],
            [4, 2, 0, 0.75, 1.5],
            [0, 0, 0, 0.5, 1],
        ],
        dtype=np.float32,
    )
    got = adaptive_estimate(coarse, 5, 5)
    assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_estimate_is_constant_past_the_last_coarse_index() -> None:
    coarse = np.array([[1, 3], [5, 9]], dtype=np.float32)
    # 4 x 3: row 3 is past the last coarse row (2) and repeats it.
    assert np.array_equal(adaptive_estimate(coarse, 4, 3), [[1, 2, 3], [3, 4.5, 6], [5, 7, 9], [5, 7, 9]])
    # 3 x 4: column 3 is past the last coarse column (2) and repeats it.
    assert np.array_equal(adaptive_estimate(coarse, 3, 4), [[1, 2, 3, 3], [3, 4.5, 6, 6], [5, 7, 9, 9]])
    assert np.array_equal(adaptive_estimate(np.array([[0.5, 0.25]]), 1, 4), [[0.5, 0.375, 0.25, 0.25]])
    assert np.array_equal(adaptive_estimate(np.array([[0.7]]), 2, 2), np.full((2, 2), 0.7, np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        adaptive_estimate(np.zeros((2, 3)), 4, 3)


# ----------------------------------------------------------------------------------------------------- refinement


def test_refine_takes_the_highest_quarter_ties_row_major() -> None:
    estimate = np.array([[9, 5, 5], [5, 1, 0]], dtype=np.float32)
    evaluated = np.array([[True, False, False], [False, False, False]])
    # U = 5 cells not evaluated, k = ceil(1.25) = 2: three cells tie at 5, the two earliest win; (0, 0) is evaluated.
    assert adaptive_refine_cells(estimate, evaluated) == [(0, 1), (0, 2)]
    # Returned row-major whatever the ranking: (1, 2) is highest, (0, 1) second.
    estimate = np.array([[0, 2, 0], [0, 0, 3]], dtype=np.float32)
    assert adaptive_refine_cells(estimate, np.zeros((2, 3), bool)) == [(0, 1), (1, 2)]


@pytest.mark.parametrize(("unevaluated", "k"), [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2), (9, 3), (48, 12)])
def test_refine_count_is_the_ceiling_of_a_quarter(unevaluated: int, k: int) -> None:
    estimate = np.arange(64, dtype=np.float32).reshape(8, 8)
    evaluated = np.ones(64, dtype=bool)
    evaluated[:unevaluated] = False
    chosen = adaptive_refine_cells(estimate, evaluated.reshape(8, 8))
    assert len(chosen) == k == math.ceil(0.25 * unevaluated)
    assert chosen == [divmod(i, 8) for i in range(unevaluated - k, unevaluated)]  # the highest of the candidates


# ------------------------------------------------------------------------------------------------------ the driver


class _Scores:
    """A score function p(row, col) that records the cells it is asked for, one list per call."""

    def __init__(self, p) -> None:
        self.p = p
        self.rounds: list[list[tuple[int, int]]] = []

    def __call__(self, cells: Sequence[tuple[int, int]]) -> np.ndarray:
        self.rounds.append(list(cells))
        return np.array([self.p(r, col) for r, col in cells], dtype=np.float32)


def test_adaptive_map_is_the_exact_map_when_the_scores_are_linear() -> None:
    grid = occlusion_geometry(20, 20, 4, 4)  # 5 x 5: the last row and column are coarse, nothing is extrapolated
    linear = _Scores(lambda r, col: (r + 2 * col) / 64)  # dyadic: the interpolation is exact in float32
    adaptive = adaptive_occlusion(grid, linear)
    exact = [(r + 2 * col) / 64 for r in range(5) for col in range(5)]
    assert np.array_equal(adaptive.values, 1 - np.array(exact, np.float32).reshape(5, 5))
    assert np.array_equal(adaptive.attribution(), occlusion_map(exact, grid))
    assert adaptive.count == 9 + 4 < grid.positions  # 9 coarse cells, ceil(16 / 4) refined


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (1, 5), (4, 3), (5, 5), (7, 6), (8, 8), (12, 8)])
def test_evaluated_cells_are_the_coarse_then_the_refined_ones(rows: int, cols: int) -> None:
    grid = _grid(rows, cols)
    rng = np.random.default_rng(rows * 100 + cols)
    table = rng.random((rows, cols), dtype=np.float32)
    scores = _Scores(lambda r, col: table[r, col])
    adaptive = adaptive_occlusion(grid, scores)
    coarse = adaptive_coarse_cells(grid)
    assert scores.rounds[0] == coarse
    unevaluated = grid.positions - len(coarse)
    refined = scores.rounds[1] if len(scores.rounds) > 1 else []
    assert len(scores.rounds) == (2 if unevaluated else 1)  # no empty second round
    assert len(refined) == math.ceil(0.25 * unevaluated)
    assert adaptive.count == len(coarse) + len(refined) == adaptive_evaluations(grid)
    assert sorted(zip(*np.nonzero(adaptive.evaluated), strict=True)) == sorted(coarse + refined)
    # Evaluated cells hold 1 - p exactly; the others the estimate from the coarse values, which also chose the refined.
    coarse_values = (1 - table[::2, ::2]).astype(np.float32)
    estimate = adaptive_estimate(coarse_values, rows, cols)
    assert np.array_equal(adaptive.values[adaptive.evaluated], (1 - table)[adaptive.evaluated])
    assert np.array_equal(adaptive.values[~adaptive.evaluated], estimate[~adaptive.evaluated])
    first = np.zeros((rows, cols), bool)
    first[::2, ::2] = True
    assert refined == adaptive_refine_cells(estimate, first)


def test_a_score_function_must_answer_every_cell() -> None:
    with pytest.raises(ValueError, match="1 scores for 4 cells"):
        adaptive_occlusion(_grid(4, 3), lambda cells: [0.5])


# ------------------------------------------------------------------------------------------- through the real API


def _explain(client, query: str):
    """POST a red 32x32 PNG (the fake model's input size) to :explain with ``query``."""
    return client.post(f"/v1/models/tiny:explain?{query}", data=solid(RED, (32, 32)), content_type="image/png")


def test_blackbox_adaptive_through_the_api(make_app) -> None:
    fake = FakeServing(methods=())
    client = make_app(fake).test_client()
    r = _explain(client, "method=occlusion&patch_size=4&mode=adaptive")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["via"] == "blackbox"
    params = body["params"]
    assert params["mode"] == "adaptive" and params["patch_size"] == 4 and params["stride"] == 4
    assert params["grid_positions"] == 64 and params["evaluated_positions"] == 16 + 12  # 8 x 8: 16 coarse, 12 refined
    heatmap = body["results"][0]["heatmap"]
    assert heatmap["shape"] == [32, 32]
    values = np.array(heatmap["values"])
    assert values.shape == (32, 32) and values[:12, :12].min() > 0.5 and values[20:, 20:].max() == 0.0
    predicts = fake.calls_of("Predict")
    assert sum(call.batch for call in predicts) == 1 + 28  # the image, then only the evaluated copies
    assert {call.signature for call in predicts} == {c.SIG_PIXELS}


def test_blackbox_modes_by_name_or_number(make_app) -> None:
    client = make_app(FakeServing(methods=())).test_client()
    answers = {
        mode: _explain(client, f"method=occlusion&patch_size=4&mode={mode}").get_json()
        for mode in ("exact", "naive", "adaptive", "0", "1", "2")
    }
    assert [answers[m]["params"]["mode"] for m in ("0", "1", "2")] == ["exact", "naive", "adaptive"]
    exact = answers["exact"]["results"][0]["heatmap"]["values"]
    assert answers["naive"]["results"][0]["heatmap"]["values"] == exact  # one computation in black-box
    assert answers["exact"]["params"]["evaluated_positions"] == answers["exact"]["params"]["grid_positions"] == 64
    assert answers["2"]["results"][0]["heatmap"]["values"] == answers["adaptive"]["results"][0]["heatmap"]["values"]
    default = _explain(client, "method=occlusion&patch_size=4").get_json()
    assert default["params"]["mode"] == "exact"


@pytest.mark.parametrize("mode", ["fast", "3", "-1", "1.5", "true"])
def test_unknown_modes_are_400_listing_the_names(make_app, mode: str) -> None:
    for fake in (FakeServing(methods=()), FakeServing()):
        r = _explain(make_app(fake).test_client(), f"method=occlusion&mode={mode}")
        assert r.status_code == 400
        message = r.get_json()["error"]["message"]
        assert "exact, naive, adaptive" in message and repr(mode) in message


@dataclass
class _Recording(FakeServing):
    """The fake, keeping the inputs of every Predict call."""

    inputs: list[dict[str, Any]] = field(default_factory=list)

    def predict(self, model: str, inputs: Mapping[str, Any], **kwargs: Any):
        self.inputs.append(dict(inputs))
        return super().predict(model, inputs, **kwargs)


@dataclass
class _OldExport(_Recording):
    """An export from before occlusion had ``mode``: its explain_occlusion signature has no such input (and, as TF
    Serving does, the fake refuses a call that sends one)."""

    def _signatures(self) -> dict[str, SignatureInfo]:
        sigs = super()._signatures()
        key = c.explain_signature("occlusion")
        old = sigs[key]
        sigs[key] = SignatureInfo(old.method_name, {k: v for k, v in old.inputs.items() if k != "mode"}, old.outputs)
        return sigs


def test_in_graph_occlusion_sends_the_mode_and_names_it(make_app) -> None:
    fake = _Recording()
    r = _explain(make_app(fake).test_client(), "method=occlusion&mode=adaptive")
    assert r.status_code == 200 and r.get_json()["via"] == "signature"
    params = r.get_json()["params"]
    shown = {k: params[k] for k in ("patch_size", "stride", "mode")}
    assert shown == {"patch_size": 0, "stride": 0, "mode": "adaptive"}
    assert params["evaluated_positions"] == 28 and params["grid_positions"] == 64
    assert fake.inputs[-1]["mode"].tolist() == [2]


def test_an_export_without_mode_answers_exact_and_refuses_the_others(make_app) -> None:
    fake = _OldExport()
    client = make_app(fake).test_client()
    for query in ("method=occlusion", "method=occlusion&mode=exact", "method=occlusion&mode=0"):
        r = _explain(client, query)
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["via"] == "signature" and r.get_json()["params"]["mode"] == "exact"
        assert "mode" not in fake.inputs[-1] and fake.inputs[-1]["patch_size"].tolist() == [0]
    calls = len(fake.inputs)
    for mode in ("naive", "adaptive", "2"):
        r = _explain(client, f"method=occlusion&mode={mode}")
        assert r.status_code == 400
        message = r.get_json()["error"]["message"]
        assert "predates" in message and "re-export" in message and "mode=exact" in message
    assert len(fake.inputs) == calls  # refused before any call to the model
    assert _explain(client, "method=smoothgrad&num_samples=2").status_code == 200  # other methods are unaffected
