"""The fusion rules of studies.cam_fusion on hand-made maps (the study itself runs on the cached default models)."""

from __future__ import annotations

import numpy as np

from studies.cam_fusion import FUSIONS


def test_fusion_rules_on_two_layers() -> None:
    deep = np.array([[[1.0, 0.5], [0.0, 0.25]]])
    shallow = np.array([[[0.25, 1.0], [1.0, 0.25]]])
    maps = [deep, shallow]
    np.testing.assert_allclose(FUSIONS["mean"](maps), [[[0.625, 0.75], [0.5, 0.25]]])
    # the geometric mean: 0 where one layer is 0 (up to the floor), the layers' common value where they agree
    np.testing.assert_allclose(FUSIONS["geometric"](maps), [[[0.5, np.sqrt(0.5)], [1e-6, 0.25]]], rtol=1e-6)
    np.testing.assert_allclose(FUSIONS["minimum"](maps), [[[0.25, 0.5], [0.0, 0.25]]])
    np.testing.assert_allclose(FUSIONS["max-tanh"](maps), np.maximum(deep, np.tanh(2.0 * shallow)))
