"""Outcomes of ``service`` into response bodies: JSON documents and PNG pictures."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from explain_api import render
from explain_api.images import DecodedImage, encode_png, pad_box
from explain_api.service import ExplainOutcome, ImageExplanation, Prediction, PredictOutcome

__all__ = ["explain_json", "explanation_png", "model_json", "predict_json", "prediction_json"]

_DECIMALS = 4


def model_json(name: str, version: int | None) -> dict[str, Any]:
    return {"name": name, "version": version}


def prediction_json(p: Prediction) -> dict[str, Any]:
    return {"label": p.label, "score": round(p.score, 6), "class_index": p.class_index}


def predict_json(outcome: PredictOutcome) -> dict[str, Any]:
    return {
        "model": model_json(outcome.name, outcome.version),
        "results": [{"predictions": [prediction_json(p) for p in item.predictions]} for item in outcome.images],
    }


def _heatmap_json(item: ImageExplanation, image: DecodedImage, size: tuple[int, int] | None) -> dict[str, Any]:
    hm = item.heatmap
    in_h, in_w = hm.shape
    box = pad_box(image.height, image.width, in_h, in_w)
    if size is not None:
        size = (min(size[0], in_h), min(size[1], in_w))
        hm = render.downsample(hm, size)
    return {
        "shape": list(hm.shape),
        "values": np.round(hm.astype(np.float64), _DECIMALS).tolist(),
        "input_size": [in_h, in_w],
        "content_box": {"top": box.top, "left": box.left, "height": box.height, "width": box.width},
    }


def explanation_png(item: ImageExplanation, image: DecodedImage, *, colormap: str, kind: str = "overlay") -> bytes:
    """The overlay (or the original | heatmap | overlay grid) of one explained image, as PNG."""
    if kind == "grid":
        picture = render.grid(image.rgb, item.heatmap, colormap=colormap)
    else:
        picture = render.overlay(image.rgb, item.heatmap, colormap=colormap)
    return encode_png(picture, compress_level=1)


def explain_json(
    outcome: ExplainOutcome,
    images: Sequence[DecodedImage],
    *,
    heatmap_size: tuple[int, int] | None,
    colormap: str,
) -> dict[str, Any]:
    results = []
    for item, image in zip(outcome.images, images, strict=True):
        overlay = explanation_png(item, image, colormap=colormap)
        results.append(
            {
                "target": {"class_index": item.class_index, "label": item.label, "score": round(item.score, 6)},
                "predictions": [prediction_json(p) for p in item.predictions],
                "heatmap": _heatmap_json(item, image, heatmap_size),
                "overlay_png": base64.b64encode(overlay).decode("ascii"),
                "image": {"width": image.width, "height": image.height, "format": image.format},
            }
        )
    return {
        "model": model_json(outcome.name, outcome.version),
        "method": outcome.method,
        "params": outcome.params,
        "via": outcome.via,
        "colormap": colormap,
        "results": results,
    }
