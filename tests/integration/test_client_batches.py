"""Batches end to end with the project's client and the `qie batch` command: gateway → real
tritonserver, files named after their inputs, failures reported per item, cancels."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from qie_client import cli
from qie_client.client import BatchEvent, QieClient, QieError
from tests import images
from tests.gateway_server import KEY_A, KEY_B, GatewayServer, wait_for

pytestmark = pytest.mark.integration
QWEN = "qwen_image_edit"
GRAY = "make it black and white"
# 512 x 512 makes each step of the tiny model slow: a 100-step edit is still running when the
# test acts on it.
SLOW = {"steps": 100, "width": 512, "height": 512, "true_cfg_scale": 1.0}
REPO = Path(__file__).resolve().parents[2]


def is_gray(data: bytes) -> bool:
    pixels = np.asarray(images.decode(data).convert("RGB"))
    return bool(
        (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    )


def inputs(folder: Path, *names: str) -> list[Path]:
    """Files in `folder`: .png and .jpg names hold colourful pictures, any other a text."""
    paths = []
    for name in names:
        path = folder / name
        if name.endswith(".png"):
            path.write_bytes(images.png_bytes(96, 64))
        elif name.endswith(".jpg"):
            path.write_bytes(images.jpeg_bytes(80, 48))
        else:
            path.write_text("not a picture, only some words\n")
        paths.append(path)
    return paths


def entries(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
        return {name: bundle.read(name) for name in bundle.namelist()}


def own_id(event: BatchEvent) -> int:
    """The job's own event id, read off the batch cursor after the event."""
    assert event.index is not None
    return int(event.id.split(".")[event.index])


def running(gateway: GatewayServer, model: str) -> int:
    queues = httpx.get(f"{gateway.url}/health").json()["queues"]
    return int(queues.get(model, {}).get("running", 0))


def wait_started(client: QieClient, batch_id: str) -> None:
    wait_for(lambda: any(j["progress"]["step"] >= 1 for j in client.batch(batch_id)["jobs"]))


def test_a_batch_with_a_text_file_fails_that_item_and_zips_the_others(
    gateway: GatewayServer, tmp_path: Path
) -> None:
    paths = inputs(tmp_path, "sunset.png", "notes.txt", "portrait.jpg")
    with gateway.client() as client:
        accepted = client.submit_batch(paths, GRAY, model="classic_edit")
        batch_id = accepted["batch_id"]
        assert accepted["total"] == 3 and len(accepted["job_ids"]) == 3
        assert accepted["status_url"] == f"/batches/{batch_id}"
        events = list(client.batch_events(batch_id))
        view = client.batch(batch_id)
        archive = client.batch_result(batch_id)

    assert (view["status"], view["completed"], view["failed"]) == ("partial", 2, 1)
    assert [j["name"] for j in view["jobs"]] == ["sunset.png", "notes.txt", "portrait.jpg"]
    assert [j["status"] for j in view["jobs"]] == ["completed", "failed", "completed"]
    assert view["jobs"][1]["error"]["code"] == "unsupported_media_type"
    assert view["jobs"][1]["error"]["message"]

    zipped = entries(archive)
    assert list(zipped) == ["sunset-edited.png", "portrait-edited.png"]
    assert [j["file"] for j in view["jobs"] if j["status"] == "completed"] == list(zipped)
    assert all(is_gray(data) for data in zipped.values())
    assert images.decode(zipped["sunset-edited.png"]).size == (96, 64)
    assert images.decode(zipped["portrait-edited.png"]).size == (80, 48)

    assert events[-1].event == "batch" and events[-1].final
    assert events[-1].data["status"] == "partial"
    assert not any(e.final for e in events[:-1])
    ended = {(e.index, e.event) for e in events if e.event in ("completed", "failed")}
    assert ended == {(0, "completed"), (1, "failed"), (2, "completed")}
    assert all(len(e.id.split(".")) == 3 for e in events)


