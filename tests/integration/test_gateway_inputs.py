"""Bad input at the gateway's door (QUALITY.md cases 1-21, 27, 28): exact answers, nothing left.

The full matrix of refusals runs fast against the validation module alone
(tests/gateway/test_validation.py); this file sends a sample of each kind through a real
gateway and Triton, and the cases only HTTP has (byte caps, broken multipart, file names, temp
files, edited pixels).

Every refusal is checked the same way: the exact status and `code`, an error body of exactly
{code, message, detail} with no traceback, path or Triton address in it, no job created, no file
left in the temp dir and no file descriptor left open once the connection is gone.

The temp dir is a private, empty directory (tempfile.tempdir is pointed at it for each test), so
that files other processes on this machine create in /tmp cannot make the check flaky; the gateway
runs in this process, so its uploads (Starlette spools parts over 1 MiB to disk) land there.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import struct
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from dev_stack.processes import ROOT
from dev_stack.triton import TritonServer
from tests import images
from tests.gateway_server import (
    KEY_A,
    KEY_B,
    GatewayServer,
    open_fds,
    running_gateway,
    temp_files,
    wait_for,
)

pytestmark = pytest.mark.integration
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
SYSTEM_TMP = Path(tempfile.gettempdir())
# Over Starlette's 1 MiB in-memory spool, so an upload near the cap has already reached the disk.
SMALL_UPLOAD_BYTES = 1_500_000
SMALL_PIXELS = 64 * 48
DEFAULT_PROMPT_CHARS = 1000
CHUNK = 64 * 1024
BOUNDARY = "qie-boundary"
IMAGE_PART_HEAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="image"; filename="big.png"\r\n'
    "Content-Type: image/png\r\n\r\n"
).encode()


# --- fixtures and checks -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty temp dir that only this test's gateway writes to."""
    directory = tmp_path / "gateway-tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture(scope="module")
