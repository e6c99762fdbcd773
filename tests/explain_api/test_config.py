"""ApiConfig: built from the environment and overrides, validated when built."""

from __future__ import annotations

import pytest

from explain_api.config import ApiConfig, ConfigError


def test_defaults() -> None:
    config = ApiConfig.from_env({})
    assert config.serving_address == "localhost:8500" and config.default_model is None
    assert config.max_body_bytes == 20 * 2**20 and config.max_pixels == 40_000_000 and config.max_images == 16
    assert config.top_k == 5 and config.api_keys == () and config.cors_origins == () and not config.auth_enabled


def test_environment() -> None:
    env = {
        "SERVING_ADDRESS": " serving:8500 ",
        "GLIMPSE_DEFAULT_MODEL": "flowers",
        "GLIMPSE_MODELS": "pets, flowers,,cars",
        "GLIMPSE_API_KEYS": "k1, k2",
        "GLIMPSE_CORS_ORIGINS": "https://a.example",
        "GLIMPSE_MAX_BODY_BYTES": "1000",
        "GLIMPSE_MAX_PIXELS": "2000",
        "GLIMPSE_MAX_TOTAL_PIXELS": "5000",
        "GLIMPSE_MAX_IMAGES": "4",
        "GLIMPSE_TIMEOUT_S": "2.5",
        "GLIMPSE_TOP_K": "3",
    }
    config = ApiConfig.from_env(env)
    assert config.serving_address == "serving:8500" and config.default_model == "flowers"
    assert config.model_names == ("flowers", "pets", "cars")  # default first, no duplicates
    assert config.api_keys == ("k1", "k2") and config.auth_enabled
    assert (config.max_body_bytes, config.max_pixels, config.max_total_pixels, config.max_images) == (
        1000, 2000, 5000, 4)  # fmt: skip
    assert config.timeout_s == 2.5 and config.top_k == 3
    assert ApiConfig.from_env(env, top_k=7, default_model=None).top_k == 7  # None overrides are ignored


@pytest.mark.parametrize(
    ("env", "overrides", "needle"),
    [
        ({"GLIMPSE_MAX_IMAGES": "many"}, {}, "GLIMPSE_MAX_IMAGES must be a number"),
        ({"GLIMPSE_MAX_IMAGES": "0"}, {}, "max_images must be >= 1"),
        ({}, {"timeout_s": 0}, "timeout_s must be > 0"),
        ({}, {"serving_address": " "}, "HOST:PORT"),
        ({}, {"metadata_ttl_s": -1}, "metadata_ttl_s"),
        ({}, {"serving_size_factor": 0.5}, "serving_size_factor"),
        ({}, {"colour": "red"}, "unknown setting"),
    ],
)
def test_bad_settings_are_clear_errors(env, overrides, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        ApiConfig.from_env(env, **overrides)


def test_frozen_and_copies() -> None:
    config = ApiConfig()
    with pytest.raises(AttributeError):
        config.top_k = 3  # type: ignore[misc]
    assert config.with_(top_k=3).top_k == 3 and config.top_k == 5
    with pytest.raises(ConfigError):
        ApiConfig(api_keys=("",))
