"""The bad-input matrix (QUALITY.md 3-21, 28) at the validation module, with no server at all:
each refusal's exact status and code, each acceptance's exact submission.

tests/integration/test_gateway_inputs.py sends a smaller set of the same cases through a real
gateway and Triton, and the HTTP-only ones (byte caps, broken multipart, temp files).
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
from typing import Any

import pytest
from fastapi import UploadFile
from PIL import Image

from gateway.errors import ApiError
from gateway.http.error_handlers import from_engine
from gateway.http.forms import Caller, FormReader, ProcessForm
from gateway.jobs.submission import Submission
from gateway.settings import Settings
from gateway.triton.registry import ModelInfo
from gateway.webhooks.targets import CallbackPolicy
from qie_engine.errors import InvalidInput
from tests import images

SMALL_PIXELS = 64 * 48
MODELS = {
    "classic_edit": ModelInfo("classic_edit", ready=True),
    "qwen_image_edit": ModelInfo("qwen_image_edit", ready=True),
    "qwen_plus": ModelInfo("qwen_plus", ready=True, facts={"max_images": 3}),
    "loading": ModelInfo("loading", ready=False),
}
CALLER = Caller(owner="owner-a", request_id="req-1")


def reader(**settings: Any) -> FormReader:
    values = {"GATEWAY_AUTH_DISABLED": True, **settings}
    parsed = Settings.model_validate(values)
    return FormReader(parsed, CallbackPolicy(parsed.webhook_allowed_hosts), MODELS)


def upload(data: bytes, name: str = "photo.png") -> UploadFile:
    return UploadFile(file=io.BytesIO(data), filename=name)


def form(*uploads: bytes, **fields: Any) -> ProcessForm:
    parts = [upload(u) for u in uploads] or [upload(images.png_bytes())]
    values: dict[str, Any] = {"image": parts, "prompt": "invert", "model": "classic_edit"}
    values.update(fields)
    return ProcessForm.model_validate(values)


def read(the_form: ProcessForm, caller: Caller = CALLER, **settings: Any) -> Submission:
    return asyncio.run(reader(**settings).read(the_form, caller))


def refused(the_form: ProcessForm, **settings: Any) -> ApiError:
    """The refusal as the API answers it (the engine's input errors through the one handler)."""
    with pytest.raises((ApiError, InvalidInput)) as error:
        read(the_form, **settings)
    refusal = error.value
    return from_engine(refusal) if isinstance(refusal, InvalidInput) else refusal


def psd_bytes(width: int = 32, height: int = 24) -> bytes:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(width * height * 3)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="24"><script>1</script></svg>'


# --- accepted ------------------------------------------------------------------------------------


def test_a_good_form_becomes_one_submission_with_the_bytes_untouched() -> None:
    data = images.png_bytes()
    sub = read(form(data, negative_prompt="  blurry ", image_id="123", steps="4", seed="7"))
    assert sub.owner == "owner-a" and sub.image_id == "123"
    assert sub.request.model == "classic_edit" and sub.request.images == [data]
    assert (sub.request.prompt, sub.request.negative_prompt) == ("invert", "blurry")
    assert json.loads(sub.request.options_json) == {"steps": 4, "seed": 7, "output_format": "png"}
    assert sub.request.request_id == "req-1"
    assert sub.deadline_s == 300.0 and sub.respond_async is False
    assert sub.idempotency_key is None and sub.request_hash is None


def test_seed_aliases_quality_timeout_and_prefer_async_are_understood() -> None:
    options = json.dumps({"quality": "low", "timeout": 30})
    sub = read(
        form(model="qwen2-vl-7b-instruct", options=options),
        Caller("o", "r", prefer="respond-async, wait=5", idempotency_key="k"),
    )
    assert sub.request.model == "qwen_image_edit"
    assert json.loads(sub.request.options_json)["preset"] == "fast"
    assert sub.deadline_s == 30 and sub.respond_async is True
    assert sub.idempotency_key == "k" and sub.request_hash


def test_the_same_request_hashes_the_same_and_another_body_does_not() -> None:
    caller = Caller("o", "r", idempotency_key="k")
    first, again = (read(form(images.png_bytes()), caller) for _ in range(2))
    other = read(form(images.png_bytes(), prompt="sepia"), caller)
    assert first.request_hash == again.request_hash != other.request_hash


@pytest.mark.parametrize(
    "data",
    [images.png_bytes(), images.jpeg_bytes(), images.webp_bytes()],
    ids=["png", "jpeg", "webp"],
)
def test_06_a_real_image_is_accepted_whatever_its_name_says(data: bytes) -> None:
    the_form = ProcessForm(image=[upload(data, "photo.jpg")], prompt="invert", model="classic_edit")
    assert read(the_form).request.images == [data]


def test_11_the_pixel_limit_is_exact() -> None:
    assert read(form(images.png_bytes(64, 48)), MAX_PIXELS=SMALL_PIXELS).request.images
    assert SMALL_PIXELS + 1 == 439 * 7
    error = refused(form(images.png_bytes(439, 7)), MAX_PIXELS=SMALL_PIXELS)
    assert (error.status, error.code) == (422, "image_too_large")


def test_17_a_prompt_of_exactly_the_cap_is_accepted_and_trimmed() -> None:
    assert read(form(prompt=" invert".ljust(1000))).request.prompt == "invert"


def test_plus_models_take_up_to_three_images() -> None:
    png = images.png_bytes()
    assert len(read(form(png, png, png, model="qwen_plus")).request.images) == 3


# --- refused -------------------------------------------------------------------------------------


IMAGE_CASES = [
    ("03-empty-file", b"", 422, "empty_file"),
    (
        "05-text-named-jpg",
        b"just some text, not a picture at all\n" * 20,
        415,
        "unsupported_media_type",
    ),
    ("07-tiff", images.tiff_bytes(), 415, "unsupported_media_type"),
    ("07-ico", images.ico_bytes(), 415, "unsupported_media_type"),
    ("07-gif", images.gif_bytes(), 415, "unsupported_media_type"),
    ("07-bmp", images.encode(images.colourful(32, 24), "BMP"), 415, "unsupported_media_type"),
    ("07-psd", psd_bytes(), 415, "unsupported_media_type"),
    ("07-eps", images.encode(images.colourful(32, 24), "EPS"), 415, "unsupported_media_type"),
    (
        "07-jpeg2000",
        images.encode(images.colourful(32, 24), "JPEG2000"),
        415,
        "unsupported_media_type",
    ),
    ("07-svg", SVG, 415, "unsupported_media_type"),
    ("08-gif-then-html", images.polyglot_gif_html(), 415, "unsupported_media_type"),
    ("08-jpeg-then-html", images.polyglot_jpeg_html(), 415, "unsupported_media_type"),
    ("10-pixel-flood", images.pixel_flood_png(50_000, 50_000), 422, "image_too_large"),
    ("12-truncated-jpeg", images.truncated_jpeg(), 422, "corrupt_image"),
    ("12-truncated-png", images.truncated_png(), 422, "corrupt_image"),
    ("13-png-magic", images.magic_then_garbage(images.PNG_MAGIC), 415, "unsupported_media_type"),
    ("13-jpeg-magic", images.magic_then_garbage(images.JPEG_MAGIC), 415, "unsupported_media_type"),
    ("13-webp-magic", images.magic_then_garbage(images.WEBP_MAGIC), 422, "corrupt_image"),
    ("39-scan-bomb", images.jpeg_with_scans(8000), 422, "image_too_complex"),
    ("39-icc-bomb", images.png_with_icc_chunk(2 * 1024 * 1024), 422, "image_too_complex"),
    (
        "39-exif-bomb",
        images.webp_with_metadata(exif=b"E" * 2 * 1024 * 1024),
        422,
        "image_too_complex",
    ),
    ("39-frames", images.apng_declaring(100_000), 422, "image_too_complex"),
]


@pytest.mark.parametrize(
    ("data", "status", "code"), [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES]
)
def test_03_to_13_the_bytes_decide_and_bad_ones_are_refused(
    data: bytes, status: int, code: str
) -> None:
    error = refused(form(data))
    assert (error.status, error.code) == (status, code)


def test_39_a_tiny_webp_claiming_the_most_pixels_is_accepted_without_a_decode() -> None:
    """706 bytes declaring 4096 x 4096: the limit allows it, and the gateway's check holds a few
    MiB for it (check_cost_bytes), where a decode took 264 MiB."""
    data = images.flat_webp(4096, 4096)
    assert len(data) < 1024
    assert read(form(data)).request.images == [data]


def test_39_the_structure_limits_are_settings_of_the_gateway() -> None:
    forty_scans = images.jpeg_with_scans(40)
    assert refused(form(forty_scans)).code == "image_too_complex"  # over the default, 32
    assert read(form(forty_scans), MAX_JPEG_SCANS=64).request.images == [forty_scans]


def test_07_pillow_would_open_these_formats_without_the_allowlist() -> None:
    for data, expected in [(images.tiff_bytes(), "TIFF"), (psd_bytes(), "PSD")]:
        assert Image.open(io.BytesIO(data)).format == expected


@pytest.mark.parametrize(
    ("prompt", "field"),
    [("   ", "prompt"), ("\t\n \r\n", "prompt"), ("a" * 1001, "prompt")],
    ids=["16-spaces", "16-tabs-and-newlines", "17-over-the-cap"],
)
def test_16_17_blank_or_over_long_prompts_are_422(prompt: str, field: str) -> None:
    error = refused(form(prompt=prompt))
    assert error.status == 422
    assert error.code == ("prompt_too_long" if len(prompt) > 1000 else "invalid_input")
    assert error.message.startswith(field)


def test_17_an_over_long_negative_prompt_is_422_naming_it() -> None:
    error = refused(form(negative_prompt="a" * 1001))
    assert (error.code, error.message[:26]) == ("prompt_too_long", "negative_prompt is 1001 ch")


OPTION_CASES = [
    ("18-steps-0-form", {"steps": "0"}, "steps"),
    ("18-steps-minus-1-form", {"steps": "-1"}, "steps"),
    ("18-steps-10000-form", {"steps": "10000"}, "steps"),
    ("18-steps-2.5-form", {"steps": "2.5"}, "steps"),
    ("18-steps-abc-form", {"steps": "abc"}, "steps"),
    ("18-steps-1e3-form", {"steps": "1e3"}, "steps"),
    ("18-cfg-negative-form", {"true_cfg_scale": "-1"}, "true_cfg_scale"),
    ("18-cfg-nan-form", {"true_cfg_scale": "nan"}, "true_cfg_scale"),
    ("18-seed-2**32-form", {"seed": str(2**32)}, "seed"),
    ("18-seed-minus-1-form", {"seed": "-1"}, "seed"),
    ("18-width-63-form", {"width": "63"}, "width"),
    ("18-timeout-0-form", {"timeout": "0"}, "timeout"),
    ("18-steps-0-json", {"options": json.dumps({"steps": 0})}, "steps"),
    ("18-steps-10000-json", {"options": json.dumps({"steps": 10000})}, "steps"),
    ("18-steps-2.5-json", {"options": json.dumps({"steps": 2.5})}, "steps"),
    ("18-steps-string-json", {"options": json.dumps({"steps": "8"})}, "steps"),
    ("18-steps-true-json", {"options": json.dumps({"steps": True})}, "steps"),
    ("18-cfg-negative-json", {"options": json.dumps({"true_cfg_scale": -1})}, "true_cfg_scale"),
    ("18-cfg-nan-json", {"options": '{"true_cfg_scale": NaN}'}, "true_cfg_scale"),
    ("18-seed-2**32-json", {"options": json.dumps({"seed": 2**32})}, "seed"),
    ("18-seed-minus-1-json", {"options": json.dumps({"seed": -1})}, "seed"),
    ("18-seed-string-json", {"options": json.dumps({"seed": "5"})}, "seed"),
    ("18-unknown-option-json", {"options": json.dumps({"stepz": 5})}, "stepz"),
    ("21-output-format-gif-form", {"output_format": "gif"}, "output_format"),
    ("21-output-format-upper-png-form", {"output_format": "PNG"}, "output_format"),
    (
        "21-output-format-tiff-json",
        {"options": json.dumps({"output_format": "tiff"})},
        "output_format",
    ),
]


@pytest.mark.parametrize(
    ("fields", "field"), [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES]
)
def test_18_21_a_bad_option_is_422_invalid_options_naming_the_field(
    fields: dict[str, str], field: str
) -> None:
    error = refused(form(**fields))
    assert (error.status, error.code) == (422, "invalid_options")
    assert [f["field"] for f in error.detail] == [field]
    assert field in error.message


@pytest.mark.parametrize(
    ("options", "detail"),
    [("{steps: 8", {"field": "options"}), ("[8]", None), ('"steps"', None)],
    ids=["not-json", "a-json-array", "a-json-string"],
)
def test_options_that_are_not_a_json_object_are_422(options: str, detail: Any) -> None:
    error = refused(form(options=options))
    assert (error.code, error.detail) == ("invalid_options", detail)
    assert "options" in error.message


def test_a_plain_field_never_hides_a_bad_value_in_the_options_json() -> None:
    error = refused(form(options=json.dumps({"steps": 101}), steps="43"))
    assert [f["field"] for f in error.detail] == ["steps"]
    assert (
        json.loads(read(form(options='{"steps": 9}', steps="4")).request.options_json)["steps"] == 4
    )


def test_empty_plain_fields_count_as_absent_both_in_the_form_and_the_options() -> None:
    sub = read(form(steps="", seed="  ", options=""))
    assert json.loads(sub.request.options_json) == {"output_format": "png"}


def test_19_an_unknown_model_is_404_with_the_list_of_models() -> None:
    error = refused(form(model="no-such-model"))
    assert (error.status, error.code) == (404, "model_not_found")
    assert error.detail == {"models": sorted(MODELS)}


def test_20_a_model_not_ready_is_503_with_retry_after() -> None:
    error = refused(form(model="loading"))
    assert (error.status, error.code) == (503, "model_unavailable")
    assert int(error.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("model", "count"),
    [("qwen_image_edit", 2), ("classic_edit", 3), ("qwen_plus", 4)],
)
def test_too_many_images_for_the_model_is_422_image_count(model: str, count: int) -> None:
    error = refused(form(*[images.png_bytes()] * count, model=model))
    assert error.code == "image_count" and error.message.endswith(f"got {count}")


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/hook", "file:///etc/passwd", "javascript:alert(1)", "//example.com/x",
     "http:///no-host", "gopher://127.0.0.1:6379/_FLUSHALL"],
)  # fmt: skip
def test_28_a_callback_url_that_is_not_absolute_http_is_422(url: str) -> None:
    error = refused(form(callback_url=url), WEBHOOK_ALLOWED_HOSTS="example.com")
    assert (error.code, error.detail) == ("invalid_callback_url", {"field": "callback_url"})


def test_28a_a_callback_host_off_the_allowlist_is_422_saying_how_to_allow_it() -> None:
    off = refused(form(callback_url="http://serverpod:8080/done"))
    other = refused(form(callback_url="http://evil:8080/"), WEBHOOK_ALLOWED_HOSTS="serverpod")
    for error in (off, other):
        assert (error.status, error.code) == (422, "callback_not_allowed")
        assert "WEBHOOK_ALLOWED_HOSTS" in error.message
    allowed = read(
        form(callback_url="http://serverpod:8080/done"), WEBHOOK_ALLOWED_HOSTS="serverpod:8080"
    )
    assert allowed.callback_url == "http://serverpod:8080/done"
