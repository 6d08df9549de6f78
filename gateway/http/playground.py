"""The browser playground: the page at `/` and its files under `/playground/`, with strict headers.

The page talks only to the public HTTP API, from the same origin. It is left out of the OpenAPI
schema, which documents the API alone.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from gateway.errors import ApiError, ErrorCode

STATIC_DIR = Path(__file__).parent / "static"
PAGE = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page's own scripts and styles only (no inline script or style, no eval); images it makes
# from blobs (previews and results); requests to this origin alone; and it may not be framed.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so a new gateway version is picked up at once
}
# Fixed when the module loads: a request names a file of this set, never a path.
ASSETS = {
    path.name: path
    for path in sorted(STATIC_DIR.iterdir())
    if path.suffix in MEDIA_TYPES and path.name != PAGE
}

router = APIRouter(include_in_schema=False)


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)


@router.get("/")
async def page() -> FileResponse:
    return _file(STATIC_DIR / PAGE)


@router.get("/playground/{name}")
async def asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no playground file {name[:64]!r}")
    return _file(path)
