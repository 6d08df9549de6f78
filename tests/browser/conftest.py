"""Real headless Chromium (Debian's package, driven by Playwright), a real gateway and Triton.

Every page a test opens records its console errors and uncaught exceptions; a test fails if one
shows up that the test did not announce (for example the 415 a text file is meant to get).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from dev_stack.triton import TritonServer
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS, DESKTOP, ConsoleWatch
from tests.gateway_server import GatewayServer, running_gateway


# Module-scoped: Playwright's sync API keeps an asyncio loop running in this thread while it is
# open, and the tests after these ones call asyncio.run() on it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (Debian's chromium package)")
    # launch() gives every browser a fresh, temporary user-data-dir.
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def open_gateway(triton_server: TritonServer) -> Iterator[GatewayServer]:
    """A gateway as `make run` starts it: auth off."""
    with running_gateway(
        [triton_server.grpc_url],
        "classic_edit",
        "qwen_image_edit",
        GATEWAY_API_KEYS="",
        GATEWAY_AUTH_DISABLED="true",
    ) as server:
        yield server


@pytest.fixture
def console() -> ConsoleWatch:
    return ConsoleWatch()


@pytest.fixture
def new_page(chromium: Browser, console: ConsoleWatch) -> Iterator[Callable[..., Page]]:
    """Opens pages in fresh contexts (their own storage), each watched for console errors."""
    contexts = []

    def open_page(viewport: dict[str, int] = DESKTOP) -> Page:
        context = chromium.new_context(viewport=viewport, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.on("console", console.on_console)
        page.on("pageerror", console.on_page_error)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not console.unexpected(), "the page logged errors:\n" + "\n".join(console.unexpected())
