"""One hostile client (QUALITY.md 39-43): cheap to send, cheap to refuse, never a 500, never a
dropped connection, and nothing it sends grows what the gateway keeps."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from dev_stack.triton import TritonServer
from gateway.http import server
from gateway.http.middleware import KNOWN_METHODS
from tests import images
from tests.gateway_server import KEY_A, GatewayServer, running_gateway

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {KEY_A}"}
# Announced, never sent: under the byte cap (413 would answer first), far over what is sent.
HUGE_BODY = 20 * 1024 * 1024


def read_answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (or 10 s pass)."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def head(path: str, *lines: str, length: int = HUGE_BODY) -> bytes:
    fields = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: multipart/form-data; boundary=x",
        f"Content-Length: {length}",
        *lines,
    ]
    return ("\r\n".join(fields) + "\r\n\r\n").encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return parsed


@pytest.fixture(scope="module")
def strict(triton_server: TritonServer) -> Iterator[GatewayServer]:
    """A gateway whose rate limits and stream cap are small enough to reach."""
    with running_gateway(
        [triton_server.grpc_url],
        "classic_edit",
        "qwen_image_edit",
        RATE_LIMIT="1000/minute",
        FAILED_AUTH_RATE="3/minute",
        MAX_STREAMS_PER_KEY="2",
    ) as gw:
        yield gw


# --- 41: the key and the rate before the body -------------------------------------------------


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100-continue"])
def test_no_key_is_401_before_a_byte_of_the_body_is_sent(
    gateway: GatewayServer, expect: bool
) -> None:
    lines = ["Expect: 100-continue"] if expect else []
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(head("/process", *lines))  # the head only: 64 MiB announced, none sent
        answer = read_answer(sock)
    assert status_of(answer) == 401, answer[:300]
    assert b"100 Continue" not in answer  # told to stop before it sent anything
    assert b"connection: close" in answer.lower()
    assert body_of(answer)["code"] == "unauthorized"


def test_over_the_rate_is_429_before_the_body(triton_server: TritonServer) -> None:
    with running_gateway([triton_server.grpc_url], "classic_edit", RATE_LIMIT="1/minute") as gw:
        assert httpx.get(f"{gw.url}/models", headers=AUTH).status_code == 200  # the one allowed
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(head("/process", f"Authorization: Bearer {KEY_A}"))
            answer = read_answer(sock)
    assert status_of(answer) == 429
    assert b"retry-after:" in answer.lower()


def test_failed_authentications_are_throttled_per_client_address(strict: GatewayServer) -> None:
    wrong = {"Authorization": "Bearer not-a-key"}
    statuses = [httpx.get(f"{strict.url}/models", headers=wrong).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    assert httpx.get(f"{strict.url}/models", headers=AUTH).status_code == 200  # a key still works


# --- 40: client strings never become labels, headers or log keys unchecked ---------------------


def test_made_up_methods_add_no_metric_series(gateway: GatewayServer) -> None:
    def series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        """The request metrics' series (jobs of other tests may end meanwhile and add theirs)."""
        return {
            (sample.name, tuple(sorted(sample.labels.items())))
            for metric in gateway.app.state.services.metrics.registry.collect()
            if metric.name.startswith(("qie_http_", "qie_rejects"))
            for sample in metric.samples
        }

    with httpx.Client() as client:
        # One of each, so that their series (a known route, no route) exist.
        client.request("BREW", f"{gateway.url}/health")
        client.request("BREW", f"{gateway.url}/no/such/path")
        before = series()
        for i in range(100):
            client.request(f"M{i:03d}X", f"{gateway.url}/health")
            client.request(f"M{i:03d}Y", f"{gateway.url}/no/such/{i}")
    assert series() == before
    methods = {dict(labels)["method"] for _, labels in before if "method" in dict(labels)}
    assert "other" in methods and methods <= {*KNOWN_METHODS, "other"}


def test_a_request_id_that_is_not_a_plain_token_is_replaced(gateway: GatewayServer) -> None:
    odd = httpx.get(f"{gateway.url}/health", headers={"X-Request-ID": "a b\tc" + "x" * 100})
    plain = httpx.get(f"{gateway.url}/health", headers={"X-Request-ID": "req-42.a_b"})
    assert plain.headers["X-Request-ID"] == "req-42.a_b"
    assert len(odd.headers["X-Request-ID"]) == 32 and " " not in odd.headers["X-Request-ID"]