def small_gateway(triton_server: TritonServer) -> Iterator[GatewayServer]:
    """A gateway with a small byte cap and a tiny pixel limit, in front of the session Triton."""
    with running_gateway(
        [triton_server.grpc_url],
        "classic_edit",
        MAX_UPLOAD_BYTES=SMALL_UPLOAD_BYTES,
        MAX_PIXELS=SMALL_PIXELS,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def lone_classic() -> Iterator[tuple[TritonServer, GatewayServer]]:
    """A private tritonserver with classic_edit only, whose models the tests may unload."""
    triton = TritonServer(models=["classic_edit"])
    try:
        with triton, running_gateway([triton.grpc_url], "classic_edit") as server:
            yield triton, server
    finally:
        triton.log_path.unlink(missing_ok=True)


def settled_fds(baseline: int, timeout: float = 5.0) -> int:
    """Open descriptors once the server has closed its end of the finished connections.

    uvicorn closes a connection a moment after the client hangs up, so the count is polled
    back down to the baseline instead of allowing a fixed tolerance.
    """
    deadline = time.monotonic() + timeout
    count = open_fds()
    while count > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        count = open_fds()
    return count


@contextmanager
def leaves_nothing(gw: GatewayServer, tmp: Path, *, jobs: int = 0) -> Iterator[None]:
    """Exactly `jobs` new jobs, no new file in the temp dir, no descriptor left open."""
    jobs_before, fds_before, files_before = gw.job_count(), open_fds(), temp_files(str(tmp))
    yield
    assert gw.job_count() == jobs_before + jobs
    assert temp_files(str(tmp)) == files_before
    assert settled_fds(fds_before) <= fds_before


def check_error_body(
    gw: GatewayServer, status: int, headers: dict[str, str], text: str, want: tuple[int, str]
) -> dict[str, Any]:
    assert (status, json.loads(text).get("code")) == want, text
    assert headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(text)
    assert set(body) == {"code", "message", "detail"}
    assert isinstance(body["message"], str)
    assert body["message"]
    for leak in ("Traceback", 'File "', ".py", "/work", str(ROOT), *gw.settings.triton_urls):
        assert leak not in text, f"{leak!r} leaked into {text}"
    return body


def assert_refused(
    gw: GatewayServer, response: httpx.Response, status: int, code: str
) -> dict[str, Any]:
    """The one error shape, with the exact status and code, and nothing internal in it."""
    return check_error_body(
        gw, response.status_code, dict(response.headers), response.text, (status, code)
    )


def post(
    gw: GatewayServer,
    files: Any = None,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/process",
        headers={**AUTH_A, **(headers or {})},
        files=files,
        data=data,
        timeout=60,
        **kwargs,
    )


def edit(**fields: str) -> dict[str, str]:
    """Form fields of a fast classic edit; `fields` add to or replace them."""
    return {"prompt": "invert", "model": "classic_edit", **fields}


def one_image(data: bytes, name: str = "photo.png", mime: str = "image/png") -> dict[str, Any]:
    return {"image": (name, data, mime)}


def processed(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return images.decode(base64.b64decode(response.json()["processed_image"]))


def rgb(data: bytes) -> np.ndarray:
    return np.asarray(images.decode(data).convert("RGB")).astype(int)


def raw_exchange(gw: GatewayServer, *messages: bytes) -> tuple[int, dict[str, str], str]:
    """Send bytes on a bare socket, then read one HTTP response (without finishing the body)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        for message in messages:
            sock.sendall(message)
        response = http.client.HTTPResponse(sock)
        response.begin()
        headers = {k.lower(): v for k, v in response.getheaders()}
        text = response.read().decode()
        response.close()
    return response.status, headers, text


def request_head(**headers: str) -> bytes:
    lines = [
        "POST /process HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {KEY_A}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def psd_bytes(width: int = 32, height: int = 24) -> bytes:
    """A minimal Photoshop file: 8-bit RGB, no resources or layers, raw image data."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(width * height * 3)


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="32" height="24">'
    b'<rect width="32" height="24" fill="red"/><script>alert(1)</script></svg>'
)


# --- 1, 2: the byte cap ------------------------------------------------------------------------


def test_01_honest_content_length_over_the_cap_is_413_before_the_body_is_sent(
    small_gateway: GatewayServer, private_tmp: Path
) -> None:
    with leaves_nothing(small_gateway, private_tmp):
        # Only the head goes out: the answer must come without a single body byte.
        status, headers, text = raw_exchange(
            small_gateway, request_head(Content_Length=str(SMALL_UPLOAD_BYTES + 1))
        )
    body = check_error_body(small_gateway, status, headers, text, (413, "payload_too_large"))
    assert body["detail"] == {"max_bytes": SMALL_UPLOAD_BYTES}
    assert headers["connection"] == "close"


def test_02_chunked_body_over_the_cap_is_413_before_the_body_ends(
    small_gateway: GatewayServer, private_tmp: Path
) -> None:
    payload = IMAGE_PART_HEAD + bytes(SMALL_UPLOAD_BYTES + CHUNK)
    # Chunked, no Content-Length, and the final zero-length chunk is never sent: only a
    # streaming counter can answer this.
    chunks = [
        b"%x\r\n%s\r\n" % (len(part), part)
        for part in (payload[i : i + CHUNK] for i in range(0, len(payload), CHUNK))
    ]
    with leaves_nothing(small_gateway, private_tmp):
        status, headers, text = raw_exchange(
            small_gateway, request_head(Transfer_Encoding="chunked"), *chunks
        )
    check_error_body(small_gateway, status, headers, text, (413, "payload_too_large"))


def test_02_chunked_body_from_a_generator_over_the_cap_is_413(
    small_gateway: GatewayServer, private_tmp: Path
) -> None:
    def body() -> Iterator[bytes]:
        yield IMAGE_PART_HEAD + images.png_bytes()
        for _ in range(SMALL_UPLOAD_BYTES // CHUNK + 2):
            yield bytes(CHUNK)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    with leaves_nothing(small_gateway, private_tmp):
        response = httpx.post(
            f"{small_gateway.url}/process",
            headers={**AUTH_A, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=body(),
            timeout=60,
        )
    assert "content-length" not in response.request.headers
    assert_refused(small_gateway, response, 413, "payload_too_large")


# --- 3, 4: empty and malformed uploads ---------------------------------------------------------


def test_03_empty_file_is_422_empty_file(gateway: GatewayServer, private_tmp: Path) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(b"", "empty.png"), edit())
    assert_refused(gateway, response, 422, "empty_file")


@pytest.mark.parametrize(
    ("request_args", "field"),
    [
        ({"data": edit()}, "image"),
        ({"files": one_image(images.png_bytes()), "data": {"model": "classic_edit"}}, "prompt"),
        ({"data": edit(image="not a file")}, "image.0"),
    ],
    ids=["04-no-image-part", "04-no-prompt", "04-image-sent-as-a-text-field"],
)
def test_04_missing_parts_are_422_naming_the_field(
    gateway: GatewayServer, private_tmp: Path, request_args: dict[str, Any], field: str
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, **request_args)
    body = assert_refused(gateway, response, 422, "validation_error")
    assert [f["field"] for f in body["detail"]] == [field]


def test_04_multipart_cut_off_mid_part_is_422_not_500(
    gateway: GatewayServer, private_tmp: Path
) -> None:
    cut = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\ninvert\r\n'
        f"--{BOUNDARY}\r\nContent-Disposi"
    ).encode()
    with leaves_nothing(gateway, private_tmp):
        response = post(
            gateway,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=cut,
        )
    body = assert_refused(gateway, response, 422, "validation_error")
    assert [f["field"] for f in body["detail"]] == ["image"]


@pytest.mark.parametrize(
    "content_type",
    [f"multipart/form-data; boundary={BOUNDARY}", "multipart/form-data"],
    ids=["04-boundary-mismatch", "04-no-boundary-parameter"],
)
def test_04_broken_multipart_boundary_is_400(
    gateway: GatewayServer, private_tmp: Path, content_type: str
) -> None:
    broken = b"--other\r\nContent-Disposition: form-data; name=prompt\r\n\r\nx\r\n--other--\r\n"
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, headers={"Content-Type": content_type}, content=broken)
    assert_refused(gateway, response, 400, "bad_request")


