"""The page's files as the gateway serves them: strict headers, no inline code, none missing."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.http.playground import ASSETS, STATIC_DIR
from gateway.settings import Settings

IMPORT = re.compile(r"""^import .* from "\./([\w-]+\.js)";$""", re.MULTILINE)


@pytest.fixture(scope="module")
def client() -> TestClient:
    # No lifespan: the page's routes need no Triton.
    settings = Settings.model_validate({"GATEWAY_API_KEYS": "k", "TRITON_URLS": "127.0.0.1:9"})
    return TestClient(create_app(settings))


class PageScan(HTMLParser):
    """What the page loads, and any inline code or style it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self.testids: set[str] = set()
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in values:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}>")
        if tag == "script":
            self.in_script = True
            if not values.get("src"):
                self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        for name in ("src", "href"):
            value = values.get(name) or ""
            if value.startswith("/playground/"):
                self.loads.append(value.removeprefix("/playground/"))
            elif value.startswith(("http:", "https:", "//")):
                self.inline.append(f"external {value}")
        if values.get("data-testid"):
            self.testids.add(values["data-testid"] or "")

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.inline.append("script text")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = False


def scan() -> PageScan:
    parser = PageScan()
    parser.feed((STATIC_DIR / "index.html").read_text())
    return parser


@pytest.mark.parametrize("path", ["/", *(f"/playground/{name}" for name in ASSETS)])
def test_the_page_and_every_file_carry_the_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'none'"
    assert "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-type"].split(";")[0] in {
        "text/html",
        "text/javascript",
        "text/css",
        "image/svg+xml",
    }


def test_the_page_has_no_inline_code_or_style_and_nothing_from_elsewhere() -> None:
    page = scan()
    assert page.inline == []
    assert "app.js" in page.loads and "style.css" in page.loads


def test_every_file_the_page_loads_or_imports_is_served() -> None:
    wanted = set(scan().loads)
    for path in STATIC_DIR.glob("*.js"):
        wanted |= set(IMPORT.findall(path.read_text()))
    assert wanted <= set(ASSETS), wanted - set(ASSETS)
    # And nothing is served that nothing uses.
    assert set(ASSETS) <= wanted, set(ASSETS) - wanted


def test_the_page_carries_the_testids_other_tools_use() -> None:
    assert scan().testids >= {
        "file-input",
        "prompt",
        "model",
        "preset",
        "process",
        "progress",
        "cancel",
        "result-image",
        "error",
        "batch-zip",
        "variations",
    }


@pytest.mark.parametrize(
    "path",
    ["/playground/nope.js", "/playground/index.html", "/playground/..%2Fplayground.py"],
)
def test_an_unknown_file_is_a_json_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert set(response.json()) == {"code", "message", "detail"}


def test_the_api_keeps_its_json_errors_and_the_page_stays_out_of_the_openapi_schema(
    client: TestClient,
) -> None:
    response = client.get("/models")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert "content-security-policy" not in response.headers
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not [p for p in paths if p.startswith("/playground")]
