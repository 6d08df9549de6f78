"""The page's own text/event-stream reader, run in Chromium: parsing rules, and resuming a drop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests import images
from tests.browser.chromium import ConsoleWatch
from tests.browser.playground_page import Playground
from tests.gateway_server import GatewayServer, wait_for

pytestmark = pytest.mark.integration

# Comments, CRLF, CR and LF line ends, several data lines, a field with no colon, an id that
# carries over, retry, and a last event cut off by the end of the stream.
STREAM = (
    ": ping - 2026-12-01\r\n"
    'id: 1\r\nevent: queued\r\ndata: {"position": 0}\r\n\r\n'
    "event: progress\rdata: line one\rdata:line two\r\r"
    "id: 7\ndata\n\n"
    "retry: 2500\n"
    'data: {"step": 3}\n\n'
    "data: unfinished"
)
EXPECTED = [
    {"id": "1", "event": "queued", "data": '{"position": 0}'},
    {"id": "1", "event": "progress", "data": "line one\nline two"},
    {"id": "7", "event": "message", "data": ""},
    {"id": "7", "event": "message", "data": '{"step": 3}'},
]
PARSE_EVERY_WAY = """async (stream) => {
  const { EventStreamParser } = await import("/playground/sse.js");
  const parse = (chunks) => {
    const parser = new EventStreamParser();
    const events = chunks.flatMap((chunk) => parser.push(chunk));
    return { events: [...events, ...parser.finish()], retry: parser.retryMs };
  };
  const whole = parse([stream]);
  const cuts = [];
  for (let cut = 0; cut <= stream.length; cut += 1) {
    cuts.push(parse([stream.slice(0, cut), stream.slice(cut)]));
  }
  return { whole, cuts, charByChar: parse([...stream]) };
}"""
# The first connection ends in the middle of the third event, as a dropped network would; the
# reader must reconnect with Last-Event-ID and get the rest from the gateway, once each.
RESUME_AFTER_DROP = """async (jobId) => {
  const { followEvents } = await import("/playground/sse.js");
  const url = `/jobs/${jobId}/events`;
  const asked = [];
  const seen = [];
  const open = async (lastEventId) => {
    asked.push(lastEventId);
    const headers = lastEventId ? { "Last-Event-ID": lastEventId } : {};
    const response = await fetch(url, { headers });
    if (asked.length > 1) return response;
    const text = await response.text();
    const ends = [...text.matchAll(/(?:\\r\\n){2}|\\n\\n|\\r\\r/g)];
    const cut = ends[1].index + ends[1][0].length;
    return new Response(text.slice(0, cut) + text.slice(cut, cut + 12));
  };
  const final = await followEvents({
    open,
    onEvent: (event) => seen.push(event),
    isFinal: (event) => ["completed", "failed", "cancelled"].includes(event.event),
  });
  return { asked, seen, final };
}"""
UNKNOWN_JOB = """async () => {
  const { Api } = await import("/playground/api.js");
  try {
    await new Api().events("no-such-job", { onEvent: () => {} });
    return null;
  } catch (error) {
    return { name: error.name, status: error.status, code: error.code };
  }
}"""


def test_the_event_stream_parser_gives_the_same_events_however_the_stream_is_cut(
    new_page: Callable[..., Page], open_gateway: GatewayServer
) -> None:
    page = new_page()
    Playground(page, open_gateway.url).open(wait_models=False)
    result: dict[str, Any] = page.evaluate(PARSE_EVERY_WAY, STREAM)
    assert result["whole"] == {"events": EXPECTED, "retry": 2500}
    assert result["charByChar"] == result["whole"]
    assert all(cut == result["whole"] for cut in result["cuts"]), [
        i for i, cut in enumerate(result["cuts"]) if cut != result["whole"]
    ]


def test_a_dropped_event_stream_resumes_with_last_event_id_and_loses_nothing(
    new_page: Callable[..., Page], open_gateway: GatewayServer
) -> None:
    accepted = httpx.post(
        f"{open_gateway.url}/process",
        headers={"Prefer": "respond-async"},
        files={"image": ("a.png", images.png_bytes(), "image/png")},
        data={"prompt": "grayscale and invert and flip and blur", "model": "classic_edit"},
    )
    job_id = accepted.json()["job_id"]
    client = open_gateway.client(None)
    wait_for(lambda: client.job(job_id)["status"] == "completed", timeout=60)
    page = new_page()
    Playground(page, open_gateway.url).open(wait_models=False)

    result: dict[str, Any] = page.evaluate(RESUME_AFTER_DROP, job_id)
    events = [(e["id"], e["event"]) for e in result["seen"]]
    assert result["asked"] == ["", "2"]
    assert events == [
        ("1", "queued"),
        ("2", "started"),
        ("3", "progress"),
        ("4", "progress"),
        ("5", "progress"),
        ("6", "progress"),
        ("7", "completed"),
    ]
    assert result["final"]["event"] == "completed"


def test_an_unknown_job_ends_the_event_stream_at_once_with_the_apis_error(
    new_page: Callable[..., Page], open_gateway: GatewayServer, console: ConsoleWatch
) -> None:
    console.expect(r"Failed to load resource: .*status of 404")
    page = new_page()
    Playground(page, open_gateway.url).open(wait_models=False)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    error = page.evaluate(UNKNOWN_JOB)
    assert error == {"name": "ApiError", "status": 404, "code": "job_not_found"}
    assert [url for url in asked if "no-such-job" in url] == [
        f"{open_gateway.url}/jobs/no-such-job/events"
    ]
