"""The playground in real headless Chromium, through a real gateway and a real tritonserver."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import FileChooser, Page, expect

from tests import images
from tests.browser.chromium import PHONE, ConsoleWatch, screenshot
from tests.browser.playground_page import Playground, image_file, tab_to
from tests.gateway_server import GatewayServer, wait_for

pytestmark = pytest.mark.integration
NewPage = Callable[..., Page]


def photo() -> bytes:
    return images.jpeg_bytes(320, 240)


def test_black_and_white_on_classic_edit_gives_gray_pixels_and_a_full_progress_bar(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(image_file("photo.jpg", photo()))
    ui.edit("make it black and white", "classic_edit")
    assert ui.input_pixels()["coloured"] > 0  # the input really has colour
    ui.record_progress()
    ui.process()
    ui.wait_result()

    pixels = ui.result_pixels()
    assert (pixels["width"], pixels["height"]) == (320, 240)
    assert pixels["coloured"] == 0, f"{pixels['coloured']} pixels are not gray"
    assert pixels["max"] - pixels["min"] > 100  # a gray image, not a blank one
    progress = ui.by("progress")
    assert progress.evaluate("(bar) => [bar.value, bar.max]") == [100, 100]
    seen = ui.progress_seen()
    assert seen == sorted(seen) and seen[-1] == 100, seen
    expect(ui.page.locator("#status")).to_have_text(re.compile(r"^Done in "))
    assert open_gateway.client(None).job(ui.job_id)["status"] == "completed"

    with ui.page.expect_download() as download_info:
        ui.page.locator("#download").click()
    download = download_info.value
    assert download.suggested_filename == "photo-edited.png"
    downloaded = images.decode(download.path().read_bytes())
    assert downloaded.format == "PNG" and downloaded.size == (320, 240)
    row = [downloaded.convert("RGB").getpixel((x, 120)) for x in range(0, 320, 16)]
    assert all(r == g == b for r, g, b in row) and len(set(row)) > 5
    screenshot(ui.page, "desktop-classic-result")


def test_a_long_qwen_job_cancelled_from_the_page_ends_cancelled(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(image_file("photo.jpg", photo()))
    ui.edit("add a hat", "qwen_image_edit", steps="100")
    expect(ui.page.locator("#model-warning")).to_contain_text("random weights")
    ui.process()
    ui.page.wait_for_function(
        "() => document.querySelector('[data-testid=\"progress\"]').value > 0", timeout=120_000
    )
    expect(ui.page.locator("#status")).to_contain_text("of 100")
    screenshot(ui.page, "desktop-qwen-running")
    ui.by("cancel").click()
    assert ui.wait_status("completed", "failed", "cancelled") == "cancelled"

    job = open_gateway.client(None).job(ui.job_id)
    assert job["status"] == "cancelled"
    assert job["progress"]["step"] < 100
    assert httpx.get(f"{open_gateway.url}/jobs/{ui.job_id}/result").status_code == 410
    expect(ui.by("cancel")).to_be_hidden()
    expect(ui.page.locator("#retry")).to_be_visible()
    assert ui.history()[0]["status"] == "cancelled"


def test_a_queued_job_shows_its_place_and_eta_and_cancels_at_once(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    client = open_gateway.client(None)
    blocker = httpx.post(
        f"{open_gateway.url}/process",
        headers={"Prefer": "respond-async"},
        files={"image": ("a.png", images.png_bytes(), "image/png")},
        data={"prompt": "x", "model": "qwen_image_edit", "steps": "100"},
    ).json()["job_id"]
    try:
        wait_for(lambda: client.job(blocker)["status"] == "processing", timeout=60)
        ui = Playground(new_page(), open_gateway.url).open()
        ui.pick(image_file("photo.jpg", photo()))
        ui.edit("add a hat", "qwen_image_edit", steps="2")
        ui.process()
        expect(ui.page.locator("#status")).to_contain_text("Queued: position 1", timeout=30_000)
        expect(ui.page.locator("#status")).to_contain_text("done in about")
        ui.by("cancel").click()
        assert ui.wait_status("completed", "failed", "cancelled", timeout_s=10) == "cancelled"
        job = client.job(ui.job_id)
        assert job["status"] == "cancelled" and job["started_at"] is None  # it never ran
    finally:
        client.cancel(blocker)


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("notes.txt", b"these are notes, not pixels\n", "unsupported_media_type"),
        ("flood.png", images.pixel_flood_png(), "image_too_large"),
    ],
)
def test_a_file_the_api_refuses_shows_the_apis_own_message(
    new_page: NewPage,
    open_gateway: GatewayServer,
    console: ConsoleWatch,
    name: str,
    data: bytes,
    code: str,
) -> None:
    direct = httpx.post(
        f"{open_gateway.url}/process",
        files={"image": (name, data, "image/png")},
        data={"prompt": "make it black and white", "model": "classic_edit"},
    )
    assert direct.json()["code"] == code
    console.expect(rf"Failed to load resource: .*status of {direct.status_code}")
    jobs_before = open_gateway.job_count()

    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(image_file(name, data, "image/png"))
    ui.edit("make it black and white", "classic_edit")
    ui.process()
    error = ui.by("error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(direct.json()["message"])
    expect(error).to_contain_text(code)
    assert ui.status == "failed"
    assert open_gateway.job_count() == jobs_before  # refused before any job existed
    expect(ui.page.locator("#retry")).to_be_visible()
    screenshot(ui.page, f"desktop-refused-{code}")


def test_an_unknown_instruction_shows_the_models_message_and_retry_sends_it_again(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(image_file("photo.jpg", photo()))
    ui.edit("make it glow", "classic_edit")
    expect(ui.page.locator("#vocabulary")).to_be_visible()  # what classic_edit understands
    ui.process()
    assert ui.wait_status(*("completed", "failed", "cancelled")) == "failed"
    first = ui.job_id
    job = open_gateway.client(None).job(first)
    assert job["error"]["code"] == "unknown_instruction"
    expect(ui.by("error")).to_contain_text(job["error"]["message"])

    ui.page.locator("#retry").click()
    ui.page.wait_for_function(
        "(first) => { const s = document.getElementById('stage').dataset;"
        " return s.jobId && s.jobId !== first && s.status === 'failed'; }",
        arg=first,
    )
    assert [row["status"] for row in ui.history()] == ["failed", "failed"]
    assert open_gateway.client(None).job(ui.job_id)["error"]["code"] == "unknown_instruction"


def ignore_chooser(_chooser: FileChooser) -> None:
    """expect_file_chooser below takes the dialog."""


def test_the_main_flow_works_with_the_keyboard_alone(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    page = new_page()
    # Listening from the start turns on Chromium's file chooser interception well before the key
    # press; turned on only by expect_file_chooser, it can race the press and miss the dialog.
    page.on("filechooser", ignore_chooser)
    ui = Playground(page, open_gateway.url).open()
    tab_to(page, '[data-testid="file-input"]')
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files([image_file("photo.jpg", photo())])
    expect(page.locator(".thumb")).to_have_attribute("aria-pressed", "true")

    tab_to(page, '[data-testid="model"]')
    page.keyboard.type("classic")  # a focused <select> picks the option typed
    assert ui.by("model").input_value() == "classic_edit"
    tab_to(page, '[data-testid="process"]')
    outline = ui.by("process").evaluate("(b) => getComputedStyle(b).outlineStyle")
    assert outline != "none"  # the focus is visible
    page.keyboard.press("Shift+Tab")
    tab_to(page, '[data-testid="prompt"]')
    page.keyboard.type("invert")
    page.keyboard.press("Control+Enter")
    ui.wait_result()
    assert ui.result_pixels()["coloured"] > 0

    tab_to(page, "#split")
    before = page.locator("#compare").evaluate("(c) => c.style.getPropertyValue('--split')")
    page.keyboard.press("Home")
    after = page.locator("#compare").evaluate("(c) => c.style.getPropertyValue('--split')")
    assert (before, after) == ("50%", "0%")

    tab_to(page, "#download")
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    assert download.value.suggested_filename == "photo-edited.png"

    # A second edit, then the first one again from the history, by keyboard.
    tab_to(page, '[data-testid="prompt"]')
    page.keyboard.press("Control+A")
    page.keyboard.type("make it black and white")
    page.keyboard.press("Control+Enter")
    ui.wait_result()
    assert ui.result_pixels()["coloured"] == 0
    tab_to(page, ".history li:nth-child(2) .history-item")
    page.keyboard.press("Enter")
    expect(page.locator(".history li:nth-child(2) .history-item")).to_have_attribute(
        "aria-current", "true"
    )
    assert ui.result_pixels()["coloured"] > 0  # the inverted result is back on the stage


def test_the_page_fits_a_phone_and_runs_an_edit_there(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    page = new_page(PHONE)
    ui = Playground(page, open_gateway.url).open()
    screenshot(page, "phone-start")
    ui.pick(image_file("photo.jpg", photo()))
    ui.edit("make it black and white and rotate 90 degrees", "classic_edit")
    ui.process()
    ui.wait_result()
    assert ui.result_pixels()["coloured"] == 0
    assert (ui.result_pixels()["width"], ui.result_pixels()["height"]) == (240, 320)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    for testid in ("file-input", "prompt", "model", "preset", "process", "progress"):
        box = ui.by(testid).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    for control in ("prompt", "model", "process"):
        box = ui.by(control).bounding_box()
        assert box is not None and box["height"] >= 24, control  # big enough to tap
    screenshot(page, "phone-result")


TRY_INLINE_CODE = """() => {
  setTimeout("window.timerRan = 1", 0);
  const button = document.createElement("button");
  button.setAttribute("onclick", "window.handlerRan = 1");
  document.body.append(button);
  button.click();
  const script = document.createElement("script");
  script.textContent = "window.inlineRan = 1";
  document.body.append(script);
  const styled = document.createElement("div");
  styled.id = "styled";
  styled.setAttribute("style", "color: rgb(255, 0, 0)");
  document.body.append(styled);
}"""


def test_the_page_loads_with_no_console_error_and_applies_its_csp(
    new_page: NewPage, open_gateway: GatewayServer, console: ConsoleWatch
) -> None:
    page = new_page()
    Playground(page, open_gateway.url).open()
    expect(page.locator("#health")).to_contain_text("READY")
    expect(page.locator("#key-form")).to_be_hidden()  # auth is off
    assert not console.errors
    # The browser enforces the policy on the page's own document: a string run as code (eval's
    # kin), an inline handler, an inline script and an inline style are all refused.
    console.expect(r"violates the following Content Security Policy directive")
    page.evaluate(TRY_INLINE_CODE)
    page.wait_for_timeout(300)  # the string timer would have fired by now
    ran = page.evaluate(
        "() => [window.timerRan, window.handlerRan, window.inlineRan,"
        " getComputedStyle(document.getElementById('styled')).color]"
    )
    assert ran[:3] == [None, None, None]
    assert ran[3] != "rgb(255, 0, 0)"
    assert len(console.errors) == 4, console.errors
    screenshot(page, "desktop-start")


def test_another_site_cannot_frame_the_page(
    new_page: NewPage, open_gateway: GatewayServer, console: ConsoleWatch
) -> None:
    console.expect(r"frame-ancestors")
    page = new_page()
    # /health/live's JSON may be framed: it shows that the frame would load if it were allowed.
    with page.expect_console_message(lambda m: "frame-ancestors" in m.text):
        page.set_content(
            f'<iframe id="api" src="{open_gateway.url}/health/live"></iframe>'
            f'<iframe id="page" src="{open_gateway.url}/"></iframe>'
        )
    expect(page.frame_locator("#api").locator("body")).to_contain_text("alive")
    assert page.frame_locator("#page").locator("#edit-form").count() == 0


DROP_FILES = """(zone, files) => {
  const transfer = new DataTransfer();
  for (const { name, type, base64 } of files) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type }));
  }
  zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true }));
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
}"""


def test_dropped_images_are_listed_with_previews_and_one_is_selected(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    page = new_page()
    ui = Playground(page, open_gateway.url).open()
    files = [
        {"name": name, "type": mime, "base64": base64.b64encode(data).decode()}
        for name, mime, data in [
            ("one.jpg", "image/jpeg", photo()),
            ("two.png", "image/png", images.png_bytes(40, 30)),
        ]
    ]
    page.locator("#dropzone").evaluate(DROP_FILES, files)
    thumbs = page.locator(".thumb")
    expect(thumbs).to_have_count(2)
    expect(thumbs.nth(1)).to_have_attribute("aria-pressed", "true")  # the last one dropped
    expect(thumbs.nth(1)).to_contain_text("40\u00d730")
    expect(page.locator("#before-image")).to_have_js_property("naturalWidth", 40)

    thumbs.nth(0).click()
    expect(thumbs.nth(0)).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#before-image")).to_have_js_property("naturalWidth", 320)
    page.get_by_role("button", name="Remove one.jpg").click()
    expect(thumbs).to_have_count(1)
    expect(thumbs.nth(0)).to_have_attribute("aria-pressed", "true")
    expect(thumbs.nth(0)).to_contain_text("two.png")
    expect(thumbs.nth(0)).to_be_focused()  # the keyboard goes on from the image left

    ui.edit("invert", "classic_edit")
    ui.process()
    ui.wait_result()
    assert (ui.result_pixels()["width"], ui.result_pixels()["height"]) == (40, 30)
