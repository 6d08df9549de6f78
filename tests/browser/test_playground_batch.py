"""The playground's batch mode in real headless Chromium: several picked images go as one POST
/batches, each item shows its own progress, result or error, and the zip downloads."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Download, Page, expect

from tests import images
from tests.browser.chromium import PHONE, ConsoleWatch, screenshot
from tests.browser.playground_page import Playground, image_file, tab_to
from tests.gateway_server import GatewayServer

pytestmark = pytest.mark.integration
NewPage = Callable[..., Page]
# Three colourful inputs of different sizes and formats, named so the zip's entries tell them apart.
INPUTS = [
    ("harbour.jpg", images.jpeg_bytes(320, 240), "image/jpeg", (320, 240)),
    ("meadow.png", images.png_bytes(200, 150), "image/png", (200, 150)),
    ("street.jpg", images.jpeg_bytes(160, 200), "image/jpeg", (160, 200)),
]
EDITED = ["harbour-edited.png", "meadow-edited.png", "street-edited.png"]


def picked(*names: str) -> list[Any]:
    return [image_file(name, data, mime) for name, data, mime, _ in INPUTS if name in names]


def batch_id(ui: Playground) -> str:
    assert ui.page.locator("#stage").get_attribute("data-kind") == "batch"
    return ui.job_id


def download_zip(ui: Playground) -> tuple[Download, zipfile.ZipFile]:
    with ui.page.expect_download() as download_info:
        ui.by("batch-zip").click()
    download = download_info.value
    return download, zipfile.ZipFile(io.BytesIO(download.path().read_bytes()))


def assert_gray(pixels: dict[str, Any]) -> None:
    assert pixels["coloured"] == 0, f"{pixels['coloured']} pixels are not gray"
    assert pixels["max"] - pixels["min"] > 100  # a gray image, not a blank one


def test_three_images_in_one_batch_come_back_gray_with_a_full_progress_bar_and_a_zip(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(*picked(*(name for name, *_ in INPUTS)))
    ui.edit("make it black and white", "classic_edit")
    expect(ui.by("process")).to_have_text("Process 3 images")
    expect(ui.by("variations")).to_be_hidden()  # classic_edit takes no seed
    ui.record_progress()
    requests: list[str] = []
    ui.page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))
    ui.process()
    assert ui.wait_batch() == "completed"
    ui.wait_batch_results(3)

    sent = [r.removeprefix(f"POST {open_gateway.url}") for r in requests if r.startswith("POST")]
    assert sent == ["/batches"]  # one request for the three, none to /process
    pixels = ui.batch_pixels()
    assert [(p["width"], p["height"]) for p in pixels] == [size for *_, size in INPUTS]
    for one in pixels:
        assert_gray(one)
    assert ui.by("progress").evaluate("(bar) => [bar.value, bar.max]") == [100, 100]
    seen = ui.progress_seen()
    assert seen == sorted(seen) and seen[-1] == 100, seen
    items = ui.batch_items()
    assert [item["status"] for item in items] == ["completed"] * 3
    for item, (name, *_) in zip(items, INPUTS, strict=True):
        assert name in item["text"] and "Done." in item["text"]
    expect(ui.page.locator("#status")).to_have_text(re.compile(r"^All 3 edits done in "))
    expect(ui.by("result-image")).to_be_hidden()  # the single edit's slider stays out of it
    expect(ui.by("cancel")).to_be_hidden()

    batch = open_gateway.client(None).batch(batch_id(ui))
    assert batch["status"] == "completed" and batch["completed"] == 3
    assert [item["job_id"] for item in items] == [job["job_id"] for job in batch["jobs"]]
    assert [job["file"] for job in batch["jobs"]] == EDITED

    download, archive = download_zip(ui)
    assert download.suggested_filename == f"batch-{batch['batch_id']}.zip"
    assert archive.namelist() == EDITED
    for entry, (*_, size) in zip(EDITED, INPUTS, strict=True):
        image = images.decode(archive.read(entry))
        assert image.format == "PNG" and image.size == size
        row = [image.convert("RGB").getpixel((x, size[1] // 2)) for x in range(0, size[0], 8)]
        assert all(r == g == b for r, g, b in row) and len(set(row)) > 5

    history = ui.history()
    assert history[0]["status"] == "completed" and "3 images" in history[0]["text"]
    screenshot(ui.page, "desktop-batch-result")


def test_a_text_file_in_a_batch_fails_its_own_item_with_the_apis_error_and_the_others_complete(
    new_page: NewPage, open_gateway: GatewayServer, console: ConsoleWatch
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    notes = image_file("notes.txt", b"these are notes, not pixels\n", "text/plain")
    ui.pick(*picked("harbour.jpg"), notes, *picked("meadow.png"))
    ui.edit("make it black and white", "classic_edit")
    ui.process()
    assert ui.wait_batch() == "partial"
    ui.wait_batch_results(2)

    batch = open_gateway.client(None).batch(batch_id(ui))
    assert batch["status"] == "partial"
    assert [job["status"] for job in batch["jobs"]] == ["completed", "failed", "completed"]
    error = batch["jobs"][1]["error"]
    assert error["code"] in {"unsupported_format", "unsupported_media_type"}, error
    assert [item["status"] for item in ui.batch_items()] == ["completed", "failed", "completed"]
    item_errors = ui.page.locator('[data-testid="batch-item-error"]:visible')
    expect(item_errors).to_have_count(1)
    expect(ui.by("batch-item").nth(1).get_by_test_id("batch-item-error")).to_contain_text(
        error["message"]
    )
    expect(item_errors).to_contain_text(error["code"])
    expect(ui.by("error")).to_be_hidden()  # the batch itself did not fail
    for one in ui.batch_pixels():
        assert_gray(one)
    assert ui.by("progress").evaluate("(bar) => bar.value") == 100
    expect(ui.page.locator("#status")).to_contain_text("2 of 3 done")
    expect(ui.page.locator("#status")).to_contain_text("1 failed")

    _, archive = download_zip(ui)
    assert archive.namelist() == ["harbour-edited.png", "meadow-edited.png"]
    assert ui.history()[0]["status"] == "partial"
    assert not console.errors  # the batch was accepted: nothing of it failed to load
    screenshot(ui.page, "desktop-batch-partial")


def test_a_long_qwen_batch_cancelled_from_the_page_ends_with_every_item_cancelled(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(*picked(*(name for name, *_ in INPUTS)))
    ui.edit("add a hat", "qwen_image_edit", steps="100")
    ui.process()
    ui.page.wait_for_function(
        "() => [...document.querySelectorAll('.batch-progress')].some((bar) => bar.value > 0)",
        timeout=120_000,
    )
    expect(ui.page.locator(".batch-item[data-status='processing']").first).to_contain_text("of 100")
    screenshot(ui.page, "desktop-batch-running")
    ui.by("cancel").click()
    assert ui.wait_batch() == "cancelled"

    assert [item["status"] for item in ui.batch_items()] == ["cancelled"] * 3
    batch = open_gateway.client(None).batch(batch_id(ui))
    assert batch["status"] == "cancelled" and batch["cancelled"] == 3
    assert all(job["progress"]["step"] < 100 for job in batch["jobs"])
    result = httpx.get(f"{open_gateway.url}/batches/{batch['batch_id']}/result")
    assert (result.status_code, result.json()["code"]) == (410, "batch_cancelled")
    expect(ui.by("batch-result")).to_have_count(0)
    expect(ui.by("batch-zip")).to_be_hidden()  # nothing to download
    expect(ui.by("cancel")).to_be_hidden()
    expect(ui.page.locator("#retry")).to_be_visible()
    assert ui.by("progress").evaluate("(bar) => bar.value") == 100  # the batch has ended
    assert ui.history()[0]["status"] == "cancelled"


def test_variations_of_one_image_on_qwen_are_one_batch_of_seeds(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(*picked("meadow.png"))
    ui.edit("add a hat", "qwen_image_edit", steps="2", seed="41")
    expect(ui.by("variations")).to_be_visible()
    ui.by("variations").fill("3")
    expect(ui.page.locator("#process-note")).to_contain_text("3 times")
    ui.process()
    assert ui.wait_batch() == "completed"
    ui.wait_batch_results(3)

    batch = open_gateway.client(None).batch(batch_id(ui))
    assert batch["kind"] == "variations"
    assert [job["seed"] for job in batch["jobs"]] == [41, 42, 43]
    assert [item["text"].splitlines()[0] for item in ui.batch_items()] == [
        "seed 41",
        "seed 42",
        "seed 43",
    ]
    _, archive = download_zip(ui)
    assert archive.namelist() == [f"meadow-edited-{n}.png" for n in (1, 2, 3)]

    # Two images picked: variations take one, so the field says so and Process sends a batch.
    ui.pick(*picked("harbour.jpg"))
    expect(ui.by("variations")).to_be_disabled()
    expect(ui.by("process")).to_have_text("Process 2 images")


def test_a_batch_over_the_limit_shows_the_apis_own_error(
    new_page: NewPage, open_gateway: GatewayServer, console: ConsoleWatch
) -> None:
    console.expect(r"Failed to load resource: .*status of 422")
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(*(image_file(f"tile-{n}.png", images.png_bytes(8, 8), "image/png") for n in range(17)))
    ui.edit("make it black and white", "classic_edit")
    ui.process()
    assert ui.wait_batch() == "failed"
    error = ui.by("error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("image_count")
    expect(error).to_contain_text("16")
    assert [item["status"] for item in ui.batch_items()] == ["unsent"] * 17
    expect(ui.page.locator("#retry")).to_be_visible()


def test_a_batch_on_a_phone_fits_and_runs_with_the_keyboard_alone(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    page = new_page(PHONE)
    ui = Playground(page, open_gateway.url).open()
    ui.pick(*picked(*(name for name, *_ in INPUTS)))
    tab_to(page, '[data-testid="model"]')
    page.keyboard.type("classic")
    assert ui.by("model").input_value() == "classic_edit"
    tab_to(page, '[data-testid="prompt"]')
    page.keyboard.type("make it black and white")
    page.keyboard.press("Control+Enter")
    assert ui.wait_batch() == "completed"
    ui.wait_batch_results(3)
    for one in ui.batch_pixels():
        assert_gray(one)

    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    for node in [*ui.by("batch-item").all(), ui.by("progress"), ui.by("batch-zip")]:
        box = node.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    box = ui.by("batch-zip").bounding_box()
    assert box is not None and box["height"] >= 24  # big enough to tap

    tab_to(page, '[data-testid="batch-zip"]')
    with page.expect_download() as download_info:
        page.keyboard.press("Enter")
    archive = zipfile.ZipFile(io.BytesIO(download_info.value.path().read_bytes()))
    assert archive.namelist() == EDITED
    tab_to(page, ".batch-item:nth-child(2) a.batch-save")
    with page.expect_download() as one:
        page.keyboard.press("Enter")
    assert one.value.suggested_filename == "meadow-edited.png"
    screenshot(page, "phone-batch-result")
