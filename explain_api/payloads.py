"""Outcomes of ``service`` into response bodies: JSON documents and PNG pictures."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import numpy as np

from explain_api.service import ActivationMaps, ExplainOutcome, ImageExplanation, Prediction, PredictOutcome
from rendering import render
from rendering.images import DecodedImage, encode_jpeg, encode_png, pad_box

__all__ = ["explain_json", "explanation_png", "model_json", "png_headers", "predict_json", "prediction_json"]

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


def _float32_json(values: np.ndarray) -> dict[str, Any]:
    """A float32 array as shape + base64 of its little-endian, row-major bytes (``numpy.frombuffer(..., '<f4')``)."""
    array = np.ascontiguousarray(values, dtype="<f4")
    return {"shape": list(array.shape), "dtype": "float32", "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def _activations_json(maps: ActivationMaps) -> dict[str, Any]:
    h, w, k = maps.channels.shape
    grid = _float32_json(maps.grid)
    grid["tiles"] = [maps.grid.shape[0] // h, maps.grid.shape[1] // w]
    return {
        "layer": maps.layer,
        "layer_name": maps.layer_name,
        "channels": _float32_json(maps.channels),
        "grid": grid,
    }


def _heatmap_json(item: ImageExplanation, image: DecodedImage, size: tuple[int, int] | None) -> dict[str, Any]:
    hm = item.heatmap
    if hm is None:
        raise ValueError("an explanation without a heatmap has no heatmap JSON")
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


def explanation_picture(item: ImageExplanation, image: DecodedImage, *, colormap: str, kind: str = "overlay") -> Any:
    """The overlay (or the original | heatmap | overlay grid) of one explained image as ``uint8`` [H,W,3]. For
    activations: the channel grid (or the original | channel grid)."""
    if item.activations is not None:
        grid = item.activations.grid
        if kind == "grid":
            return render.activation_sheet(image.rgb, grid, colormap=colormap)
        return render.activation_image(grid, colormap=colormap)
    if item.heatmap is None:
        raise ValueError("an explanation without a heatmap or activations cannot be drawn")
    if kind == "grid":
        return render.grid(image.rgb, item.heatmap, colormap=colormap)
    return render.overlay(image.rgb, item.heatmap, colormap=colormap)


def explanation_png(item: ImageExplanation, image: DecodedImage, *, colormap: str, kind: str = "overlay") -> bytes:
    """:func:`explanation_picture` as PNG (the ``format=png`` and ``format=grid`` answers)."""
    return encode_png(explanation_picture(item, image, colormap=colormap, kind=kind), compress_level=1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_headers(item: ImageExplanation) -> dict[str, str]:
    """Method-specific headers of a PNG answer: the layer shown, for activations."""
    if item.activations is None:
        return {}
    return {
        "X-Glimpse-Layer": str(item.activations.layer),
        "X-Glimpse-Layer-Name": quote(item.activations.layer_name, safe=""),
    }


def explain_json(
    outcome: ExplainOutcome,
    images: Sequence[DecodedImage],
    *,
    heatmap_size: tuple[int, int] | None,
    colormap: str,
) -> dict[str, Any]:
    results = []
    for item, image in zip(outcome.images, images, strict=True):
        entry: dict[str, Any] = {
            "target": {"class_index": item.class_index, "label": item.label, "score": round(item.score, 6)},
            "predictions": [prediction_json(p) for p in item.predictions],
        }
        if item.activations is not None:
            grid = explanation_png(item, image, colormap=colormap)  # small, and its pixels are exact: PNG
            entry.update({"activations": _activations_json(item.activations), "grid_png": _b64(grid)})
        else:
            overlay = encode_jpeg(explanation_picture(item, image, colormap=colormap))  # a preview: JPEG
            entry.update({"heatmap": _heatmap_json(item, image, heatmap_size), "overlay_jpeg": _b64(overlay)})
        entry["image"] = {"width": image.source_width, "height": image.source_height, "format": image.format}
        results.append(entry)
    return {
        "model": model_json(outcome.name, outcome.version),
        "method": outcome.method,
        "params": outcome.params,
        "via": outcome.via,
        "colormap": colormap,
        "results": results,
    }
