"""The playground's mask tool in real headless Chromium: a rectangle or a brush painted over the
preview (or a region typed in) makes an edit local, and the result comes back at the input's size,
edited inside the mask and the input's own pixels outside it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests import images
from tests.browser.chromium import PHONE, ConsoleWatch, screenshot
from tests.browser.playground_page import Playground, image_file, tab_to
from tests.gateway_server import GatewayServer

pytestmark = pytest.mark.integration
NewPage = Callable[..., Page]
Point = tuple[int, int]
Box = tuple[int, int, int, int]  # x, y, width, height in the image's pixels
WIDTH, HEIGHT = 320, 240
# Farther than the blend at the mask's edge reaches (4 px at this size) and the brush's rounding.
MARGIN = 10
README_VIEWPORT = {"width": 960, "height": 900}
REGION_FIELDS = ("region-x", "region-y", "region-w", "region-h")

# Pixels of an <img> at the given points, read through a canvas in the page.
PIXELS_AT = """(img, points) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
  return points.map(([x, y]) => {
    const i = 4 * (y * canvas.width + x);
    return [data[i], data[i + 1], data[i + 2]];
  });
}"""
# The overlay's opacity at points of the image (the overlay shows the image's box as the preview
# does, object-fit: contain), and how many of its pixels are painted at all.
OVERLAY_AT = """(canvas, [width, height, points]) => {
  const copy = document.createElement("canvas");
  copy.width = canvas.width;
  copy.height = canvas.height;
  const context = copy.getContext("2d");
  context.drawImage(canvas, 0, 0);
  const { data } = context.getImageData(0, 0, copy.width, copy.height);
  const scale = Math.min(copy.width / width, copy.height / height);
  const left = (copy.width - width * scale) / 2;
  const top = (copy.height - height * scale) / 2;
  const at = points.map(([x, y]) => {
    const i = 4 * (Math.floor(top + y * scale) * copy.width + Math.floor(left + x * scale));
    return data[i + 3];
  });
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i]) painted += 1;
  return { at, painted };
}"""


def photo() -> bytes:
    """A colourful PNG: the edit keeps the input's exact pixels outside the mask."""
    return images.png_bytes(WIDTH, HEIGHT)


def natural_size(ui: Playground) -> tuple[int, int]:
    size = ui.page.locator("#before-image").evaluate("(i) => [i.naturalWidth, i.naturalHeight]")
    return size[0], size[1]


def on_page(ui: Playground, point: Point) -> tuple[float, float]:
    """Where an image pixel is on the page: the mask canvas shows the image as contain does."""
    box = ui.by("mask-canvas").bounding_box()
    assert box is not None
    width, height = natural_size(ui)
    scale = min(box["width"] / width, box["height"] / height)
    left = box["x"] + (box["width"] - width * scale) / 2
    top = box["y"] + (box["height"] - height * scale) / 2
    return left + (point[0] + 0.5) * scale, top + (point[1] + 0.5) * scale


def drag(ui: Playground, start: Point, end: Point) -> None:
    """Presses the mouse at one image pixel, moves to another and lifts it."""
    ui.by("mask-canvas").scroll_into_view_if_needed()
    mouse = ui.page.mouse
    mouse.move(*on_page(ui, start))
    mouse.down()
    mouse.move(*on_page(ui, end), steps=8)
    mouse.up()


def wait_preview(ui: Playground, size: tuple[int, int]) -> None:
    expect(ui.by("mask-canvas")).to_be_visible()
    ui.page.wait_for_function(
        "([w, h]) => { const i = document.getElementById('before-image');"
        " return i.naturalWidth === w && i.naturalHeight === h; }",
        arg=list(size),
    )


def inside(box: Box) -> list[Point]:
    """Points well inside the box."""
    x, y, w, h = box
    return [
        (px, py)
        for px in range(x + MARGIN, x + w - MARGIN, 12)
        for py in range(y + MARGIN, y + h - MARGIN, 12)
    ]


def outside(box: Box, size: tuple[int, int] = (WIDTH, HEIGHT)) -> list[Point]:
    """Points of the image well away from the box."""
    x, y, w, h = box
    return [
        (px, py)
        for px in range(0, size[0], 9)
        for py in range(0, size[1], 9)
        if px < x - MARGIN or px >= x + w + MARGIN or py < y - MARGIN or py >= y + h + MARGIN
    ]