# --- 5 to 9: the bytes decide, never the name or the header ------------------------------------


def test_05_text_named_photo_jpg_sent_as_jpeg_is_415(
    gateway: GatewayServer, private_tmp: Path
) -> None:
    text = b"just some text, not a picture at all\n" * 20
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(text, "photo.jpg", "image/jpeg"), edit())
    assert_refused(gateway, response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("data", "name", "mime"),
    [(images.webp_bytes(), "photo.jpg", "application/octet-stream")],
    ids=["06-webp-as-octet-stream"],
)
def test_06_a_real_image_under_a_wrong_name_is_edited_from_its_bytes(
    gateway: GatewayServer, private_tmp: Path, data: bytes, name: str, mime: str
) -> None:
    with leaves_nothing(gateway, private_tmp, jobs=1):
        response = post(gateway, one_image(data, name, mime), edit())
    out = processed(response)
    body = response.json()
    assert (body["format"], body["mime_type"], out.format) == ("png", "image/png", "PNG")
    assert (out.width, out.height) == (body["width"], body["height"]) == (64, 48)
    # Decoded as what it is: the inverse of the pixels Pillow reads from those bytes.
    assert (np.asarray(out.convert("RGB")).astype(int) == 255 - rgb(data)).all()


@pytest.mark.parametrize(
    ("data", "pillow_format"),
    [(images.tiff_bytes(), "TIFF"), (psd_bytes(), "PSD"), (SVG, None)],
    ids=["07-tiff", "07-psd", "07-svg"],
)
def test_07_other_formats_under_an_allowed_name_are_415(
    gateway: GatewayServer, private_tmp: Path, data: bytes, pillow_format: str | None
) -> None:
    if pillow_format is not None:  # genuine files that Pillow would open without the allowlist
        assert Image.open(io.BytesIO(data)).format == pillow_format
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(data, "photo.png", "image/png"), edit())
    assert_refused(gateway, response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "data",
    [images.polyglot_gif_html()],
    ids=["08-gif-header-then-html"],
)
def test_08_image_header_then_html_is_415(
    gateway: GatewayServer, private_tmp: Path, data: bytes
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(data, "photo.jpg", "image/jpeg"), edit())
    assert_refused(gateway, response, 415, "unsupported_media_type")