def test_batch_events_resume_after_the_cursor_they_gave(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        batch_id = client.submit_batch(
            [images.png_bytes(), images.png_bytes()], "invert, then sepia", model="classic_edit"
        )["batch_id"]
        everything = list(client.batch_events(batch_id))
        job_events = [e for e in everything if e.index is not None]
        cursor = job_events[1]
        resumed = list(client.batch_events(batch_id, last_event_id=cursor.id))

    seen = [int(n) for n in cursor.id.split(".")]
    expected = {(e.index, own_id(e)) for e in job_events if own_id(e) > seen[e.index or 0]}
    assert expected  # the cursor lies in the middle of the stream
    assert {(e.index, own_id(e)) for e in resumed if e.index is not None} == expected
    assert resumed[-1].final and resumed[-1].data["status"] == "completed"


def test_cancel_batch_stops_a_long_batch_and_it_ends_cancelled(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        accepted = client.submit_batch([images.png_bytes()] * 3, "x", model=QWEN, options=SLOW)
        batch_id = accepted["batch_id"]
        wait_started(client, batch_id)
        cancelled = client.cancel_batch(batch_id)
        events = list(client.batch_events(batch_id))
        again = client.cancel_batch(batch_id)  # idempotent
        with pytest.raises(QieError) as gone:
            client.batch_result(batch_id)

    assert cancelled["status"] == "cancelled"
    assert (cancelled["cancelled"], cancelled["completed"]) == (3, 0)
    assert all(j["progress"]["step"] < SLOW["steps"] for j in cancelled["jobs"])
    assert events[-1].final and events[-1].data["status"] == "cancelled"
    assert again["status"] == "cancelled"
    assert (gone.value.status, gone.value.code) == (410, "batch_cancelled")
    wait_for(lambda: running(gateway, QWEN) == 0, timeout=30)


def test_run_batch_of_variations_uses_consecutive_seeds(
    gateway: GatewayServer, tmp_path: Path
) -> None:
    (cat,) = inputs(tmp_path, "cat.png")
    seen: list[BatchEvent] = []
    with gateway.client() as client:
        view = client.run_batch(
            [cat], "a hat", variations=3, model=QWEN, steps=2, seed=7, on_event=seen.append
        )
        zipped = entries(client.batch_result(view["batch_id"]))

    assert (view["kind"], view["status"], view["total"]) == ("variations", "completed", 3)
    assert [j["seed"] for j in view["jobs"]] == [7, 8, 9]
    assert [j["result"]["seed"] for j in view["jobs"]] == [7, 8, 9]
    assert list(zipped) == ["cat-edited-1.png", "cat-edited-2.png", "cat-edited-3.png"]
    assert len(set(zipped.values())) == 3  # another seed, another picture
    assert seen[-1].final
    assert [e.data["step"] for e in seen if e.event == "progress" and e.index == 2] == [1, 2]


def test_request_errors_raise_with_the_api_code(gateway: GatewayServer) -> None:
    with gateway.client() as client:
        with pytest.raises(QieError) as one_image:
            client.submit_batch([images.png_bytes()], GRAY, model="classic_edit")
        with pytest.raises(QieError) as unseeded:
            client.submit_batch([images.png_bytes()], GRAY, model="classic_edit", variations=2)
        with pytest.raises(QieError) as unknown:
            client.submit_batch([images.png_bytes()] * 2, GRAY, model="no_such_model")
        with pytest.raises(QieError) as bad_steps:
            client.submit_batch([images.png_bytes()] * 2, "x", model=QWEN, steps=0)
    assert (one_image.value.status, one_image.value.code) == (422, "image_count")
    assert (unseeded.value.status, unseeded.value.code) == (422, "invalid_options")
    assert (unknown.value.status, unknown.value.code) == (404, "model_not_found")
    assert (bad_steps.value.status, bad_steps.value.code) == (422, "invalid_options")


def test_an_idempotency_key_replays_the_same_batch(gateway: GatewayServer) -> None:
    pictures = [images.png_bytes(), images.jpeg_bytes()]
    with gateway.client() as client:
        first = client.submit_batch(pictures, "invert", model="classic_edit", idempotency_key="b-1")
        again = client.submit_batch(pictures, "invert", model="classic_edit", idempotency_key="b-1")
        list(client.batch_events(first["batch_id"]))
    assert again["batch_id"] == first["batch_id"]
    assert again["job_ids"] == first["job_ids"]


def test_a_batch_is_invisible_to_another_key(gateway: GatewayServer) -> None:
    with gateway.client(KEY_A) as alice, gateway.client(KEY_B) as bob:
        batch_id = alice.submit_batch([images.png_bytes()] * 2, "invert", model="classic_edit")[
            "batch_id"
        ]
        for attempt in (bob.batch, bob.cancel_batch, bob.batch_result):
            with pytest.raises(QieError) as hidden:
                attempt(batch_id)
            assert (hidden.value.status, hidden.value.code) == (404, "batch_not_found")
        with pytest.raises(QieError) as unheard:
            list(bob.batch_events(batch_id))
        assert (unheard.value.status, unheard.value.code) == (404, "batch_not_found")
        assert list(alice.batch_events(batch_id))[-1].final


def qie(gateway: GatewayServer, *args: str) -> list[str]:
    return ["--url", gateway.url, "--api-key", KEY_A, "batch", *args]


def test_qie_batch_writes_the_edits_and_reports_the_failed_item(
    gateway: GatewayServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = inputs(tmp_path, "a.png", "notes.txt", "b.jpg")
    out = tmp_path / "edited"
    argv = qie(gateway, *map(str, paths), "-p", GRAY, "--model", "classic_edit", "--out", str(out))

    assert cli.main(argv) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a-edited.png", "b-edited.png"]
    assert all(is_gray((out / name).read_bytes()) for name in written)
    err = capsys.readouterr().err
    assert "notes.txt failed" in err and "unsupported_media_type" in err
    assert "a.png failed" not in err and "b.jpg failed" not in err


def test_qie_batch_zip_saves_the_archive_in_the_asked_format(
    gateway: GatewayServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = inputs(tmp_path, "a.png", "b.png")
    target = tmp_path / "all.zip"
    argv = qie(
        gateway, *map(str, paths), "-p", GRAY, "--model", "classic_edit", "--format", "webp",
        "--zip", str(target),
    )  # fmt: skip

    assert cli.main(argv) == 0
    zipped = entries(target.read_bytes())
    assert list(zipped) == ["a-edited.webp", "b-edited.webp"]
    assert all(images.decode(data).format == "WEBP" for data in zipped.values())
    assert f"saved {target}" in capsys.readouterr().out


def test_qie_batch_exits_non_zero_when_every_item_failed(
    gateway: GatewayServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = inputs(tmp_path, "one.txt", "two.txt")
    out = tmp_path / "edited"
    argv = qie(gateway, *map(str, paths), "-p", GRAY, "--model", "classic_edit", "--out", str(out))

    assert cli.main(argv) == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert "one.txt failed" in err and "two.txt failed" in err
    assert "no image was edited" in err


def test_qie_batch_request_error_exits_1_with_the_api_message(
    gateway: GatewayServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = inputs(tmp_path, "a.png")
    argv = qie(gateway, str(paths[0]), "-p", GRAY, "--model", "classic_edit", "--out", "x")

    assert cli.main(argv) == 1
    assert "image_count, HTTP 422" in capsys.readouterr().err


def test_ctrl_c_on_qie_batch_cancels_the_batch(gateway: GatewayServer, tmp_path: Path) -> None:
    paths = inputs(tmp_path, "a.png", "b.png")
    out = tmp_path / "edited"
    options = [f"--{name.replace('_', '-')}={value}" for name, value in SLOW.items()]
    argv = qie(gateway, *map(str, paths), "-p", "x", "--model", QWEN, *options, "--out", str(out))
    process = subprocess.Popen(
        [sys.executable, "-m", "qie_client.cli", *argv],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        # As at a terminal: a suite started in the background inherits SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    assert process.stderr is not None
    first = process.stderr.readline()  # "batch <id>: 2 edits"
    rest: list[str] = []
    drain = threading.Thread(target=lambda: rest.append(process.stderr.read()))  # type: ignore[union-attr]
    drain.start()
    try:
        assert first.startswith("batch ") and first.rstrip().endswith(": 2 edits"), first
        batch_id = first.split()[1].rstrip(":")
        with gateway.client() as client:
            wait_started(client, batch_id)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 130
            view = client.batch(batch_id)
    finally:
        process.kill()
        drain.join(timeout=10)
    assert (view["status"], view["cancelled"]) == ("cancelled", 2)
    assert f"cancelled batch {batch_id}" in rest[0]
    assert not out.exists()
    wait_for(lambda: running(gateway, QWEN) == 0, timeout=30)
