"""The batch modules without Triton: the zip's names and bytes, a batch's state read off its jobs,
the stream's cursor, the form's counts and seeds, and the batch service over a real job service
(nothing runs the edits, so the tests move the jobs on through the store)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import zipfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from dev_stack.processes import free_port
from gateway.app import build
from gateway.batches.archive import ZIP_EPOCH, ArchiveEntry, build_zip, clean_name, entry_names
from gateway.batches.events import BatchEvent, BatchEvents, encode_cursor, parse_cursor
from gateway.batches.progress import BatchTally, tally
from gateway.batches.service import BatchService, BatchSubmission
from gateway.errors import ApiError, ErrorCode
from gateway.http import batch_forms
from gateway.http.batch_forms import variation_count, variation_seeds
from gateway.http.deps import Services
from gateway.jobs.following import EXPIRED
from gateway.jobs.submission import Refusal, Submission
from gateway.settings import Settings
from gateway.store import Backend, StoreOptions, open_backend
from gateway.store.batch_models import Batch, idempotent_batch_id
from gateway.store.job_models import EditInputs, Job, JobStatus, NewEvent, new_job_id
from gateway.store.job_store import JobStore
from gateway.store.memory_batches import MemoryBatchStore
from gateway.store.memory_queue import MemoryJobQueue
from gateway.store.memory_store import MemoryJobStore
from qie_engine.contract import MAX_SEED
from tests.gateway.test_job_store import IMAGE_BYTES, Clock, async_test

MODEL = "qwen_image_edit"
OWNER = "owner-a"
TTL_S = 3600
NOT_AN_IMAGE = (ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file is not a JPEG, PNG or WebP image")
NOT_AN_IMAGE_ERROR = {"code": NOT_AN_IMAGE[0].value, "message": NOT_AN_IMAGE[1]}
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{n}" for p in ("COM", "LPT") for n in "0123456789"
}


def zip_time(seconds: float) -> tuple[int, int, int, int, int, int]:
    """A timestamp as a zip entry keeps it: local time, to the even second."""
    y, mo, d, h, mi, s = time.localtime(seconds)[:6]
    return (y, mo, d, h, mi, s // 2 * 2)


# --- The zip's entry names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("cat.png", "cat.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ada\\Pictures\\cat.png", "cat.png"),
        ("photos/2024/", ""),
        ("cat\u202egnp.exe", "catgnp.exe"),  # a right-to-left override would show "exe.png"
        ("ca\u200bt\u200d\ufeff.png", "cat.png"),  # zero-width marks
        ("a\x00b\nc\x7f\td.png", "abcd.png"),  # control characters
        ("line\u2028break\u2029.png", "linebreak.png"),
        ("private\ue000\u0378.png", "private.png"),  # private use, unassigned
        ('a<b>c:d"e|f?g*h.png', "a_b_c_d_e_f_g_h.png"),
        ("  ..cat.png.. ", "cat.png"),
        (".hidden", "hidden"),
        ("...", ""),
        ("", ""),
        (None, ""),
        ("e\u0301te\u0301.png", "\u00e9t\u00e9.png"),  # one form (NFC), as typed on a Mac
        ("x" * 200 + ".jpeg", "x" * 80 + ".jpeg"),
        ("x" * 79 + ". " + "y" * 50 + ".png", "x" * 79 + ".png"),  # no dot left where it is cut
        ("x" * 200 + ".notanextension", "x" * 80),  # over 8 characters: part of the stem
        ("x" * 80 + ".png", "x" * 80 + ".png"),
    ],
)
def test_clean_name_keeps_a_safe_last_segment_of_the_file_name(
    raw: str | None, cleaned: str
) -> None:
    assert clean_name(raw) == cleaned


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("\uff0f..\uff0févasion.png", "évasion.png"),  # fullwidth solidus
        ("..\uff3c..\uff3c写真.png", "写真.png"),  # fullwidth reverse solidus
        ("C\uff1a\uff3cUsers\uff3cZoë\uff3cñandú.png", "ñandú.png"),
        ("\u2025\uff0fevil.png", "evil.png"),  # a two-dot leader is ".."
        ("Café\uff1amenu.png", "Café_menu.png"),  # fullwidth colon
        ("\uff1c猫\uff1e\uff5c犬.png", "_猫__犬.png"),  # fullwidth < > |
        ("Ελλάδα\uff02\uff1f\uff0a.jpg", "Ελλάδα___.jpg"),  # fullwidth " ? *
        ("\ufe64script\ufe65.png", "_script_.png"),  # small < and >
        ("\uff0e\uff0eStraße\uff0epng", "Straße.png"),  # fullwidth full stops
    ],
)
def test_look_alikes_are_folded_before_the_rules_and_other_letters_survive(
    raw: str, cleaned: str
) -> None:
    """NFKC turns a fullwidth or small form into the character it imitates, and the separator
    and forbidden-character rules then apply; accents, Greek and CJK come through as they are."""
    assert clean_name(raw) == cleaned


def test_a_fullwidth_path_never_becomes_a_zip_entry() -> None:
    assert entry_names([clean_name("\uff0f..\uff0fevil.png")], "png") == ["evil-edited.png"]


def test_entry_names_take_the_extension_of_the_output_format() -> None:
    names = ["cat.png", "dog.webp", "bird.jpeg"]
    assert entry_names(names, "png") == ["cat-edited.png", "dog-edited.png", "bird-edited.png"]
    assert entry_names(names, "webp") == ["cat-edited.webp", "dog-edited.webp", "bird-edited.webp"]
    assert entry_names(names, "jpeg") == ["cat-edited.jpg", "dog-edited.jpg", "bird-edited.jpg"]
    assert entry_names(["archive.tar.gz", "noext"], "png") == [
        "archive.tar-edited.png",
        "noext-edited.png",
    ]


def test_entry_names_that_clash_ignoring_case_are_numbered_from_two() -> None:
    names = ["cat.png", "CAT.jpg", "Cat.webp", "dog.png", "cat.png", "Straße.png", "STRASSE.png"]
    assert entry_names(names, "png") == [
        "cat-edited.png",
        "CAT-edited-2.png",
        "Cat-edited-3.png",
        "dog-edited.png",
        "cat-edited-4.png",
        "Straße-edited.png",
        "STRASSE-edited-2.png",
    ]


def test_an_entry_never_takes_the_name_of_its_input() -> None:
    assert entry_names(["cat-edited.png", "cat.png"], "png") == [
        "cat-edited-edited.png",
        "cat-edited.png",
    ]


def test_variations_are_numbered_from_one() -> None:
    assert entry_names(["cat.png"] * 3, "webp", variations=True) == [
        "cat-edited-1.webp",
        "cat-edited-2.webp",
        "cat-edited-3.webp",
    ]


def test_a_name_with_no_stem_left_is_image_and_its_place() -> None:
    names = [clean_name(raw) for raw in ["", "cat.png", "photos/", "\u200b", "..."]]
    assert entry_names(names, "png") == [
        "image-1-edited.png",
        "cat-edited.png",
        "image-3-edited.png",
        "image-4-edited.png",
        "image-5-edited.png",
    ]


def test_a_long_stem_is_shortened_before_the_suffix() -> None:
    assert entry_names(["x" * 100 + ".png"], "png") == ["x" * 80 + "-edited.png"]


def test_windows_device_names_never_stand_bare() -> None:
    names = ["CON", "prn.png", "AUX.jpg", "nul", "COM1.png", "lpt9.webp"]

    entries = entry_names(names, "png")

    assert entries == [
        "CON-edited.png",
        "prn-edited.png",
        "AUX-edited.png",
        "nul-edited.png",
        "COM1-edited.png",
        "lpt9-edited.png",
    ]
    assert not {entry.split(".")[0].upper() for entry in entries} & WINDOWS_DEVICES


def test_a_device_name_before_a_dot_in_the_stem_never_stands_bare() -> None:
    entries = entry_names(["nul.tar.gz", "CON.backup.png"], "png")

    assert not {entry.split(".")[0].upper() for entry in entries} & WINDOWS_DEVICES


# --- The zip's bytes --------------------------------------------------------------------------


def test_build_zip_stores_each_entry_under_its_name_byte_for_byte() -> None:
    entries = [
        ArchiveEntry("cat-edited.png", IMAGE_BYTES, 1700000000.0),
        ArchiveEntry("\u00e9t\u00e9-edited.webp", b"RIFF\x00\x00WEBP", 1700000123.0),
        ArchiveEntry("empty-edited.jpg", b"", 1700000125.0),
    ]

    data = build_zip(entries)

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        assert [info.filename for info in infos] == [e.name for e in entries]
        assert [archive.read(info) for info in infos] == [e.data for e in entries]
        assert [info.compress_type for info in infos] == [zipfile.ZIP_STORED] * 3
        assert [info.compress_size for info in infos] == [len(e.data) for e in entries]
        assert [info.date_time for info in infos] == [zip_time(e.modified) for e in entries]
        assert infos[1].flag_bits & 0x800  # the name is marked UTF-8


def test_build_zip_clamps_timestamps_before_1980() -> None:
    entries = [ArchiveEntry("old-edited.png", b"a", 0.0), ArchiveEntry("older.png", b"b", -5e9)]

    with zipfile.ZipFile(io.BytesIO(build_zip(entries))) as archive:
        assert archive.testzip() is None
        stamps = [info.date_time for info in archive.infolist()]
        assert [archive.read(name) for name in ("old-edited.png", "older.png")] == [b"a", b"b"]

    assert stamps == [zip_time(ZIP_EPOCH)] * 2
    assert stamps[0][0] == 1980


def test_build_zip_of_nothing_is_an_empty_zip() -> None:
    with zipfile.ZipFile(io.BytesIO(build_zip([]))) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == []


# --- A batch's state, read off its jobs -------------------------------------------------------

P, R, C, F, X = "pending", "processing", "completed", "failed", "cancelled"


def job_in(state: str | None, *, started: bool = True) -> Job | None:
    """A job in this state (None: expired); `started` says whether it ever ran."""
    if state is None:
        return None
    return Job(
        id=new_job_id(),
        owner=OWNER,
        model=MODEL,
        status=JobStatus(state),
        request_id="req",
        replica="replica-a",
        created_at=1700000000.0,
        started_at=1700000001.0 if started and state != P else None,
    )


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        # (state, started) per job -> status, pending, processing, completed, failed, cancelled
        ([(P, False), (P, False)], ("pending", 2, 0, 0, 0, 0)),
        ([(P, False), (F, False)], ("pending", 1, 0, 0, 1, 0)),  # refused at the door
        ([(P, False), (X, False)], ("pending", 1, 0, 0, 0, 1)),  # cancelled while waiting
        ([(P, False), (None, False)], ("pending", 1, 0, 0, 1, 0)),
        ([(R, True), (P, False)], ("processing", 1, 1, 0, 0, 0)),
        ([(C, True), (P, False)], ("processing", 1, 0, 1, 0, 0)),  # one ran and ended
        ([(F, True), (P, False)], ("processing", 1, 0, 0, 1, 0)),
        ([(None, False), (R, True)], ("processing", 0, 1, 0, 1, 0)),
        ([(C, True), (C, True), (C, True)], ("completed", 0, 0, 3, 0, 0)),
        ([(C, True), (F, True)], ("partial", 0, 0, 1, 1, 0)),
        ([(X, True), (C, True)], ("partial", 0, 0, 1, 0, 1)),
        ([(C, True), (None, False)], ("partial", 0, 0, 1, 1, 0)),
        ([(X, True), (F, False)], ("cancelled", 0, 0, 0, 1, 1)),
        ([(X, False), (X, True)], ("cancelled", 0, 0, 0, 0, 2)),
        ([(F, True), (F, False)], ("failed", 0, 0, 0, 2, 0)),
        ([(None, False), (None, False)], ("failed", 0, 0, 0, 2, 0)),  # expired: failed
        ([(None, False), (F, True)], ("failed", 0, 0, 0, 2, 0)),
    ],
)
def test_tally_reads_a_batchs_status_and_counts_off_its_jobs(
    jobs: list[tuple[str | None, bool]], expected: tuple[str, int, int, int, int, int]
) -> None:
    result = tally([job_in(state, started=started) for state, started in jobs])

    status, pending, processing, completed, failed, cancelled = expected
    assert result == BatchTally(
        status=status,  # type: ignore[arg-type]
        total=len(jobs),
        pending=pending,
        processing=processing,
        completed=completed,
        failed=failed,
        cancelled=cancelled,
    )
    assert result.unfinished == pending + processing
    assert result.final is (pending + processing == 0)


# --- The stream's cursor ----------------------------------------------------------------------


def test_a_cursor_round_trips() -> None:
    assert encode_cursor([4, 2, 0]) == "4.2.0"
    assert parse_cursor("4.2.0", 3) == [4, 2, 0]
    assert parse_cursor(encode_cursor([17]), 1) == [17]
    assert encode_cursor([]) == ""
    assert parse_cursor("", 0) == []
    assert parse_cursor(" 12.7 ", 2) == [12, 7]
    assert parse_cursor("007.0", 2) == [7, 0]
    # The largest accepted number: nine digits, kept as it is (under the clamp).
    assert parse_cursor("999999999.1", 2) == [999_999_999, 1]


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "4.2",  # too few
        "4.2.0.1",  # too many
        "4..0",
        "4.x.0",
        "-1.2.3",
        "+1.2.3",
        "1.2.3e1",
        "1.2. 3",
        "1000000000.2.3",  # ten digits
        "99999999999999999999.2.3",
        "4,2,0",
        "0x1.2.3",
        "garbage",
    ],
)
def test_any_other_cursor_starts_from_the_beginning(text: str | None) -> None:
    assert parse_cursor(text, 3) == [0, 0, 0]


def test_a_cursor_with_a_superscript_digit_starts_from_the_beginning() -> None:
    assert parse_cursor("4.\u00b2.0", 3) == [0, 0, 0]


# --- The form's image count and variations ----------------------------------------------------


@pytest.mark.parametrize("images", [2, 3, 16])
def test_several_images_need_no_variations(images: int) -> None:
    assert variation_count(None, images, 16) is None
    assert variation_count("", images, 16) is None
    assert variation_count("  ", images, 16) is None


@pytest.mark.parametrize(("images", "max_images"), [(0, 16), (1, 16), (17, 16), (5, 4)])
def test_a_batch_of_too_few_or_too_many_images_is_an_image_count_error(
    images: int, max_images: int
) -> None:
    with pytest.raises(ApiError) as error:
        variation_count(None, images, max_images)

    assert (error.value.code, error.value.status) == ("image_count", 422)
    assert error.value.detail == {"min": 2, "max": max_images}
    assert f"a batch takes 2 to {max_images} images; got {images}" in error.value.message


@pytest.mark.parametrize(("raw", "count"), [("2", 2), ("16", 16), (" 4 ", 4)])
def test_variations_of_one_image(raw: str, count: int) -> None:
    assert variation_count(raw, 1, 16) == count


@pytest.mark.parametrize(
    "raw", ["1", "0", "-3", "17", "2.5", "4.0", "two", "1e1", "0x4", "true", "nan", "inf"]
)
def test_variations_out_of_range_or_not_whole_are_invalid_options(raw: str) -> None:
    with pytest.raises(ApiError) as error:
        variation_count(raw, 1, 16)

    assert (error.value.code, error.value.status) == ("invalid_options", 422)
    assert error.value.detail == {"field": "variations"}
    assert error.value.message == f"variations must be a whole number from 2 to 16; got {raw!r}"


def test_variations_stop_at_the_batch_limit() -> None:
    assert variation_count("4", 1, 4) == 4
    with pytest.raises(ApiError) as error:
        variation_count("5", 1, 4)
    assert error.value.code == "invalid_options"


@pytest.mark.parametrize("images", [0, 2, 16])
def test_variations_with_other_than_one_image_are_an_image_count_error(images: int) -> None:
    with pytest.raises(ApiError) as error:
        variation_count("3", images, 16)

    assert (error.value.code, error.value.status) == ("image_count", 422)
    assert error.value.detail == {"max": 1}
    assert error.value.message == f"variations take exactly 1 image; got {images}"


def test_variation_seeds_count_up_from_the_seed() -> None:
    assert variation_seeds(7, 3) == [7, 8, 9]
    assert variation_seeds(0, 2) == [0, 1]  # seed 0 is a seed, not "none given"
    assert variation_seeds(2**32 - 2, 4) == [2**32 - 2, 2**32 - 1, 0, 1]
    assert MAX_SEED == 2**32 - 1


def test_variation_seeds_start_at_random_within_the_seed_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []

    def top_seed(bound: int) -> int:
        asked.append(bound)
        return bound - 1

    monkeypatch.setattr(batch_forms.secrets, "randbelow", top_seed)

    assert variation_seeds(None, 3) == [MAX_SEED, 0, 1]
    assert asked == [2**32]


def test_random_variation_seeds_are_consecutive_and_differ_between_batches() -> None:
    runs = [variation_seeds(None, 4) for _ in range(20)]

    for seeds in runs:
        assert seeds == [(seeds[0] + i) % 2**32 for i in range(4)]
        assert all(0 <= seed <= MAX_SEED for seed in seeds)
    assert len({seeds[0] for seeds in runs}) > 1


# --- The batch service over a real job service (in memory) ------------------------------------


@dataclass
class Parts:
    services: Services
    backend: Backend

    @property
    def batches(self) -> BatchService:
        return self.services.batches

    @property
    def events(self) -> BatchEvents:
        return self.services.batch_events

    @property
    def store(self) -> JobStore:
        return self.backend.store

    async def waiting(self) -> int:
        return (await self.backend.queue.stats(MODEL)).waiting


@contextlib.asynccontextmanager
async def services(
    backend: Backend | None = None, *, max_queue_depth: int = 32
) -> AsyncIterator[Parts]:
    """A batch service whose jobs queue for a Triton that is not there: nothing runs them."""
    backend = backend or open_backend(
        None, StoreOptions(ttl_s=TTL_S, replica="replica-a", lease_s=5)
    )
    triton = f"127.0.0.1:{free_port()}"
    settings = Settings(
        auth_disabled=True,
        triton_urls=[triton],
        replica_id="replica-a",
        max_queue_depth=max_queue_depth,
    )
    built, background = build(settings, backend)
    try:
        yield Parts(built, backend)
    finally:
        await background.webhooks.close()
        await background.pool.close()
        await backend.store.close()


def edit(owner: str = OWNER, prompt: str = "make it blue") -> Submission:
    request = EditInputs(MODEL, [IMAGE_BYTES], prompt, None, '{"steps":4}', "req-1")
    return Submission(owner, request, deadline_s=300, request_hash=f"hash:{prompt}")


def refused(owner: str = OWNER) -> Refusal:
    return Refusal(owner, MODEL, "req-1", *NOT_AN_IMAGE)


def batch_of(
    entries: Sequence[Submission | Refusal],
    names: Sequence[str],
    *,
    owner: str = OWNER,
    key: str | None = None,
    request_hash: str | None = None,
) -> BatchSubmission:
    return BatchSubmission(
        owner=owner,
        model=MODEL,
        kind="images",
        entries=list(entries),
        names=list(names),
        files=entry_names(names, "png"),
        seeds=[None] * len(entries),
        deadline_s=300,
        idempotency_key=key,
        request_hash=request_hash,
    )


def three_items(**fields: Any) -> BatchSubmission:
    """cat and dog to edit, and a text file between them."""
    return batch_of([edit(), refused(), edit()], ["cat.png", "notes.txt", "dog.png"], **fields)


async def start(store: JobStore, job_id: str, at: float = 1700000000.0) -> None:
    fields = {"status": "processing", "started_at": at, "attempts": 1}
    await store.apply(job_id, fields, NewEvent("started", {"attempt": 1}))


async def complete(store: JobStore, job_id: str, image: bytes, at: float = 1700000010.0) -> None:
    fields = {"status": "completed", "finished_at": at, "result_meta": {"seed": 1}}
    await store.apply(job_id, fields, NewEvent("completed", {"status": "completed"}), result=image)


async def api_error(call: Any) -> ApiError:
    with pytest.raises(ApiError) as error:
        await call
    return error.value


def summary(batch_id: str, status: str, counts: tuple[int, ...], *, final: bool) -> dict[str, Any]:
    pending, processing, completed, failed, cancelled = counts
    return {
        "batch_id": batch_id,
        "status": status,
        "total": sum(counts),
        "pending": pending,
        "processing": processing,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "final": final,
    }


async def collect(stream: AsyncIterator[BatchEvent]) -> list[tuple[str, dict[str, Any], str]]:
    return [(e.event, e.data, e.id) async for e in stream]


@async_test
async def test_a_batch_is_one_job_per_item_and_a_refused_item_fails_alone() -> None:
    async with services() as s:
        state = await s.batches.submit(three_items())

        batch, jobs = state.batch, state.jobs
        assert state.tally == BatchTally("pending", 3, 2, 0, 0, 1, 0)
        assert [job.status if job else None for job in jobs] == [
            JobStatus.PENDING,
            JobStatus.FAILED,
            JobStatus.PENDING,
        ]
        assert [(job.owner, job.model) for job in jobs if job] == [(OWNER, MODEL)] * 3
        assert jobs[1] is not None
        assert (jobs[1].error_code, jobs[1].error_message) == NOT_AN_IMAGE
        assert (batch.owner, batch.model, batch.kind) == (OWNER, MODEL, "images")
        ids = [job.id for job in jobs if job]
        assert [(i.job_id, i.name, i.file, i.seed) for i in batch.items] == [
            (ids[0], "cat.png", "cat-edited.png", None),
            (ids[1], "notes.txt", "notes-edited.png", None),
            (ids[2], "dog.png", "dog-edited.png", None),
        ]
        assert await s.waiting() == 2  # the refused item is never queued
        first = [(await s.store.events_after(j, 0))[0] for j in batch.job_ids]
        assert [(e.event, e.data) for e in first] == [
            ("queued", {"position": 0, "eta_s": 10.0}),
            ("failed", {"status": "failed", "error": NOT_AN_IMAGE_ERROR}),
            ("queued", {"position": 1, "eta_s": 20.0}),
        ]

        again = await s.batches.get(batch.id, OWNER)
        assert (again.batch, again.jobs, again.tally) == (batch, jobs, state.tally)


@async_test
async def test_another_owners_batch_is_reported_like_a_missing_one() -> None:
    async with services() as s:
        batch = (await s.batches.submit(three_items())).batch

        for owner, batch_id in [("owner-b", batch.id), (OWNER, new_job_id()), (OWNER, "x" * 65)]:
            calls = [
                s.batches.get(batch_id, owner),
                s.batches.cancel(batch_id, owner),
                s.batches.archive(batch_id, owner),
                s.events.events(batch_id, owner, None),
            ]
            for call in calls:
                error = await api_error(call)
                assert (error.code, error.status) == ("batch_not_found", 404)
                assert error.message == f"no batch {batch_id[:64]}"

        assert (await s.batches.get(batch.id, OWNER)).tally.pending == 2  # untouched


@async_test
async def test_a_batch_the_queue_has_no_room_for_creates_nothing() -> None:
    # One slot free and one place in the line: room for two jobs.
    async with services(max_queue_depth=1) as s:
        sub = batch_of([edit(), edit(), edit()], ["a.png", "b.png", "c.png"])

        error = await api_error(s.batches.submit(sub))

        assert (error.code, error.status) == ("queue_full", 503)
        assert await s.waiting() == 0
        assert isinstance(s.store, MemoryJobStore) and len(s.store) == 0
        assert isinstance(s.backend.batches, MemoryBatchStore) and len(s.backend.batches) == 0

        # A refused item takes no place in the line.
        state = await s.batches.submit(three_items())
        assert state.tally == BatchTally("pending", 3, 2, 0, 0, 1, 0)


@async_test
async def test_cancel_stops_every_unfinished_job_and_answers_the_same_again() -> None:
    async with services() as s:
        batch = (await s.batches.submit(three_items())).batch

        cancelled = await s.batches.cancel(batch.id, OWNER)

        assert cancelled.tally == BatchTally("cancelled", 3, 0, 0, 0, 1, 2)
        assert [job.status if job else None for job in cancelled.jobs] == [
            JobStatus.CANCELLED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        ]
        assert await s.waiting() == 0
        events = [[e.event for e in await s.store.events_after(j, 0)] for j in batch.job_ids]
        assert events == [["queued", "cancelled"], ["failed"], ["queued", "cancelled"]]

        again = await s.batches.cancel(batch.id, OWNER)

        assert again.tally == cancelled.tally
        assert [[e.event for e in await s.store.events_after(j, 0)] for j in batch.job_ids] == (
            events
        )


@async_test
async def test_cancel_keeps_what_completed_before_it() -> None:
    async with services() as s:
        batch = (await s.batches.submit(three_items())).batch
        await start(s.store, batch.job_ids[0])
        await complete(s.store, batch.job_ids[0], IMAGE_BYTES)

        state = await s.batches.cancel(batch.id, OWNER)

        assert state.tally == BatchTally("partial", 3, 0, 0, 1, 1, 1)
        archive = await s.batches.archive(batch.id, OWNER)
        with zipfile.ZipFile(io.BytesIO(archive.data)) as zipped:
            assert zipped.namelist() == ["cat-edited.png"]


@async_test
async def test_cancelling_a_batch_that_ended_by_itself_is_a_conflict() -> None:
    async with services() as s:
        refusals = batch_of([refused(), refused()], ["a.txt", "b.txt"])
        failed = (await s.batches.submit(refusals)).batch
        done = (await s.batches.submit(batch_of([edit(), edit()], ["a.png", "b.png"]))).batch
        for job_id in done.job_ids:
            await start(s.store, job_id)
            await complete(s.store, job_id, IMAGE_BYTES)

        for batch, status in [(failed, "failed"), (done, "completed")]:
            error = await api_error(s.batches.cancel(batch.id, OWNER))
            assert (error.code, error.status) == ("batch_finished", 409)
            assert error.message == f"batch {batch.id} already ended ({status}); nothing to cancel"
        assert (await s.batches.get(done.id, OWNER)).tally.completed == 2


@async_test
async def test_the_zip_holds_the_images_completed_so_far_named_after_their_inputs() -> None:
    async with services() as s:
        batch = (await s.batches.submit(three_items())).batch
        cat, _, dog = batch.job_ids
        dog_image = b"\x89PNG\r\n\x1a\ndog" + bytes(range(256))

        error = await api_error(s.batches.archive(batch.id, OWNER))
        assert (error.code, error.status) == ("batch_not_ready", 409)
        assert error.message == (
            f"batch {batch.id} is pending: none of its 3 edits has finished yet"
        )

        await start(s.store, dog)
        await complete(s.store, dog, dog_image, at=1700000020.0)
        some = await s.batches.archive(batch.id, OWNER)

        assert (some.entries, some.state.tally.status) == (1, "processing")
        with zipfile.ZipFile(io.BytesIO(some.data)) as zipped:
            assert zipped.testzip() is None
            assert zipped.namelist() == ["dog-edited.png"]
            assert zipped.read("dog-edited.png") == dog_image
            assert zipped.getinfo("dog-edited.png").date_time == zip_time(1700000020.0)

        await start(s.store, cat)
        await complete(s.store, cat, IMAGE_BYTES)
        every = await s.batches.archive(batch.id, OWNER)

        assert (every.entries, every.state.tally.status) == (2, "partial")
        with zipfile.ZipFile(io.BytesIO(every.data)) as zipped:
            assert zipped.testzip() is None
            assert zipped.namelist() == ["cat-edited.png", "dog-edited.png"]  # in item order
            assert [zipped.read(n) for n in zipped.namelist()] == [IMAGE_BYTES, dog_image]


@async_test
async def test_a_batch_with_nothing_completed_has_no_zip_and_says_why() -> None:
    async with services() as s:
        failed = (await s.batches.submit(batch_of([refused(), refused()], ["a", "b"]))).batch
        stopped = (await s.batches.submit(three_items())).batch
        await s.batches.cancel(stopped.id, OWNER)

        error = await api_error(s.batches.archive(failed.id, OWNER))
        assert (error.code, error.status) == ("batch_failed", 409)
        assert error.message == f"every edit of batch {failed.id} failed"
        code, message = NOT_AN_IMAGE
        assert error.detail == {
            "errors": [
                {"index": 0, "code": code, "message": message},
                {"index": 1, "code": code, "message": message},
            ]
        }

        error = await api_error(s.batches.archive(stopped.id, OWNER))
        assert (error.code, error.status) == ("batch_cancelled", 410)


@async_test
async def test_a_completed_batch_whose_images_are_gone_answers_result_expired() -> None:
    async with services() as s:
        batch = (await s.batches.submit(batch_of([edit(), edit()], ["a.png", "b.png"]))).batch
        for job_id in batch.job_ids:
            await start(s.store, job_id)
            fields = {"status": "completed", "finished_at": 1700000010.0}
            await s.store.apply(job_id, fields, NewEvent("completed"))  # no image stored

        error = await api_error(s.batches.archive(batch.id, OWNER))

        assert (error.code, error.status) == ("result_expired", 410)
        assert error.message == f"the results of batch {batch.id} have expired"


def expiring_backend(clock: Clock) -> Backend:
    """In memory, on a clock the test moves: jobs expire TTL_S after their last write."""
    queue = MemoryJobQueue()
    store = MemoryJobStore(queue, ttl_s=TTL_S, clock=clock)
    return Backend(store, queue, MemoryBatchStore(clock=clock))


@async_test
async def test_a_batch_outlives_its_jobs_and_counts_an_expired_one_as_failed() -> None:
    clock = Clock()
    async with services(expiring_backend(clock)) as s:
        batch = (await s.batches.submit(batch_of([edit(), edit()], ["a.png", "b.png"]))).batch
        first, second = batch.job_ids
        clock.now += TTL_S - 10
        await start(s.store, second)
        await complete(s.store, second, IMAGE_BYTES)  # its TTL starts again
        clock.now += 20  # the first job is gone; the second and the batch are kept

        state = await s.batches.get(batch.id, OWNER)
        assert state.jobs[0] is None
        assert state.tally == BatchTally("partial", 2, 0, 0, 1, 1, 0)

        archive = await s.batches.archive(batch.id, OWNER)
        with zipfile.ZipFile(io.BytesIO(archive.data)) as zipped:
            assert zipped.namelist() == ["b-edited.png"]

        events = await collect(await s.events.events(batch.id, OWNER, None))
        assert events == [
            (
                "error",
                {"job_id": first, "index": 0, "code": "job_expired", "message": EXPIRED},
                "0.0",
            ),
            ("queued", {"job_id": second, "index": 1, "position": 1, "eta_s": 20.0}, "0.1"),
            ("started", {"job_id": second, "index": 1, "attempt": 1}, "0.2"),
            ("completed", {"job_id": second, "index": 1, "status": "completed"}, "0.3"),
            ("batch", summary(batch.id, "partial", (0, 0, 1, 1, 0), final=True), "0.3"),
        ]


@async_test
async def test_a_batch_whose_completed_jobs_all_expired_answers_result_expired() -> None:
    clock = Clock()
    async with services(expiring_backend(clock)) as s:
        batch = (await s.batches.submit(batch_of([edit(), edit()], ["a.png", "b.png"]))).batch
        for job_id in batch.job_ids:
            await start(s.store, job_id)
            await complete(s.store, job_id, IMAGE_BYTES)
        clock.now += TTL_S + 1  # the jobs are gone; the batch is kept for its deadline more
        assert await s.backend.batches.get(batch.id) == batch

        error = await api_error(s.batches.archive(batch.id, OWNER))

        assert (error.code, error.status) == ("result_expired", 410)


# --- Idempotency ------------------------------------------------------------------------------


@async_test
async def test_an_idempotency_key_replay_gets_the_same_batch_and_creates_nothing_twice() -> None:
    async with services() as s:
        first = await s.batches.submit(three_items(key="k1", request_hash="h1"))

        replay = await s.batches.submit(three_items(key="k1", request_hash="h1"))

        assert first.batch.id == idempotent_batch_id(OWNER, "k1")
        assert replay.batch == first.batch
        assert replay.jobs == first.jobs
        assert await s.waiting() == 2
        assert isinstance(s.store, MemoryJobStore) and len(s.store) == 3
        items = [await s.store.get(j) for j in first.batch.job_ids]
        keys = [job.idempotency_key for job in items if job]
        assert keys == [f"{first.batch.id}/{i}" for i in range(3)]

        error = await api_error(s.batches.submit(three_items(key="k1", request_hash="other")))
        assert error.code == "idempotency_key_reused"

        theirs = await s.batches.submit(three_items(owner="owner-b", key="k1", request_hash="h1"))
        assert theirs.batch.id == idempotent_batch_id("owner-b", "k1") != first.batch.id
        assert await s.waiting() == 4


class LateRecords(MemoryBatchStore):
    """Batch records that a lookup misses, as a replay racing the first submit misses them."""

    async def get(self, batch_id: str) -> Batch | None:
        return None


@async_test
async def test_a_replay_racing_the_first_submit_reuses_its_jobs_and_its_record() -> None:
    queue = MemoryJobQueue()
    store = MemoryJobStore(queue, ttl_s=TTL_S)
    async with services(Backend(store, queue, LateRecords())) as s:
        first = await s.batches.submit(three_items(key="k1", request_hash="h1"))

        replay = await s.batches.submit(three_items(key="k1", request_hash="h1"))

        assert replay.batch == first.batch
        assert [job.id if job else None for job in replay.jobs] == first.batch.job_ids
        assert await s.waiting() == 2
        assert len(store) == 3


# --- The event stream -------------------------------------------------------------------------


@async_test
async def test_the_stream_tags_each_jobs_events_and_sums_up_as_jobs_end() -> None:
    async with services() as s:
        sub = batch_of([edit(), refused()], ["cat.png", "notes.txt"])
        batch = (await s.batches.submit(sub)).batch
        cat, notes = batch.job_ids
        cat_tag, notes_tag = {"job_id": cat, "index": 0}, {"job_id": notes, "index": 1}
        stream = await s.events.events(batch.id, OWNER, None)

        async def next_event() -> tuple[str, dict[str, Any], str]:
            event = await asyncio.wait_for(anext(stream), 4)
            return (event.event, event.data, event.id)

        assert [await next_event() for _ in range(4)] == [
            ("batch", summary(batch.id, "pending", (1, 0, 0, 1, 0), final=False), "0.0"),
            ("failed", {**notes_tag, "status": "failed", "error": NOT_AN_IMAGE_ERROR}, "0.1"),
            ("batch", summary(batch.id, "pending", (1, 0, 0, 1, 0), final=False), "0.1"),
            ("queued", {**cat_tag, "position": 0, "eta_s": 10.0}, "1.1"),
        ]

        waiting = asyncio.create_task(next_event())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # following the open job: nothing new yet
        await start(s.store, cat)
        assert await waiting == ("started", {**cat_tag, "attempt": 1}, "2.1")

        progress = NewEvent("progress", {"step": 1, "total": 4})
        await s.store.apply(cat, {"progress_step": 1, "progress_total": 4}, progress)
        assert await next_event() == ("progress", {**cat_tag, "step": 1, "total": 4}, "3.1")

        await complete(s.store, cat, IMAGE_BYTES)
        assert await collect(stream) == [
            ("completed", {**cat_tag, "status": "completed"}, "4.1"),
            ("batch", summary(batch.id, "partial", (0, 0, 1, 1, 0), final=True), "4.1"),
        ]


@async_test
async def test_an_ended_batch_replays_its_events_and_resumes_after_a_cursor() -> None:
    async with services() as s:
        sub = batch_of([edit(), refused()], ["cat.png", "notes.txt"])
        batch = (await s.batches.submit(sub)).batch
        cat, notes = batch.job_ids
        await start(s.store, cat)
        await complete(s.store, cat, IMAGE_BYTES)
        final = ("batch", summary(batch.id, "partial", (0, 0, 1, 1, 0), final=True), "3.1")

        replay = await collect(await s.events.events(batch.id, OWNER, None))

        # Each ended job's events in item order; just the last summary.
        assert [(event, data.get("job_id"), cursor) for event, data, cursor in replay] == [
            ("queued", cat, "1.0"),
            ("started", cat, "2.0"),
            ("completed", cat, "3.0"),
            ("failed", notes, "3.1"),
            ("batch", None, "3.1"),
        ]
        assert replay[-1] == final
        resumed = await collect(await s.events.events(batch.id, OWNER, "1.1"))
        assert [(event, data.get("job_id"), cursor) for event, data, cursor in resumed] == [
            ("started", cat, "2.1"),
            ("completed", cat, "3.1"),
            ("batch", None, "3.1"),
        ]
        assert [data for _, data, _ in resumed] == [data for _, data, _ in replay[1:3]] + [final[1]]
        assert await collect(await s.events.events(batch.id, OWNER, "3.1")) == [final]
        for cursor in ("9.9.9", "3", "garbage"):  # not this batch's cursor: from the beginning
            assert await collect(await s.events.events(batch.id, OWNER, cursor)) == replay


# --- Redis: two replicas ----------------------------------------------------------------------


@async_test
async def test_racing_replays_on_two_replicas_make_one_batch(redis_url: str) -> None:
    def replica(name: str) -> Backend:
        return open_backend(redis_url, StoreOptions(ttl_s=TTL_S, replica=name, lease_s=5))

    async with services(replica("replica-a")) as a, services(replica("replica-b")) as b:
        states = await asyncio.gather(
            *(
                (a, b)[i % 2].batches.submit(three_items(key="k1", request_hash="h1"))
                for i in range(6)
            )
        )

        assert {state.batch.id for state in states} == {idempotent_batch_id(OWNER, "k1")}
        assert [state.batch for state in states] == [states[0].batch] * 6
        assert {tuple(state.batch.job_ids) for state in states} == {
            tuple(job.id if job else "" for job in states[0].jobs)
        }
        assert await a.waiting() == 2
        state = await b.batches.get(states[0].batch.id, OWNER)
        assert state.tally == BatchTally("pending", 3, 2, 0, 0, 1, 0)