def _png_with_text_chunk() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", images.POLYGLOT_PAYLOAD.decode())
    return images.encode(images.colourful(), "PNG", pnginfo=info)


@pytest.mark.parametrize(
    "data",
    [
        images.jpeg_bytes() + images.POLYGLOT_PAYLOAD,
        images.png_bytes() + images.POLYGLOT_PAYLOAD,
        _png_with_text_chunk(),
    ],
    ids=["08-html-after-jpeg-eoi", "08-html-after-png-iend", "08-html-in-png-text-chunk"],
)
def test_08_payload_riding_on_a_valid_image_is_dropped_by_reencoding(
    gateway: GatewayServer, private_tmp: Path, data: bytes
) -> None:
    with leaves_nothing(gateway, private_tmp, jobs=1):
        response = post(
            gateway, one_image(data, "photo.jpg", "image/jpeg"), edit(), {"Accept": "image/png"}
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert images.decode(response.content).format == "PNG"
    assert b"<script" not in response.content
    assert images.POLYGLOT_PAYLOAD not in response.content


@pytest.mark.parametrize(
    "make_name",
    [
        lambda token: f"../../{token}.jpg",
        lambda token: f"..\\..\\{token}.png",
        lambda token: f"/etc/{token}.png",
        lambda token: f"photo-{token}\u202egnp.exe",
        lambda token: f"{token}{'z' * 4000}.jpg",
    ],
    ids=["09-dot-dot-slash", "09-dot-dot-backslash", "09-absolute", "09-rtl-override", "09-4000"],
)
def test_09_path_like_or_absurd_file_names_are_never_used_as_paths(
    gateway: GatewayServer, private_tmp: Path, make_name: Callable[[str], str]
) -> None:
    token = f"qie-probe-{uuid.uuid4().hex}"
    with leaves_nothing(gateway, private_tmp, jobs=1):
        response = post(gateway, one_image(images.png_bytes(), make_name(token)), edit())
    out = processed(response)
    assert (out.width, out.height) == (64, 48)
    assert token not in response.text
    named = [
        os.path.join(where, name)
        for top in (ROOT, private_tmp)
        for where, dirs, files in os.walk(top)
        for name in dirs + files
        if token in name
    ]
    for top in (SYSTEM_TMP, ROOT.parent, ROOT.parent.parent, Path("/etc")):
        named += [str(top / name) for name in os.listdir(top) if token in name]
    assert named == []


def test_09_a_file_name_over_the_multipart_header_limit_is_400(
    gateway: GatewayServer, private_tmp: Path
) -> None:
    # python-multipart refuses a part header line over 4 KiB (a DoS guard): 400, never a 500.
    name = "z" * 5000 + ".jpg"
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(images.png_bytes(), name), edit())
    assert_refused(gateway, response, 400, "bad_request")


# --- 10 to 15: image content -------------------------------------------------------------------


@pytest.mark.parametrize(
    "side",
    [50_000],
    ids=["10-2.5-gigapixels"],
)
def test_10_pixel_flood_is_422_image_too_large(
    gateway: GatewayServer, private_tmp: Path, side: int
) -> None:
    flood = images.pixel_flood_png(side, side)
    assert len(flood) < 200
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(flood), edit())
    assert_refused(gateway, response, 422, "image_too_large")


def test_11_exactly_at_the_pixel_limit_is_accepted(
    small_gateway: GatewayServer, private_tmp: Path
) -> None:
    with leaves_nothing(small_gateway, private_tmp, jobs=1):
        response = post(small_gateway, one_image(images.png_bytes(64, 48)), edit())
    out = processed(response)
    assert out.width * out.height == SMALL_PIXELS


