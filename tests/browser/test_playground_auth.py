"""The playground against a gateway that needs API keys: the key field, sessionStorage, headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Page, Request, expect

from dev_stack.triton import TritonServer
from tests import images
from tests.browser.chromium import ConsoleWatch, screenshot
from tests.browser.playground_page import Playground, image_file
from tests.gateway_server import KEY_A, GatewayServer, running_gateway

pytestmark = pytest.mark.integration
API_PATHS = ("/models", "/process", "/jobs/")


@pytest.fixture(scope="module")
def keyed_gateway(triton_server: TritonServer) -> Iterator[GatewayServer]:
    with running_gateway([triton_server.grpc_url], "classic_edit") as server:
        yield server


def test_with_auth_on_the_key_field_unlocks_the_page_and_the_key_stays_out_of_urls(
    new_page: Callable[..., Page], keyed_gateway: GatewayServer, console: ConsoleWatch
) -> None:
    console.expect(r"Failed to load resource: .*status of 401")
    page = new_page()
    requests: list[Request] = []

    def record(request: Request) -> None:  # a bound method can't be a Playwright handler
        requests.append(request)

    page.on("request", record)
    ui = Playground(page, keyed_gateway.url).open(wait_models=False)

    key_field = page.get_by_label("API key")
    expect(key_field).to_be_visible()
    expect(key_field).to_be_focused()
    expect(ui.by("error")).to_contain_text("a valid API key is required")
    assert page.locator("#model option").count() == 0
    screenshot(page, "desktop-auth-needed")

    key_field.fill("not-a-key")
    page.get_by_role("button", name="Use key").click()
    expect(ui.by("error")).to_contain_text("That key was refused")

    key_field.fill(KEY_A)
    requests.clear()
    page.get_by_role("button", name="Use key").click()
    page.locator("#model option:not([disabled])").first.wait_for(state="attached")
    expect(page.get_by_role("button", name="Forget key")).to_be_visible()
    ui.pick(image_file("photo.jpg", images.jpeg_bytes(96, 64)))
    ui.edit("make it black and white", "classic_edit")
    ui.process()
    ui.wait_result()
    assert ui.result_pixels()["coloured"] == 0
    assert keyed_gateway.client(KEY_A).job(ui.job_id)["status"] == "completed"

    assert page.evaluate("() => sessionStorage.getItem('qie.apiKey')") == KEY_A
    assert page.evaluate("() => localStorage.length") == 0
    api_calls = [r for r in requests if urlparse(r.url).path.startswith(API_PATHS)]
    assert {urlparse(r.url).path.split("/")[-1] for r in api_calls} >= {
        "models",
        "process",
        "events",
        "result",
    }
    assert all(r.headers.get("authorization") == f"Bearer {KEY_A}" for r in api_calls)
    assert not [r.url for r in requests if KEY_A in r.url]

    # Reloading the tab keeps the key; a new session (another context) has none.
    page.reload()
    page.locator("#model option:not([disabled])").first.wait_for(state="attached")
    fresh = new_page()
    Playground(fresh, keyed_gateway.url).open(wait_models=False)
    expect(fresh.get_by_label("API key")).to_be_focused()
    assert fresh.evaluate("() => sessionStorage.getItem('qie.apiKey')") is None

    page.get_by_role("button", name="Forget key").click()
    assert page.evaluate("() => sessionStorage.getItem('qie.apiKey')") is None
