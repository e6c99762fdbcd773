"""The explain API's configuration: one frozen dataclass, built from flags and the environment (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from rendering.video import VideoLimits

__all__ = ["ApiConfig", "ConfigError"]

_MB = 1024 * 1024


class ConfigError(ValueError):
    """A setting that cannot be used (bad number, empty address, ...)."""


# Settings of the video limits; the environment names them GLIMPSE_<NAME> (GLIMPSE_VIDEO_MAX_FRAMES, ...).
_VIDEO_LIMITS = ("video_max_frames", "video_max_seconds", "video_max_frame_pixels", "video_max_bytes")


def _number(var: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError as e:
        raise ConfigError(f"{var} must be a number, got {raw!r}") from e


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class ApiConfig:
    """Everything the explain API needs to run; ``create_app`` takes one.

    Environment variables (see ``from_env``): SERVING_ADDRESS, GLIMPSE_DEFAULT_MODEL, GLIMPSE_MODELS (more model
    names for ``GET /v1/models``, comma-separated), GLIMPSE_API_KEYS (comma-separated bearer keys; empty = no auth),
    GLIMPSE_CORS_ORIGINS (comma-separated origins or ``*``; empty = CORS off), GLIMPSE_MAX_BODY_BYTES,
    GLIMPSE_MAX_PIXELS, GLIMPSE_MAX_TOTAL_PIXELS, GLIMPSE_MAX_IMAGES, GLIMPSE_MAX_DECODE_BYTES, GLIMPSE_MAX_IMAGE_SIDE,
    GLIMPSE_MEMORY_BUDGET_BYTES, GLIMPSE_BUDGET_WAIT_S, GLIMPSE_TIMEOUT_S, GLIMPSE_TOP_K, and the limits
    of ``:explain-video``: GLIMPSE_VIDEO_MAX_FRAMES, GLIMPSE_VIDEO_MAX_SECONDS, GLIMPSE_VIDEO_MAX_FRAME_PIXELS,
    GLIMPSE_VIDEO_MAX_BYTES (``0`` = no limit).
    """

    serving_address: str = "localhost:8500"
    default_model: str | None = None
    models: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 20 * _MB
    max_pixels: int = 40_000_000
    max_total_pixels: int = 120_000_000  # all images of one request together
    max_images: int = 16
    # What decoding one image may allocate (Pillow's buffer: 1 byte per pixel for 1-bit, grey and palette images, 2
    # for 16-bit grey, 4 for the rest; JPEGs are decoded at a reduced scale first). Bounds memory where max_pixels
    # alone does not: 40 MP of RGBA is 160 MB.
    max_decode_bytes: int = 128 * _MB
    # The longer side of the pixels kept per image: overlays and grids are drawn at most this large, and the model
    # (which resizes to its input size) never needs more.
    max_image_side: int = 1024
    # The bytes that the requests in flight may hold together (bodies, decodes, kept pixels, rendering); a request
    # waits up to budget_wait_s for room, then gets a 503 with Retry-After.
    memory_budget_bytes: int = 256 * _MB
    budget_wait_s: float = 2.0
    timeout_s: float = 30.0
    top_k: int = 5
    # How long model metadata (input size, labels, signatures) is reused per (model, version, label).
    metadata_ttl_s: float = 30.0
    # Budget of one gRPC request body; batches are split so that no message exceeds it (TF Serving's client default
    # limit is 4 MiB).
    max_message_bytes: int = int(3.5 * _MB)
    # Images larger than this factor times the model input size are shrunk (aspect kept) before they are sent.
    serving_size_factor: float = 2.0
    retry_after_s: int = 5
    readiness_timeout_s: float = 3.0
    # What one video of :explain-video may be (None = no limit): frames, seconds, pixels per frame, bytes.
    video_max_frames: int | None = 300
    video_max_seconds: float | None = 30.0
    video_max_frame_pixels: int | None = 1920 * 1088
    video_max_bytes: int | None = 20 * _MB

    def __post_init__(self) -> None:
        if not self.serving_address or not self.serving_address.strip():
            raise ConfigError("serving_address must be HOST:PORT")
        for name in (
            "max_body_bytes", "max_pixels", "max_total_pixels", "max_images", "top_k", "max_message_bytes",
            "retry_after_s", "max_decode_bytes", "max_image_side", "memory_budget_bytes",
        ):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("timeout_s", "readiness_timeout_s"):
            if float(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.budget_wait_s < 0:
            raise ConfigError(f"budget_wait_s must be >= 0, got {self.budget_wait_s!r}")
        if self.memory_budget_bytes < self.max_decode_bytes:
            raise ConfigError(
                f"memory_budget_bytes ({self.memory_budget_bytes}) must be at least max_decode_bytes "
                f"({self.max_decode_bytes}): one image must fit"
            )
        if self.metadata_ttl_s < 0:
            raise ConfigError(f"metadata_ttl_s must be >= 0, got {self.metadata_ttl_s!r}")
        if self.serving_size_factor < 1:
            raise ConfigError(f"serving_size_factor must be >= 1, got {self.serving_size_factor!r}")
        if any(not k for k in self.api_keys):
            raise ConfigError("api_keys must not contain empty keys")
        for name in _VIDEO_LIMITS:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0 or None, got {value!r}")

    @property
    def video_limits(self) -> VideoLimits:
        """The limits of one video, as the video code takes them."""
        return VideoLimits(
            max_frames=self.video_max_frames,
            max_seconds=self.video_max_seconds,
            max_frame_pixels=self.video_max_frame_pixels,
            max_bytes=self.video_max_bytes,
        )

    @property
    def model_names(self) -> tuple[str, ...]:
        """The default model first, then the other configured names, without duplicates."""
        names = ([self.default_model] if self.default_model else []) + list(self.models)
        return tuple(dict.fromkeys(names))

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ApiConfig:
        """Build from environment variables; keyword overrides win (``None`` values are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if env.get("SERVING_ADDRESS"):
            values["serving_address"] = env["SERVING_ADDRESS"].strip()
        if env.get("GLIMPSE_DEFAULT_MODEL"):
            values["default_model"] = env["GLIMPSE_DEFAULT_MODEL"].strip()
        values["models"] = _split(env.get("GLIMPSE_MODELS"))
        values["api_keys"] = _split(env.get("GLIMPSE_API_KEYS"))
        values["cors_origins"] = _split(env.get("GLIMPSE_CORS_ORIGINS"))
        numeric = {
            "GLIMPSE_MAX_BODY_BYTES": ("max_body_bytes", int),
            "GLIMPSE_MAX_PIXELS": ("max_pixels", int),
            "GLIMPSE_MAX_TOTAL_PIXELS": ("max_total_pixels", int),
            "GLIMPSE_MAX_IMAGES": ("max_images", int),
            "GLIMPSE_MAX_DECODE_BYTES": ("max_decode_bytes", int),
            "GLIMPSE_MAX_IMAGE_SIDE": ("max_image_side", int),
            "GLIMPSE_MEMORY_BUDGET_BYTES": ("memory_budget_bytes", int),
            "GLIMPSE_BUDGET_WAIT_S": ("budget_wait_s", float),
            "GLIMPSE_TIMEOUT_S": ("timeout_s", float),
            "GLIMPSE_TOP_K": ("top_k", int),
        }
        for var, (name, kind) in numeric.items():
            raw = env.get(var)
            if raw:
                values[name] = _number(var, raw, kind)
        for name in _VIDEO_LIMITS:
            var = f"GLIMPSE_{name.upper()}"
            raw = env.get(var)
            if raw:
                number = _number(var, raw, float if name == "video_max_seconds" else int)
                values[name] = number if number > 0 else None
        known = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}")
            if value is not None:
                values[key] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def with_(self, **changes: Any) -> ApiConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)