def test_11_one_pixel_over_the_limit_is_422(
    small_gateway: GatewayServer, private_tmp: Path
) -> None:
    width, height = 439, 7
    assert width * height == SMALL_PIXELS + 1
    with leaves_nothing(small_gateway, private_tmp):
        response = post(small_gateway, one_image(images.png_bytes(width, height)), edit())
    assert_refused(small_gateway, response, 422, "image_too_large")


@pytest.mark.parametrize(
    ("data", "name"),
    [(images.truncated_jpeg(), "cut.jpg")],
    ids=["12-truncated-jpeg"],
)
def test_12_truncated_image_is_422_corrupt_image(
    gateway: GatewayServer, private_tmp: Path, data: bytes, name: str
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(data, name), edit())
    assert_refused(gateway, response, 422, "corrupt_image")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (images.magic_then_garbage(images.WEBP_MAGIC), 422, "corrupt_image"),
        # Over Starlette's 1 MiB spool: the part was on disk, and must be gone afterwards.
        (
            images.magic_then_garbage(images.JPEG_MAGIC, 3 * 1024 * 1024),
            415,
            "unsupported_media_type",
        ),
    ],
    ids=["13-webp-magic", "13-jpeg-magic-3mb-spooled"],
)
def test_13_random_bytes_after_a_valid_magic_number_are_refused_and_serving_goes_on(
    gateway: GatewayServer, private_tmp: Path, data: bytes, status: int, code: str
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(data), edit())
    assert_refused(gateway, response, status, code)
    assert processed(post(gateway, one_image(images.png_bytes()), edit())).width == 64


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"], ids=["14-jpeg", "14-png"])
def test_14_exif_orientation_6_is_edited_upright_and_reports_the_rotated_size(
    gateway: GatewayServer, private_tmp: Path, fmt: str
) -> None:
    stored = images.exif_orientation_6(64, 48, fmt)
    with leaves_nothing(gateway, private_tmp, jobs=1):
        response = post(gateway, one_image(stored, f"phone.{fmt.lower()}"), edit())
    out = np.asarray(processed(response).convert("RGB")).astype(int)
    assert (response.json()["width"], response.json()["height"]) == (48, 64)
    assert out.shape == (64, 48, 3)
    # Upright, the red mark is top-right; inverted, it is cyan on white.
    mark = out[2 : images.MARK - 2, 48 - images.MARK + 2 : 46].reshape(-1, 3).mean(axis=0)
    assert mark.round().tolist() == pytest.approx([0, 255, 255], abs=40)
    assert out[2 : images.MARK - 2, 2 : images.MARK - 2].min() > 200


@pytest.mark.parametrize(
    ("data", "mode"),
    [
        (images.palette_png_with_transparency(), "RGBA"),
        (images.grayscale_png(), "RGB"),
        (images.grayscale_alpha_png(), "RGBA"),
    ],
    ids=["15-palette-with-transparency", "15-grayscale", "15-grayscale-alpha"],
)
def test_15_odd_modes_are_normalised_and_edited(
    gateway: GatewayServer, private_tmp: Path, data: bytes, mode: str
) -> None:
    with leaves_nothing(gateway, private_tmp, jobs=1):
        response = post(gateway, one_image(data), edit())
    out = processed(response)
    assert (out.width, out.height, out.mode) == (32, 24, mode)


# --- 16 to 21: prompt, options and model -------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "code"),
    [("", "validation_error"), ("   ", "invalid_input"), ("\t\n \r\n", "invalid_input")],
    ids=["16-empty", "16-spaces", "16-tabs-and-newlines"],
)
def test_16_empty_or_blank_prompt_is_422(
    gateway: GatewayServer, private_tmp: Path, prompt: str, code: str
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(images.png_bytes()), edit(prompt=prompt))
    body = assert_refused(gateway, response, 422, code)
    # An empty form field is dropped by FastAPI and reads as missing; a blank one is ours.
    if code == "validation_error":
        assert [f["field"] for f in body["detail"]] == ["prompt"]
    else:
        assert body["message"].startswith("prompt is empty")