# --- 43: odd but well-formed values are 4xx, never a 500 or a dropped connection ---------------


ODD_FIELDS = [
    ("callback-url-unclosed-ipv6", {"callback_url": "http://["}, "invalid_callback_url"),
    ("seed-of-5000-digits", {"options": '{"seed": ' + "9" * 5000 + "}"}, "invalid_options"),
    ("options-nested-100000-deep", {"options": "[" * 100_000 + "]" * 100_000}, "invalid_options"),
    ("image-id-with-a-space", {"image_id": "holiday photo "}, "invalid_input"),
    ("image-id-of-300-chars", {"image_id": "x" * 300}, "invalid_input"),
    ("deadline-under-a-second", {"timeout": "0.000001"}, "invalid_options"),
]


@pytest.mark.parametrize(
    ("fields", "code"), [c[1:] for c in ODD_FIELDS], ids=[c[0] for c in ODD_FIELDS]
)
def test_an_odd_field_is_a_4xx_in_the_one_shape(
    gateway: GatewayServer, fields: dict[str, str], code: str
) -> None:
    answer = httpx.post(
        f"{gateway.url}/process",
        headers={**AUTH, "Accept": "image/png"},
        files={"image": ("a.png", images.png_bytes(), "image/png")},
        data={"prompt": "invert", "model": "classic_edit", **fields},
        timeout=30,
    )
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["code"] == code
    assert set(answer.json()) == {"code", "message", "detail"}


@pytest.mark.parametrize(
    "cursor", ["9" * 5000, "²", " 7 "], ids=["5000-digits", "superscript", "spaces"]
)
def test_an_odd_last_event_id_never_breaks_the_stream(gateway: GatewayServer, cursor: str) -> None:
    with gateway.client() as client:
        job_id = client.submit(images.png_bytes(), "invert", model="classic_edit")
        assert list(client.events(job_id))[-1].event == "completed"
    request = (
        (  # by hand: HTTP clients refuse to send such a header at all
            f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {KEY_A}\r\nConnection: close\r\n"
        ).encode()
        + b"Last-Event-ID: "
        + cursor.encode()
        + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(request)
        answer = read_answer(sock)
    assert status_of(answer) == 200, answer[:300]
    assert b"event: completed" in answer


def test_a_client_chosen_charset_is_refused(gateway: GatewayServer) -> None:
    body = b'--x\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n\\ud800\r\n--x--\r\n'
    answer = httpx.post(
        f"{gateway.url}/process",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x; charset=unicode_escape"},
        content=body,
    )
    assert answer.status_code == 422
    assert answer.json()["code"] == "validation_error"
    assert "UTF-8" in answer.json()["message"]


def test_ids_of_another_shape_are_404_not_another_key(redis_gateway: GatewayServer) -> None:
    with redis_gateway.client() as client:
        job_id = client.submit(images.png_bytes(), "invert", model="classic_edit")
        assert list(client.events(job_id))[-1].event == "completed"
    for path in (f"/jobs/{job_id}:events", f"/jobs/{job_id}:request", f"/batches/{job_id}:x"):
        answer = httpx.get(f"{redis_gateway.url}{path}", headers=AUTH)
        assert answer.status_code == 404, (path, answer.text)


# --- 38, 10: streams per key and slow heads ----------------------------------------------------


def test_one_key_holds_at_most_its_streams(strict: GatewayServer) -> None:
    with strict.client() as client:
        job_id = client.submit(
            images.png_bytes(), "x", options={"steps": 40, "width": 256, "height": 256}
        )
    url = f"{strict.url}/jobs/{job_id}/events"
    with httpx.Client(timeout=30) as http, http.stream("GET", url, headers=AUTH) as first:
        assert first.status_code == 200
        with http.stream("GET", url, headers=AUTH) as second:
            assert second.status_code == 200
            third = http.get(url, headers=AUTH)
            assert third.status_code == 429
            assert third.json()["code"] == "rate_limited"
    # Both closed: the key has its streams back.
    with httpx.Client(timeout=30) as http, http.stream("GET", url, headers=AUTH) as again:
        assert again.status_code == 200
    httpx.post(f"{strict.url}/jobs/{job_id}/cancel", headers=AUTH, timeout=30)


def test_a_head_sent_a_byte_at_a_time_is_cut_off(
    gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "HEAD_TIMEOUT_S", 0.5)
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127")  # and nothing more
        assert read_answer(sock) == b""  # closed, with no answer (else recv times out)