def pixels(ui: Playground, selector: str, points: Iterable[Point]) -> list[list[int]]:
    image = ui.page.locator(selector)
    found: list[list[int]] = image.evaluate(PIXELS_AT, [list(p) for p in points])
    return found


def overlay(ui: Playground, points: Iterable[Point] = ()) -> dict[str, Any]:
    width, height = natural_size(ui)
    found: dict[str, Any] = ui.by("mask-canvas").evaluate(
        OVERLAY_AT, [width, height, [list(p) for p in points]]
    )
    return found


def assert_local_edit(ui: Playground, box: Box, size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
    """Gray well inside the box; the input's exact colours well outside it; the input's size."""
    result = ui.by("result-image")
    assert result.evaluate("(i) => [i.naturalWidth, i.naturalHeight]") == list(size)
    grey = pixels(ui, '[data-testid="result-image"]', inside(box))
    assert grey and all(r == g == b for r, g, b in grey), grey
    assert len({r for r, _, _ in grey}) > 3  # the picture's shades, not a flat fill
    away = outside(box, size)
    kept = pixels(ui, '[data-testid="result-image"]', away)
    assert kept == pixels(ui, "#before-image", away)
    assert sum(1 for r, g, b in kept if not r == g == b) > len(kept) // 2  # still colourful


def local_of(ui: Playground, gateway: GatewayServer) -> dict[str, Any]:
    local: dict[str, Any] = gateway.client(None).job(ui.job_id)["result"]["local"]
    return local


def test_a_rectangle_dragged_over_the_preview_turns_only_it_black_and_white(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(README_VIEWPORT), open_gateway.url).open()
    ui.pick(image_file("photo.png", photo(), "image/png"))
    ui.edit("make it black and white", "classic_edit")
    wait_preview(ui, (WIDTH, HEIGHT))
    expect(ui.page.locator("#process-note")).to_have_text("Edits the selected image.")

    rectangle = ui.by("mask-rect")
    rectangle.click()
    expect(rectangle).to_have_attribute("aria-pressed", "true")
    expect(ui.by("mask-brush")).to_have_attribute("aria-pressed", "false")
    box = (100, 50, 160, 130)
    drag(ui, box[:2], (box[0] + box[2], box[1] + box[3]))
    painted = overlay(ui, [(180, 115), (30, 200)])
    assert painted["at"][0] > 0 and painted["at"][1] == 0  # translucent, over the rectangle only
    assert painted["at"][0] < 255
    expect(ui.page.locator("#process-note")).to_have_text(
        "Edits the marked part of the selected image."
    )
    screenshot(ui.page, "desktop-mask-painted")

    ui.process()
    ui.wait_result()
    assert_local_edit(ui, box)
    local = local_of(ui, open_gateway)
    crop_x, crop_y, crop_w, crop_h = local["crop"]
    assert crop_x <= box[0] and crop_x + crop_w >= box[0] + box[2]
    assert crop_y <= box[1] and crop_y + crop_h >= box[1] + box[3]
    expect(ui.page.locator("#result-meta")).to_contain_text("local edit, crop")
    # The tool stays under the result: the note says what was marked, and no overlay hides it.
    expect(ui.page.locator("#mask-tool")).to_be_visible()
    expect(ui.by("mask-canvas")).to_be_hidden()
    screenshot(ui.page, "desktop-local-edit")

    # Choosing a tool again brings the input back to mark it on.
    ui.by("mask-brush").click()
    expect(ui.by("mask-canvas")).to_be_visible()
    assert ui.page.locator("#compare").get_attribute("data-view") == "preview"


def test_the_brush_paints_the_eraser_removes_clear_empties_and_invert_swaps(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(image_file("photo.png", photo(), "image/png"))
    ui.edit("make it black and white", "classic_edit")
    wait_preview(ui, (WIDTH, HEIGHT))
    assert overlay(ui)["painted"] == 0

    ui.by("mask-brush").click()
    expect(ui.by("mask-brush")).to_have_attribute("aria-pressed", "true")
    ui.by("mask-size").fill("80")
    expect(ui.page.locator("#mask-size-value")).to_have_text("80 px")
    drag(ui, (40, 120), (280, 120))
    stroke, left, above = (220, 120), (80, 120), (160, 20)
    seen = overlay(ui, [stroke, left, above])
    assert seen["at"][0] > 0 and seen["at"][1] > 0 and seen["at"][2] == 0, seen

    ui.by("mask-eraser").click()
    expect(ui.by("mask-eraser")).to_have_attribute("aria-pressed", "true")
    expect(ui.by("mask-brush")).to_have_attribute("aria-pressed", "false")
    drag(ui, (20, 120), (140, 120))
    seen = overlay(ui, [stroke, left, above])
    assert seen["at"][0] > 0 and seen["at"][1] == 0 and seen["at"][2] == 0, seen

    ui.by("mask-clear").click()
    assert overlay(ui)["painted"] == 0
    expect(ui.page.locator("#process-note")).to_have_text("Edits the selected image.")

    ui.by("mask-brush").click()
    drag(ui, (40, 120), (280, 120))
    ui.by("mask-invert").click()
    seen = overlay(ui, [stroke, left, above])
    assert seen["at"][0] == 0 and seen["at"][1] == 0 and seen["at"][2] > 0, seen

    # The inverted mask is what goes: gray all round, the stroke's band keeps its colours.
    ui.process()
    ui.wait_result()
    result = '[data-testid="result-image"]'
    band = [(x, y) for x in range(60, 261, 20) for y in (117, 120, 123)]
    assert pixels(ui, result, band) == pixels(ui, "#before-image", band)
    rest = [(x, y) for x in range(0, WIDTH, 16) for y in (10, 40, 200, 230)]
    assert all(r == g == b for r, g, b in pixels(ui, result, rest))


def test_the_region_fields_alone_make_a_local_edit_by_keyboard(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    page = new_page()
    ui = Playground(page, open_gateway.url).open()
    ui.pick(image_file("photo.png", photo(), "image/png"))
    ui.edit("make it black and white", "classic_edit")
    wait_preview(ui, (WIDTH, HEIGHT))

    box = (40, 30, 150, 110)
    tab_to(page, '[data-testid="region-x"]')
    for value in box[:3]:
        page.keyboard.type(str(value))
        page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "region-h"
    page.keyboard.type(str(box[3]))
    expect(ui.page.locator("#mask-note")).to_contain_text("The region is edited")
    seen = overlay(ui, [(110, 80), (300, 200)])
    assert seen["at"][0] > 0 and seen["at"][1] == 0, seen

    page.keyboard.press("Enter")  # the fields belong to the edit form: Enter processes
    ui.wait_result()
    assert_local_edit(ui, box)
    crop_x, crop_y, _, _ = local_of(ui, open_gateway)["crop"]
    assert crop_x <= box[0] and crop_y <= box[1]


def test_half_filled_region_fields_are_refused_by_the_page(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(image_file("photo.png", photo(), "image/png"))
    ui.edit("make it black and white", "classic_edit")
    wait_preview(ui, (WIDTH, HEIGHT))
    jobs_before = open_gateway.job_count()
    for testid in REGION_FIELDS[:2]:
        ui.by(testid).fill("10")
    ui.process()
    expect(ui.by("error")).to_contain_text("Fill in all four region fields")
    expect(ui.by("region-w")).to_be_focused()
    assert open_gateway.job_count() == jobs_before


def test_a_region_outside_the_image_shows_the_apis_own_message(
    new_page: NewPage, open_gateway: GatewayServer, console: ConsoleWatch
) -> None:
    console.expect(r"Failed to load resource: .*status of 422")
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(image_file("photo.png", photo(), "image/png"))
    ui.edit("make it black and white", "classic_edit")
    wait_preview(ui, (WIDTH, HEIGHT))
    for testid, value in zip(REGION_FIELDS, ("300", "200", "100", "100"), strict=True):
        ui.by(testid).fill(value)
    ui.process()
    assert ui.wait_status("completed", "failed", "cancelled") == "failed"
    expect(ui.by("error")).to_contain_text("region_outside_image")
    expect(ui.page.locator("#retry")).to_be_visible()


def test_a_mask_painted_on_an_exif_rotated_photo_has_its_upright_size(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    # Stored 320 x 240 with a red mark top-left; upright it is 240 x 320, the mark top-right.
    ui.pick(image_file("rotated.jpg", images.exif_orientation_6(WIDTH, HEIGHT)))
    ui.edit("make it black and white", "classic_edit")
    wait_preview(ui, (HEIGHT, WIDTH))
    mark = (HEIGHT - 4, 4)
    red, *_ = pixels(ui, "#before-image", [mark])
    assert red[0] > 200 and red[1] < 60 and red[2] < 60, red
    ui.by("mask-rect").click()
    drag(ui, (HEIGHT - 100, 100), (HEIGHT + 5, -5))  # over the top-right corner, past the edges
    ui.process()
    ui.wait_result()  # a mask of the stored size would be refused: mask_size_mismatch
    result = ui.by("result-image")
    assert result.evaluate("(i) => [i.naturalWidth, i.naturalHeight]") == [HEIGHT, WIDTH]
    crop_x, crop_y, crop_w, _ = local_of(ui, open_gateway)["crop"]
    assert (crop_x + crop_w, crop_y) == (HEIGHT, 0)  # the crop reaches the upright top-right
    grey, *_ = pixels(ui, '[data-testid="result-image"]', [mark])
    assert grey[0] == grey[1] == grey[2] > 30, grey  # the mark, turned gray where it was painted

    # The negative control: a mask of the stored size is refused.
    stored = httpx.post(
        f"{open_gateway.url}/process",
        files={
            "image": ("rotated.jpg", images.exif_orientation_6(WIDTH, HEIGHT), "image/jpeg"),
            "mask": ("mask.png", images.encode(Image.new("L", (WIDTH, HEIGHT), 255)), "image/png"),
        },
        data={"prompt": "make it black and white", "model": "classic_edit"},
    )
    assert (stored.status_code, stored.json()["code"]) == (422, "mask_size_mismatch")


def test_variations_of_one_image_take_its_mask(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    ui = Playground(new_page(), open_gateway.url).open()
    ui.pick(image_file("photo.png", photo(), "image/png"))
    ui.edit("add a hat", "qwen_image_edit", steps="2", seed="7")
    wait_preview(ui, (WIDTH, HEIGHT))
    ui.by("mask-rect").click()
    box = (120, 80, 100, 80)
    drag(ui, box[:2], (box[0] + box[2], box[1] + box[3]))
    ui.by("variations").fill("2")
    expect(ui.page.locator("#process-note")).to_have_text(
        "Edits the marked part of the image 2 times, each with its own seed, as one batch."
    )
    ui.process()
    assert ui.wait_batch() == "completed"
    ui.wait_batch_results(2)
    # The dev model's pixels are noise, but only inside the mask: the rest is the input's own.
    away = outside(box)
    expected = pixels(ui, "#before-image", away)
    for result in ui.by("batch-result").all():
        assert result.evaluate("(i) => [i.naturalWidth, i.naturalHeight]") == [WIDTH, HEIGHT]
        assert result.evaluate(PIXELS_AT, [list(p) for p in away]) == expected


def test_the_mask_tool_fits_a_phone_and_leaves_several_images_whole(
    new_page: NewPage, open_gateway: GatewayServer
) -> None:
    page = new_page(PHONE)
    ui = Playground(page, open_gateway.url).open()
    ui.pick(image_file("photo.png", photo(), "image/png"))
    wait_preview(ui, (WIDTH, HEIGHT))
    ui.by("mask-rect").click()
    drag(ui, (60, 40), (200, 160))
    assert overlay(ui)["painted"] > 0
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    for testid in ("mask-brush", "mask-eraser", "mask-rect", "mask-clear", "mask-invert"):
        box = ui.by(testid).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        assert box["height"] >= 24, testid  # big enough to tap
    for testid in ("region-x", "region-y", "region-w", "region-h"):
        box = ui.by(testid).bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"], testid
    screenshot(page, "phone-mask")

    # Several images go as one batch, whole: the API takes a mask with one image only.
    ui.pick(image_file("other.png", images.png_bytes(200, 150), "image/png"))
    expect(ui.page.locator("#mask-tool")).to_be_hidden()
    expect(ui.by("mask-canvas")).to_be_hidden()