@pytest.mark.parametrize(
    "field", ["prompt", "negative_prompt"], ids=["17-prompt", "17-negative-prompt"]
)
def test_17_prompt_over_the_cap_is_422_prompt_too_long(
    gateway: GatewayServer, private_tmp: Path, field: str
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(
            gateway,
            one_image(images.png_bytes()),
            edit(**{field: "a" * (DEFAULT_PROMPT_CHARS + 1)}),
        )
    body = assert_refused(gateway, response, 422, "prompt_too_long")
    assert body["message"].startswith(f"{field} is {DEFAULT_PROMPT_CHARS + 1} characters")


def test_17_prompt_of_exactly_the_cap_is_accepted(
    gateway: GatewayServer, private_tmp: Path
) -> None:
    prompt = "invert".ljust(DEFAULT_PROMPT_CHARS)
    with leaves_nothing(gateway, private_tmp, jobs=1):
        response = post(gateway, one_image(images.png_bytes()), edit(prompt=prompt))
    assert processed(response).width == 64
    assert response.json()["operations"] == ["invert"]


OPTION_CASES = [
    # As plain form fields: text parsed as a number, so "2.5" stays invalid.
    ("18-steps-2.5-form", {"steps": "2.5"}, "steps"),
    ("18-seed-2**32-form", {"seed": str(2**32)}, "seed"),
    # Inside the options JSON, which is strict: "8" is not 8 there.
    ("18-steps-string-json", {"options": json.dumps({"steps": "8"})}, "steps"),
    ("18-unknown-option-json", {"options": json.dumps({"stepz": 5})}, "stepz"),
    # 21: an output format the service does not write.
    ("21-output-format-gif-form", {"output_format": "gif"}, "output_format"),
]


@pytest.mark.parametrize(
    ("fields", "field"),
    [case[1:] for case in OPTION_CASES],
    ids=[case[0] for case in OPTION_CASES],
)
def test_18_21_bad_option_is_422_invalid_options_naming_the_field(
    gateway: GatewayServer, private_tmp: Path, fields: dict[str, str], field: str
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(images.png_bytes()), edit(**fields))
    body = assert_refused(gateway, response, 422, "invalid_options")
    assert [f["field"] for f in body["detail"]] == [field]
    assert field in body["message"]


@pytest.mark.parametrize(
    ("options", "detail"),
    [("{steps: 8", {"field": "options"})],
    ids=["options-not-json"],
)
def test_options_that_are_not_a_json_object_are_422_invalid_options(
    gateway: GatewayServer, private_tmp: Path, options: str, detail: Any
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(images.png_bytes()), edit(options=options))
    body = assert_refused(gateway, response, 422, "invalid_options")
    assert body["detail"] == detail
    assert "options" in body["message"]


def test_19_unknown_model_is_404_with_the_list_of_models(
    gateway: GatewayServer, private_tmp: Path
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(images.png_bytes()), edit(model="no-such-model"))
    body = assert_refused(gateway, response, 404, "model_not_found")
    assert body["detail"] == {"models": ["classic_edit", "qwen_image_edit"]}


def test_20_a_model_triton_lists_but_has_not_loaded_is_503_model_unavailable(
    lone_classic: tuple[TritonServer, GatewayServer], private_tmp: Path
) -> None:
    """The state of a model still loading at start: Triton's repository index lists it."""
    triton, gw = lone_classic
    index = httpx.post(f"{triton.http_url}/v2/repository/index", json={}, timeout=10).json()
    assert {m["name"]: m.get("state") for m in index} == {
        "classic_edit": "READY",
        "qwen_image_edit": None,
    }
    with leaves_nothing(gw, private_tmp):
        response = post(gw, one_image(images.png_bytes()), edit(model="qwen_image_edit"))
    assert_refused(gw, response, 503, "model_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


def test_20_a_model_unloaded_from_triton_is_503_model_unavailable_with_retry_after(
    lone_classic: tuple[TritonServer, GatewayServer], private_tmp: Path
) -> None:
    triton, gw = lone_classic
    unload = httpx.post(f"{triton.http_url}/v2/repository/models/classic_edit/unload", timeout=30)
    assert unload.status_code == 200, unload.text
    wait_for(lambda: httpx.get(f"{gw.url}/health").json()["models"].get("classic_edit") is False)
    with leaves_nothing(gw, private_tmp):
        response = post(gw, one_image(images.png_bytes()), edit())
    assert_refused(gw, response, 503, "model_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("model", "count"),
    [("classic_edit", 2)],
    ids=["classic-2-images"],
)
def test_too_many_images_for_the_model_is_422_image_count(
    gateway: GatewayServer, private_tmp: Path, model: str, count: int
) -> None:
    files = [("image", (f"{i}.png", images.png_bytes(), "image/png")) for i in range(count)]
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, files, {"prompt": "invert", "model": model})
    body = assert_refused(gateway, response, 422, "image_count")
    assert body["message"].endswith(f"got {count}")


# --- 27, 28: limits and callbacks --------------------------------------------------------------


def test_27_over_the_per_key_rate_is_429_with_retry_after(
    triton_server: TritonServer, private_tmp: Path
) -> None:
    with running_gateway([triton_server.grpc_url], "classic_edit", RATE_LIMIT="3/minute") as gw:
        for _ in range(3):
            assert httpx.get(f"{gw.url}/models", headers=AUTH_A).status_code == 200
        with leaves_nothing(gw, private_tmp):
            response = post(gw, one_image(images.png_bytes()), edit())
        assert_refused(gw, response, 429, "rate_limited")
        assert 1 <= int(response.headers["Retry-After"]) <= 61
        # The limit is per key: another key is still served.
        other = httpx.get(f"{gw.url}/models", headers={"Authorization": f"Bearer {KEY_B}"})
        assert other.status_code == 200


def test_27_queue_full_is_503_with_retry_after_and_accepted_jobs_are_unaffected(
    triton_server: TritonServer, private_tmp: Path
) -> None:
    with (
        running_gateway(
            [triton_server.grpc_url],
            "qwen_image_edit",
            MAX_QUEUE_DEPTH=1,
            MAX_CONCURRENT_REQUESTS=1,
        ) as gw,
        gw.client() as client,
    ):
        slow = {"steps": 100, "width": 512, "height": 512, "true_cfg_scale": 1.0}
        running = client.submit(images.png_bytes(), "slow", options=slow)
        wait_for(lambda: client.job(running)["status"] == "processing")
        queued = client.submit(images.png_bytes(), "next", options={"steps": 2, "seed": 7})
        wait_for(lambda: client.job(queued)["queue_position"] == 1)
        with leaves_nothing(gw, private_tmp):
            response = post(
                gw, one_image(images.png_bytes()), {"prompt": "one too many", "async": "true"}
            )
        assert_refused(gw, response, 503, "queue_full")
        assert int(response.headers["Retry-After"]) >= 1
        assert client.cancel(running)["status"] == "cancelled"
        assert [e.event for e in client.events(queued)][-1] == "completed"
        assert client.job(queued)["result"]["seed"] == 7
        assert images.decode(client.result(queued)).format == "PNG"


@pytest.mark.parametrize(
    "url",
    ["gopher://127.0.0.1:6379/_FLUSHALL", "//example.com/hook"],
    ids=["28-gopher", "28-no-scheme"],
)
def test_28_callback_url_that_is_not_absolute_http_is_422(
    gateway: GatewayServer, private_tmp: Path, url: str
) -> None:
    with leaves_nothing(gateway, private_tmp):
        response = post(gateway, one_image(images.png_bytes()), edit(callback_url=url))
    body = assert_refused(gateway, response, 422, "invalid_callback_url")
    assert body["detail"] == {"field": "callback_url"}


def test_28a_a_callback_host_off_the_allowlist_is_422_and_nothing_is_sent(
    gateway: GatewayServer, private_tmp: Path
) -> None:
    for url in ("http://127.0.0.1:9/hook", "http://2130706433:9/hook", "http://[::1]:9/"):
        with leaves_nothing(gateway, private_tmp):
            response = post(gateway, one_image(images.png_bytes()), edit(callback_url=url))
        body = assert_refused(gateway, response, 422, "callback_not_allowed")
        assert "WEBHOOK_ALLOWED_HOSTS" in body["message"]
