"""POST /batches end to end: gateway → real tritonserver, over plain HTTP (the wire contract)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from httpx_sse import connect_sse

from dev_stack.triton import TritonServer
from tests import images
from tests.gateway_server import KEY_A, KEY_B, GatewayServer, running_gateway, wait_for
from tests.model_metrics import model_counts, steps_until_cancelled

pytestmark = pytest.mark.integration
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}
QWEN = "qwen_image_edit"
GRAY = "make it black and white"
SLOW = {"steps": 50, "width": 512, "height": 512, "true_cfg_scale": 1.0}
FinalStatuses = ("completed", "partial", "failed", "cancelled")


def colourful(fmt: str = "PNG") -> bytes:
    return images.encode(images.colourful(96, 64), fmt)


def parts(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (name, data, "application/octet-stream")) for name, data in named]


def submit(
    gateway: GatewayServer,
    files: list[Any],
    data: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/batches", headers=headers or AUTH_A, files=files, data=data, timeout=60
    )


def accepted(gateway: GatewayServer, files: list[Any], data: dict[str, Any]) -> dict[str, Any]:
    response = submit(gateway, files, data)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["Location"] == f"/batches/{body['batch_id']}"
    return body


def view(gateway: GatewayServer, batch_id: str, headers: dict[str, str] = AUTH_A) -> Any:
    return httpx.get(f"{gateway.url}/batches/{batch_id}", headers=headers).json()


def ended(gateway: GatewayServer, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    state: dict[str, Any] = wait_for(
        lambda: (v := view(gateway, batch_id))["status"] in FinalStatuses and v, timeout=timeout
    )
    return state


def events(
    gateway: GatewayServer, batch_id: str, last_event_id: str | None = None
) -> list[tuple[str, dict[str, Any], str]]:
    headers = {**AUTH_A, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    url = f"{gateway.url}/batches/{batch_id}/events"
    with (
        httpx.Client(timeout=120) as client,
        connect_sse(client, "GET", url, headers=headers) as source,
    ):
        return [(e.event, json.loads(e.data), e.id) for e in source.iter_sse()]


def archive(gateway: GatewayServer, batch_id: str) -> zipfile.ZipFile:
    response = httpx.get(f"{gateway.url}/batches/{batch_id}/result", headers=AUTH_A)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="batch-{batch_id}.zip"'
    return zipfile.ZipFile(io.BytesIO(response.content))


def is_gray(data: bytes) -> bool:
    pixels = np.asarray(images.decode(data).convert("RGB")).astype(int)
    return bool((pixels.max(axis=-1) == pixels.min(axis=-1)).all())


def test_a_batch_edits_each_image_and_a_bad_one_fails_only_its_own_item(
    gateway: GatewayServer,
) -> None:
    files = parts(("a.png", colourful()), ("b.jpg", colourful("JPEG")), ("notes.txt", b"hello"))
    body = accepted(gateway, files, {"prompt": GRAY, "model": "classic_edit"})
    assert body["total"] == 3 and len(body["job_ids"]) == 3
    state = ended(gateway, body["batch_id"])
    assert state["status"] == "partial"
    assert (state["completed"], state["failed"], state["cancelled"]) == (2, 1, 0)
    assert [j["status"] for j in state["jobs"]] == ["completed", "completed", "failed"]
    assert [j["job_id"] for j in state["jobs"]] == body["job_ids"]
    assert [j["name"] for j in state["jobs"]] == ["a.png", "b.jpg", "notes.txt"]
    bad = state["jobs"][2]["error"]
    assert bad["code"] == "unsupported_media_type" and "JPEG, PNG or WebP" in bad["message"]
    with archive(gateway, body["batch_id"]) as zipped:
        assert zipped.namelist() == ["a-edited.png", "b-edited.png"]
        assert all(is_gray(zipped.read(name)) for name in zipped.namelist())
    # Each item is an ordinary job of the same owner, too.
    job = httpx.get(f"{gateway.url}/jobs/{body['job_ids'][1]}", headers=AUTH_A).json()
    assert job["status"] == "completed" and job["result"]["operations"] == ["grayscale"]


def test_the_zip_names_are_made_safe_and_unique(gateway: GatewayServer) -> None:
    names = ["../../etc/passwd.png", "A.png", "a.PNG", "CON", "\u202egnp.exe.png", "...png"]
    files = parts(*((name, colourful()) for name in names))
    body = accepted(gateway, files, {"prompt": "invert", "model": "classic_edit", "seed": "3"})
    assert ended(gateway, body["batch_id"])["status"] == "completed"
    with archive(gateway, body["batch_id"]) as zipped:
        assert zipped.namelist() == [
            "passwd-edited.png",
            "A-edited.png",
            "a-edited-2.png",
            "CON-edited.png",
            "gnp.exe-edited.png",
            "png-edited.png",
        ]


def test_the_event_stream_tags_each_jobs_events_and_ends_with_a_final_summary(
    gateway: GatewayServer,
) -> None:
    files = parts(("x.png", colourful()), ("y.png", colourful()))
    body = accepted(gateway, files, {"prompt": "invert", "model": "classic_edit"})
    seen = events(gateway, body["batch_id"])
    name, last, cursor = seen[-1]
    assert name == "batch" and last["final"] is True
    assert (last["status"], last["completed"], last["total"]) == ("completed", 2, 2)
    for index, job_id in enumerate(body["job_ids"]):
        own = [e for e, data, _ in seen if data.get("job_id") == job_id]
        assert own[0] == "queued" and own[-1] == "completed"
        assert all(d["index"] == index for _, d, _ in seen if d.get("job_id") == job_id)
    # Resumed from its last id, the stream has nothing more to say but the final summary.
    assert [(e, d["final"]) for e, d, _ in events(gateway, body["batch_id"], cursor)] == [
        ("batch", True)
    ]


def test_variations_edit_one_image_with_consecutive_seeds(gateway: GatewayServer) -> None:
    files = parts(("cat.png", images.png_bytes()))
    data = {"prompt": "a cat", "model": QWEN, "variations": "3", "seed": "7", "steps": "2"}
    body = accepted(gateway, files, data)
    state = ended(gateway, body["batch_id"])
    assert state["kind"] == "variations" and state["status"] == "completed"
    assert [j["seed"] for j in state["jobs"]] == [7, 8, 9]
    assert [j["result"]["seed"] for j in state["jobs"]] == [7, 8, 9]
    with archive(gateway, body["batch_id"]) as zipped:
        names = zipped.namelist()
        assert names == ["cat-edited-1.png", "cat-edited-2.png", "cat-edited-3.png"]
        pictures = [zipped.read(name) for name in names]
    assert len(set(pictures)) == 3  # three seeds, three different images


def test_cancel_stops_every_unfinished_job_and_the_running_one_within_a_step(
    gateway: GatewayServer, triton_server: TritonServer
) -> None:
    before = model_counts(triton_server, QWEN)
    files = parts(("a.png", images.png_bytes()), ("b.png", images.png_bytes()))
    body = accepted(gateway, files, {"prompt": "x", "model": QWEN, "options": json.dumps(SLOW)})
    batch_id = body["batch_id"]
    wait_for(lambda: view(gateway, batch_id)["jobs"][0]["progress"]["step"] >= 1)
    response = httpx.post(f"{gateway.url}/batches/{batch_id}/cancel", headers=AUTH_A)
    assert response.status_code == 200, response.text
    state = ended(gateway, batch_id)
    assert state["status"] == "cancelled"
    assert [j["status"] for j in state["jobs"]] == ["cancelled", "cancelled"]
    assert state["jobs"][1]["progress"]["step"] == 0  # the queued one never ran
    assert steps_until_cancelled(triton_server, QWEN, before) < 50
    again = httpx.post(f"{gateway.url}/batches/{batch_id}/cancel", headers=AUTH_A)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"  # idempotent
    gone = httpx.get(f"{gateway.url}/batches/{batch_id}/result", headers=AUTH_A)
    assert gone.status_code == 410 and gone.json()["code"] == "batch_cancelled"
    wait_for(lambda: httpx.get(f"{gateway.url}/health").json()["queues"][QWEN]["running"] == 0)


def test_a_finished_batch_cannot_be_cancelled_and_its_result_waits_until_something_ends(
    gateway: GatewayServer,
) -> None:
    files = parts(("a.png", images.png_bytes()), ("b.png", images.png_bytes()))
    slow = accepted(gateway, files, {"prompt": "x", "model": QWEN, "options": json.dumps(SLOW)})
    early = httpx.get(f"{gateway.url}/batches/{slow['batch_id']}/result", headers=AUTH_A)
    assert early.status_code == 409 and early.json()["code"] == "batch_not_ready"
    httpx.post(f"{gateway.url}/batches/{slow['batch_id']}/cancel", headers=AUTH_A)
    quick = accepted(gateway, files, {"prompt": "invert", "model": "classic_edit"})
    ended(gateway, quick["batch_id"])
    late = httpx.post(f"{gateway.url}/batches/{quick['batch_id']}/cancel", headers=AUTH_A)
    assert late.status_code == 409 and late.json()["code"] == "batch_finished"


def test_a_batch_where_every_image_is_bad_fails_with_each_reason(gateway: GatewayServer) -> None:
    files = parts(("a.txt", b"text"), ("b.png", images.truncated_png()))
    body = accepted(gateway, files, {"prompt": "invert", "model": "classic_edit"})
    state = ended(gateway, body["batch_id"])
    assert state["status"] == "failed"
    assert [j["error"]["code"] for j in state["jobs"]] == [
        "unsupported_media_type",
        "corrupt_image",
    ]
    response = httpx.get(f"{gateway.url}/batches/{body['batch_id']}/result", headers=AUTH_A)
    assert response.status_code == 409
    assert response.json()["code"] == "batch_failed"
    assert [e["code"] for e in response.json()["detail"]["errors"]] == [
        "unsupported_media_type",
        "corrupt_image",
    ]


ONE = parts(("a.png", b""))
TWO = parts(("a.png", b""), ("b.png", b""))
SEVENTEEN = parts(*[(f"{i}.png", b"x") for i in range(17)])


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        (ONE, {"prompt": "invert"}, 422, "image_count"),
        (SEVENTEEN, {"prompt": "invert"}, 422, "image_count"),
        (TWO, {"prompt": "  "}, 422, "invalid_input"),
        (TWO, {"prompt": "x", "steps": "0"}, 422, "invalid_options"),
        (TWO, {"prompt": "x", "model": "nope"}, 404, "model_not_found"),
        (ONE, {"prompt": "x", "variations": "3"}, 422, "invalid_options"),
        (TWO, {"prompt": "x", "model": QWEN, "variations": "2"}, 422, "image_count"),
        (ONE, {"prompt": "x", "model": QWEN, "variations": "1"}, 422, "invalid_options"),
    ],
    ids=[
        "one",
        "seventeen",
        "blank-prompt",
        "bad-steps",
        "model",
        "classic-variations",
        "variations-of-two",
        "one-variation",
    ],
)
def test_a_bad_batch_request_is_refused_whole_and_creates_nothing(
    gateway: GatewayServer, files: list[Any], data: dict[str, str], status: int, code: str
) -> None:
    data = {"model": "classic_edit", **data}
    before = gateway.job_count()
    response = submit(gateway, files, data)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.json()["message"]
    assert gateway.job_count() == before


def test_another_keys_batch_is_not_found(gateway: GatewayServer) -> None:
    files = parts(("a.png", colourful()), ("b.png", colourful()))
    body = accepted(gateway, files, {"prompt": "invert", "model": "classic_edit"})
    batch_id = body["batch_id"]
    ended(gateway, batch_id)
    for method, path in [
        ("GET", ""),
        ("GET", "/result"),
        ("GET", "/events"),
        ("POST", "/cancel"),
    ]:
        for who, target in [(AUTH_B, batch_id), (AUTH_A, "0" * 32)]:
            url = f"{gateway.url}/batches/{target}{path}"
            response = httpx.request(method, url, headers=who)
            assert response.status_code == 404, (method, path)
            assert response.json()["code"] == "batch_not_found"
    assert httpx.get(f"{gateway.url}/batches/{batch_id}").status_code == 401
    # Its jobs are the owner's too.
    job = httpx.get(f"{gateway.url}/jobs/{body['job_ids'][0]}", headers=AUTH_B)
    assert job.status_code == 404


def test_an_idempotency_key_replays_the_same_batch(gateway: GatewayServer) -> None:
    files = parts(("a.png", colourful()), ("b.png", colourful()))
    headers = {**AUTH_A, "Idempotency-Key": "batch-replay-1"}
    data = {"prompt": "invert", "model": "classic_edit"}
    first = submit(gateway, files, data, headers)
    again = submit(gateway, files, data, headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["batch_id"] == first.json()["batch_id"]
    assert again.json()["job_ids"] == first.json()["job_ids"]
    other = submit(gateway, files, {**data, "prompt": GRAY}, headers)
    assert other.status_code == 422, other.text  # as /process: the request, not the state
    assert other.json()["code"] == "idempotency_key_reused"


@pytest.fixture
def limited(triton_server: TritonServer) -> Iterator[GatewayServer]:
    """Small limits: 8 requests (or edits) a minute, 1 waiting job, 60 kB batch bodies."""
    with running_gateway(
        [triton_server.grpc_url],
        "classic_edit",
        QWEN,
        RATE_LIMIT="8/minute",
        MAX_QUEUE_DEPTH="1",
        MAX_BATCH_UPLOAD_BYTES="60000",
    ) as server:
        yield server


def test_limits_count_each_job_of_a_batch(limited: GatewayServer) -> None:
    small = parts(*[(f"{i}.png", images.png_bytes()) for i in range(3)])
    # 3 edits of a qwen batch when 1 may wait and 1 may run: no room, and nothing created.
    data = {"prompt": "x", "model": QWEN, "options": json.dumps(SLOW)}
    full = submit(limited, small, data)
    assert full.status_code == 503 and full.json()["code"] == "queue_full"
    assert full.headers["Retry-After"]
    assert limited.job_count() == 0
    # A body over MAX_BATCH_UPLOAD_BYTES is refused before it is read.
    big = parts(("a.png", images.noise(200, 200).tobytes()), ("b.png", b"x"))
    too_large = submit(limited, big, {"prompt": "x"})
    assert too_large.status_code == 413 and too_large.json()["detail"] == {"max_bytes": 60000}
    # The rate: a batch of N edits costs N. The queue_full batch took 3 of the 8 a minute (the
    # 413 none: it never reached the gateway's routes), so 6 more are over it and cost 1...
    six = parts(*[(f"{i}.png", images.png_bytes()) for i in range(6)])
    over = submit(limited, six, {"prompt": "invert", "model": "classic_edit"})
    assert over.status_code == 429 and over.json()["code"] == "rate_limited"
    assert limited.job_count() == 0
    # ... and 3 fit, exactly; then nothing does.
    fits = submit(limited, small, {"prompt": "invert", "model": "classic_edit"})
    assert fits.status_code == 202, fits.text
    assert limited.job_count() == 3
    assert submit(limited, small[:2], {"prompt": "invert"}).status_code == 429


def test_with_redis_a_batch_is_followed_cancelled_and_fetched_on_another_replica(
    triton_server: TritonServer, redis_url: str
) -> None:
    urls = [triton_server.grpc_url]
    with (
        running_gateway(urls, "classic_edit", QWEN, REDIS_URL=redis_url, GATEWAY_REPLICA_ID="a")
        as a,
        running_gateway(urls, "classic_edit", QWEN, REDIS_URL=redis_url, GATEWAY_REPLICA_ID="b")
        as b,
    ):  # fmt: skip
        files = parts(("a.png", colourful()), ("b.png", colourful()), ("c.txt", b"no"))
        body = accepted(a, files, {"prompt": GRAY, "model": "classic_edit"})
        seen = events(b, body["batch_id"])
        assert seen[-1][1]["final"] is True and seen[-1][1]["status"] == "partial"
        with archive(b, body["batch_id"]) as zipped:
            assert zipped.namelist() == ["a-edited.png", "b-edited.png"]
        slow = parts(("a.png", images.png_bytes()), ("b.png", images.png_bytes()))
        running = accepted(b, slow, {"prompt": "x", "model": QWEN, "options": json.dumps(SLOW)})
        wait_for(lambda: view(a, running["batch_id"])["processing"] == 1)
        cancelled = httpx.post(f"{a.url}/batches/{running['batch_id']}/cancel", headers=AUTH_A)
        assert cancelled.status_code == 200
        assert ended(b, running["batch_id"])["status"] == "cancelled"
        assert view(a, running["batch_id"], AUTH_B)["code"] == "batch_not_found"
