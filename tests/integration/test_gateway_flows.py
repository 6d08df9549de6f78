"""The HTTP API end to end: gateway → real tritonserver, with the project's Python client."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import numpy as np
import pytest

from dev_stack.triton import TritonServer
from qie_client.client import QieClient, QieError
from tests import images
from tests.gateway_server import KEY_A, KEY_B, GatewayServer, running_gateway, wait_for
from tests.model_metrics import model_counts, steps_until_cancelled

pytestmark = pytest.mark.integration
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
QWEN = "qwen_image_edit"


def loopback_hooks(port: int) -> dict[str, str]:
    """Receivers listen on ::1, the IPv6 loopback (127.0.0.1 is Triton's, which no callback may
    reach): allowed by name and port, and by the local-development opt-in."""
    return {"WEBHOOK_ALLOWED_HOSTS": f"[::1]:{port}", "WEBHOOK_ALLOW_LOOPBACK": "true"}


class LoopbackServer(HTTPServer):
    address_family = socket.AF_INET6


def running(gateway: GatewayServer, model: str) -> int:
    queues = httpx.get(f"{gateway.url}/health").json()["queues"]
    return int(queues.get(model, {}).get("running", 0))


def submit_traced(gateway: GatewayServer, request_id: str, steps: int) -> str:
    """An async qwen job whose Triton request carries `request_id`."""
    response = httpx.post(
        f"{gateway.url}/process",
        headers={**AUTH_A, "Prefer": "respond-async", "X-Request-ID": request_id},
        files={"image": ("a.png", images.png_bytes(), "image/png")},
        data={"prompt": "x", "options": json.dumps({"steps": steps})},
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def colourful_png() -> bytes:
    return images.encode(images.colourful(96, 64), "PNG")


def test_sync_classic_edit_returns_the_seed_json_with_a_grayscale_image(
    gateway: GatewayServer,
) -> None:
    response = httpx.post(
        f"{gateway.url}/process",
        headers=AUTH_A,
        files={"image": ("photo.png", colourful_png(), "image/png")},
        data={"prompt": "make it black and white", "model": "classic_edit", "image_id": "123"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["model_used"] == "classic_edit"
    assert body["image_id"] == "123"
    assert body["message"] and body["processing_time"] > 0
    pixels = np.asarray(images.decode(base64.b64decode(body["processed_image"])).convert("RGB"))
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert (body["width"], body["height"]) == (96, 64)
    assert response.headers["X-Request-ID"]


def test_sync_qwen_edit_with_accept_image_returns_raw_png_and_headers(
    gateway: GatewayServer,
) -> None:
    response = httpx.post(
        f"{gateway.url}/process",
        headers={**AUTH_A, "Accept": "image/png"},
        files={"image": ("photo.jpg", images.jpeg_bytes(160, 120), "image/jpeg")},
        data={"prompt": "make the sky purple", "options": json.dumps({"steps": 3, "seed": 11})},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    out = images.decode(response.content)
    assert (out.width, out.height) == (
        int(response.headers["X-Width"]),
        int(response.headers["X-Height"]),
    )
    assert response.headers["X-Seed"] == "11"
    assert response.headers["X-Steps"] == "3"
    assert response.headers["X-Random-Weights"] == "true"


def test_same_seed_through_the_gateway_gives_identical_bytes(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        first = client.edit(images.png_bytes(), "a cat", options={"steps": 2, "seed": 5})
        second = client.edit(images.png_bytes(), "a cat", options={"steps": 2, "seed": 5})
    assert first.image == second.image
    assert first.seed == 5 and first.random_weights is True


def test_async_job_streams_events_in_order_then_serves_the_result(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        job_id = client.submit(images.png_bytes(), "make it blue", options={"steps": 4, "seed": 1})
        events = list(client.events(job_id))
        names = [e.event for e in events]
        assert names[0] == "queued" and names[1] == "started"
        assert [e.data["step"] for e in events if e.event == "progress"] == [1, 2, 3, 4]
        assert names[-1] == "completed"
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        status = client.job(job_id)
        assert status["status"] == "completed"
        assert status["progress"] == {"step": 4, "total": 4}
        result = images.decode(client.result(job_id))
        assert (result.width, result.height) == (
            status["result"]["width"],
            status["result"]["height"],
        )


def test_async_classic_job_streams_one_progress_event_per_operation(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        job_id = client.submit(colourful_png(), "invert, then sepia", model="classic_edit")
        progress = [e.data for e in client.events(job_id) if e.event == "progress"]
    assert [(p["step"], p["total"]) for p in progress] == [(1, 2), (2, 2)]
    assert progress[0]["message"] == "invert"


def test_sse_reconnect_with_last_event_id_resumes_after_that_event(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        job_id = client.submit(images.png_bytes(), "x", options={"steps": 3})
        everything = list(client.events(job_id))
        resumed = list(client.events(job_id, last_event_id=3))
    assert [e.id for e in resumed] == [e.id for e in everything if e.id > 3]
    assert resumed[-1].event == "completed"


def test_cancel_running_job_stops_within_one_step(
    gateway: GatewayServer, triton_server: TritonServer
) -> None:
    request_id = "cancel-running-1"
    before = model_counts(triton_server, QWEN)
    with gateway.client() as client:
        job_id = submit_traced(gateway, request_id, steps=50)
        for event in client.events(job_id):
            if event.event == "progress" and event.data["step"] == 2:
                cancelled = client.cancel(job_id)
                break
        assert cancelled["status"] == "cancelled"
        final = client.job(job_id)
        assert final["status"] == "cancelled"
        # The progress recorded when the cancel landed, plus at most the step then running.
        assert final["progress"]["step"] <= 4
        assert client.cancel(job_id)["status"] == "cancelled"  # idempotent
        with pytest.raises(QieError) as gone:
            client.result(job_id)
        assert gone.value.status == 410 and gone.value.code == "job_cancelled"
    # The model itself stopped at the end of the step running when the cancel arrived (the
    # recorded progress may lag the model by one step), never near the 50 it was asked for.
    assert steps_until_cancelled(triton_server, QWEN, before) <= cancelled["progress"]["step"] + 2


def test_cancel_queued_job_never_runs(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        blocker = client.submit(images.png_bytes(), "x", options={"steps": 40})
        queued = client.submit(images.png_bytes(), "y", options={"steps": 2})
        wait_for(lambda: client.job(queued)["queue_position"] == 1)
        assert client.cancel(queued)["status"] == "cancelled"
        client.cancel(blocker)
        events = [e.event for e in client.events(queued)]
        assert "started" not in events and events[-1] == "cancelled"
        assert client.job(queued)["started_at"] is None


def test_cancel_finished_job_is_a_conflict(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        job_id = client.submit(colourful_png(), "invert", model="classic_edit")
        list(client.events(job_id))
        with pytest.raises(QieError) as conflict:
            client.cancel(job_id)
    assert conflict.value.status == 409 and conflict.value.code == "job_finished"


def test_result_of_a_running_job_is_409(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        job_id = client.submit(images.png_bytes(), "x", options={"steps": 50})
        wait_for(lambda: client.job(job_id)["status"] == "processing")
        with pytest.raises(QieError) as early:
            client.result(job_id)
        client.cancel(job_id)
    assert early.value.status == 409 and early.value.code == "job_not_ready"


def test_failed_job_result_gives_the_failure_reason(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        # classic_edit knows no instruction "x": the job is accepted, and fails in the model.
        job_id = client.submit(colourful_png(), "x", model="classic_edit")
        list(client.events(job_id))
        with pytest.raises(QieError) as failed:
            client.result(job_id)
    assert failed.value.status == 409 and failed.value.code == "job_failed"
    assert failed.value.detail["error"]["code"] == "unknown_instruction"


# 512 x 512 makes each step of the tiny model slow (~0.3 s here): the edit outlasts the client.
SLOW_50_STEPS = {"steps": 50, "width": 512, "height": 512, "true_cfg_scale": 1.0}


def test_client_disconnect_during_sync_request_cancels_the_triton_request(
    gateway: GatewayServer, triton_server: TritonServer
) -> None:
    def post() -> None:
        with contextlib.suppress(httpx.TimeoutException):  # the client hangs up mid-edit
            httpx.post(
                f"{gateway.url}/process",
                headers={**AUTH_A, "X-Request-ID": "disconnect-1"},
                files={"image": ("a.png", images.png_bytes(), "image/png")},
                data={"prompt": "disconnect me", "options": json.dumps(SLOW_50_STEPS)},
                timeout=1.5,
            )

    before = gateway.metric("qie_jobs_total", model="qwen_image_edit", status="cancelled")
    model_before = model_counts(triton_server, QWEN)
    threading.Thread(target=post).start()
    wait_for(
        lambda: (
            gateway.metric("qie_jobs_total", model="qwen_image_edit", status="cancelled") > before
        ),
        timeout=20,
    )
    assert steps_until_cancelled(triton_server, QWEN, model_before) < 50


def test_deadline_passed_is_504_and_the_triton_request_is_cancelled(
    gateway: GatewayServer, triton_server: TritonServer
) -> None:
    before = model_counts(triton_server, QWEN)
    response = httpx.post(
        f"{gateway.url}/process",
        headers={**AUTH_A, "X-Request-ID": "deadline-1"},
        files={"image": ("a.png", images.png_bytes(), "image/png")},
        data={"prompt": "slow", "options": json.dumps({"steps": 50, "timeout": 1})},
        timeout=30,
    )
    assert response.status_code == 504
    assert response.json()["code"] == "deadline_exceeded"
    assert steps_until_cancelled(triton_server, QWEN, before) < 50
    wait_for(lambda: running(gateway, QWEN) == 0, timeout=10)


def test_idempotency_key_replay_returns_the_same_job_and_a_new_body_is_422(
    gateway: GatewayServer,
) -> None:
    with gateway.client() as client:
        first = client.submit(
            colourful_png(), "invert", model="classic_edit", idempotency_key="k-1"
        )
        again = client.submit(
            colourful_png(), "invert", model="classic_edit", idempotency_key="k-1"
        )
        assert again == first
        with pytest.raises(QieError) as conflict:
            client.submit(colourful_png(), "sepia", model="classic_edit", idempotency_key="k-1")
    assert conflict.value.status == 422 and conflict.value.code == "idempotency_key_reused"


def test_a_job_is_invisible_to_another_key(gateway: GatewayServer) -> None:
    with gateway.client(KEY_A) as alice, gateway.client(KEY_B) as bob:
        job_id = alice.submit(colourful_png(), "invert", model="classic_edit")
        for attempt in (bob.job, bob.cancel, bob.result):
            with pytest.raises(QieError) as hidden:
                attempt(job_id)
            assert hidden.value.status == 404 and hidden.value.code == "job_not_found"
        with pytest.raises(QieError) as missing:
            bob.job("0" * 32)
        assert missing.value.code == "job_not_found"
        assert alice.job(job_id)["job_id"] == job_id


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {KEY_A}"},
        {"Authorization": "Bearer"},
        {"X-API-Key": "nope"},
    ],
    ids=["none", "wrong", "not-bearer", "empty-bearer", "wrong-x-api-key"],
)
def test_every_route_but_health_needs_a_valid_key(
    gateway: GatewayServer, headers: dict[str, str]
) -> None:
    routes = [
        ("POST", "/process"),
        ("GET", "/jobs/abc"),
        ("GET", "/jobs/abc/result"),
        ("POST", "/jobs/abc/cancel"),
        ("GET", "/jobs/abc/events"),
        ("GET", "/models"),
    ]
    for method, path in routes:
        response = httpx.request(
            method,
            f"{gateway.url}{path}",
            headers=headers,
            files={"image": ("a.png", images.png_bytes(), "image/png")}
            if method == "POST" and path == "/process"
            else None,
            data={"prompt": "x"} if path == "/process" else None,
        )
        assert response.status_code == 401, (path, response.text)
        assert response.json()["code"] == "unauthorized"
    assert httpx.get(f"{gateway.url}/health").status_code == 200
    assert httpx.get(f"{gateway.url}/metrics").status_code == 200


def test_x_api_key_header_is_accepted(gateway: GatewayServer) -> None:
    response = httpx.get(f"{gateway.url}/models", headers={"X-API-Key": KEY_B})
    assert response.status_code == 200


def test_models_lists_both_models_with_their_facts(gateway: GatewayServer) -> None:
    body = httpx.get(f"{gateway.url}/models", headers=AUTH_A).json()
    models = {m["name"]: m for m in body["models"]}
    assert models["qwen_image_edit"]["random_weights"] is True
    assert models["qwen_image_edit"]["variant"] == "edit"
    assert models["qwen_image_edit"]["defaults"]["steps"] == 8  # the fast preset
    assert models["classic_edit"]["vocabulary"]
    assert models["classic_edit"]["formats"] == ["image/jpeg", "image/png", "image/webp"]
    assert set(body["tensor_contract"]["inputs"]) == {
        "IMAGES",
        "PROMPT",
        "NEGATIVE_PROMPT",
        "OPTIONS",
        "DESCRIBE",
        "MASK",
    }


def test_health_is_ready_with_models(gateway: GatewayServer) -> None:
    body = httpx.get(f"{gateway.url}/health").json()
    assert body["status"] in ("READY", "BUSY")
    assert body["models"] == {"classic_edit": True, "qwen_image_edit": True}


def test_webhook_is_signed_and_retried_until_the_target_answers(
    triton_server: TritonServer,
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    attempts = {"n": 0}

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            attempts["n"] += 1
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if attempts["n"] < 2:
                self.send_response(503)  # down the first time
            else:
                received.append((dict(self.headers), body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    hook = LoopbackServer(("::1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        with (
            running_gateway(
                [triton_server.grpc_url],
                "classic_edit",
                WEBHOOK_SECRET="s3cret",
                WEBHOOK_BACKOFF_S=0.1,
                **loopback_hooks(hook.server_address[1]),
            ) as gw,
            gw.client() as client,
        ):
            url = f"http://[::1]:{hook.server_address[1]}/done"
            job_id = client.submit(
                colourful_png(), "invert", model="classic_edit", callback_url=url
            )
            wait_for(lambda: received, timeout=15)
            assert client.job(job_id)["status"] == "completed"
    finally:
        hook.shutdown()
    headers, body = received[0]
    payload = json.loads(body)
    assert payload["job_id"] == job_id and payload["status"] == "completed"
    expected = hmac.new(
        b"s3cret", headers["X-QIE-Timestamp"].encode() + b"." + body, hashlib.sha256
    )
    assert headers["X-QIE-Signature"] == "sha256=" + expected.hexdigest()
    assert attempts["n"] == 2


def test_webhook_target_that_is_down_never_fails_the_job(triton_server: TritonServer) -> None:
    with (
        running_gateway(
            [triton_server.grpc_url], "classic_edit", WEBHOOK_BACKOFF_S=0.01, **loopback_hooks(9)
        ) as gw,
        gw.client() as client,
    ):
        job_id = client.submit(
            colourful_png(), "invert", model="classic_edit", callback_url="http://[::1]:9/never"
        )
        assert list(client.events(job_id))[-1].event == "completed"


class Receiver:
    """A webhook receiver on ::1 that answers every POST with one status."""

    def __init__(self, status: int, location: str = "") -> None:
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.server = LoopbackServer(("::1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://[::1]:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_a_webhook_redirect_is_not_followed(triton_server: TritonServer) -> None:
    elsewhere = Receiver(204)
    bouncing = Receiver(307, location=elsewhere.url)
    try:
        with (
            running_gateway(
                [triton_server.grpc_url],
                "classic_edit",
                WEBHOOK_ALLOWED_HOSTS=f"[::1]:{bouncing.port}|{elsewhere.port}",
                WEBHOOK_ALLOW_LOOPBACK="true",
            ) as gw,
            gw.client() as client,
        ):
            job_id = client.submit(
                colourful_png(), "invert", model="classic_edit", callback_url=bouncing.url
            )
            assert list(client.events(job_id))[-1].event == "completed"
            wait_for(lambda: bouncing.bodies, timeout=10)
            time.sleep(0.5)  # time enough for a follow-up that must not come
    finally:
        bouncing.close()
        elsewhere.close()
    assert len(bouncing.bodies) == 1  # not retried either
    assert elsewhere.bodies == []


def test_ten_concurrent_clients_times_five_edits_all_succeed(gateway: GatewayServer) -> None:
    def worker(n: int) -> list[bool]:
        outcomes = []
        with QieClient(gateway.url, KEY_A, timeout=120) as client:
            for i in range(5):
                model = "classic_edit" if (n + i) % 2 else "qwen_image_edit"
                result = client.edit(
                    colourful_png(), "make it black and white", model=model, options={"steps": 2}
                )
                outcomes.append(bool(result.image))
                health = httpx.get(f"{gateway.url}/health", timeout=2)
                outcomes.append(health.status_code == 200)
        return outcomes

    with ThreadPoolExecutor(10) as pool:
        results = [ok for outcome in pool.map(worker, range(10)) for ok in outcome]
    assert len(results) == 100 and all(results)


def test_the_request_id_travels_to_triton_and_back(
    gateway: GatewayServer, triton_server: TritonServer
) -> None:
    request_id = "trace-me-0123456789"
    response = httpx.post(
        f"{gateway.url}/process",
        headers={**AUTH_A, "X-Request-ID": request_id},
        files={"image": ("a.png", colourful_png(), "image/png")},
        data={"prompt": "invert", "model": "classic_edit"},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    # The model logs JSON lines; one of them carries this request id as a field.
    wait_for(lambda: request_id in model_log_request_ids(triton_server), timeout=10)


def model_log_request_ids(triton_server: TritonServer) -> set[str]:
    ids = set()
    for line in triton_server.log_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                ids.add(json.loads(line).get("request_id"))
    return ids
