"""The gateway's settings: refused when auth is open by accident, the seed's model names and
quality words."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.http.schemas import RequestOptions
from gateway.settings import Settings
from qie_engine.contract import Preset


def test_settings_refuse_to_start_without_keys_unless_auth_is_disabled() -> None:
    with pytest.raises(ValidationError, match="GATEWAY_API_KEYS"):
        Settings.model_validate({})
    assert Settings.model_validate({"GATEWAY_AUTH_DISABLED": "true"}).auth_disabled
    settings = Settings.model_validate(
        {"GATEWAY_API_KEYS": "a, b", "TRITON_URLS": "t1:8001,t2:8001"}
    )
    assert settings.api_keys == ["a", "b"] and settings.triton_urls == ["t1:8001", "t2:8001"]


def test_seed_model_names_resolve_to_the_qwen_model() -> None:
    settings = Settings.model_validate({"GATEWAY_AUTH_DISABLED": True})
    assert settings.resolve_model("qwen2-vl-7b-instruct") == "qwen_image_edit"
    assert settings.resolve_model(None) == "qwen_image_edit"
    assert settings.resolve_model("classic_edit") == "classic_edit"


def test_seed_quality_maps_to_presets_and_an_explicit_preset_wins() -> None:
    assert RequestOptions(quality="low").edit_options().preset is Preset.FAST
    assert RequestOptions(quality="high").edit_options().preset is Preset.QUALITY
    assert (
        RequestOptions(quality="low", preset=Preset.QUALITY).edit_options().preset is Preset.QUALITY
    )
    assert "timeout" not in RequestOptions(timeout=5).edit_options().model_dump()
