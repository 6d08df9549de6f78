"""The multipart form of POST /batches, turned into a BatchSubmission, or refused with the reason.

What the whole batch shares (the model, the options, the prompts, the image count) is checked
as /process checks it, and a fault there refuses the batch. Each image is then checked on its
own: a bad one becomes a Refusal, so it fails its own item and not the whole batch.

Two kinds of batch: several images with one prompt, or one image and `variations` seeds (seed,
seed + 1, ...; from a random seed when none is given).
"""

from __future__ import annotations

import hashlib
import secrets

from fastapi import UploadFile
from pydantic import Field

from gateway.batches.archive import clean_name, entry_names
from gateway.batches.service import BatchSubmission
from gateway.errors import ApiError, ErrorCode
from gateway.http.error_handlers import from_engine
from gateway.http.forms import Caller, EditForm, EditParts, FormReader, as_number, read_upload
from gateway.http.security import RateLimiter
from gateway.jobs.submission import Refusal, Submission
from qie_engine.contract import MAX_SEED, EditOptions
from qie_engine.errors import InvalidInput

MIN_BATCH_IMAGES = 2


class BatchForm(EditForm):
    """The parts of POST /batches as they arrive."""

    images: list[UploadFile] = Field(
        description="2 to MAX_BATCH_IMAGES images (JPEG, PNG or WebP; the bytes decide), one edit "
        "each; or 1 image with `variations`"
    )
    variations: str | None = Field(
        None, description="One image edited this many times, with seeds seed, seed + 1, ..."
    )


def variation_count(raw: str | None, images: int, max_images: int) -> int | None:
    """How many variations the form asks for (None: a batch of several images), checked along
    with the number of images."""
    span = f"{MIN_BATCH_IMAGES} to {max_images}"
    value = as_number(raw)
    if value is None:
        if not MIN_BATCH_IMAGES <= images <= max_images:
            raise ApiError(
                ErrorCode.IMAGE_COUNT,
                f"a batch takes {span} images; got {images}. Send one image to /process, "
                "or one image with `variations` for several seeds",
                detail={"min": MIN_BATCH_IMAGES, "max": max_images},
            )
        return None
    if not isinstance(value, int) or not MIN_BATCH_IMAGES <= value <= max_images:
        raise ApiError(
            ErrorCode.INVALID_OPTIONS,
            f"variations must be a whole number from {span}; got {raw!r}",
            detail={"field": "variations"},
        )
    if images != 1:
        raise ApiError(
            ErrorCode.IMAGE_COUNT,
            f"variations take exactly 1 image; got {images}",
            detail={"max": 1},
        )
    return value


def variation_seeds(first: int | None, count: int) -> list[int]:
    start = secrets.randbelow(MAX_SEED + 1) if first is None else first
    return [(start + i) % (MAX_SEED + 1) for i in range(count)]


class BatchFormReader:
    """The /batches form, checked: what the batch shares refuses it, a bad image fails its item."""

    def __init__(self, reader: FormReader, limiter: RateLimiter) -> None:
        self.reader = reader
        self.limiter = limiter
        self.max_images = reader.settings.max_batch_images

    async def read(self, form: BatchForm, caller: Caller) -> BatchSubmission:
        parts = self.reader.parts(form)
        variations = variation_count(form.variations, len(form.images), self.max_images)
        if variations is not None and not parts.info.seeded:
            raise ApiError(
                ErrorCode.INVALID_OPTIONS,
                f"model {parts.info.name} does not sample from a seed, so its variations would "
                "all be the same; send several images instead",
                detail={"field": "variations"},
            )
        options = parts.options.edit_options()
        mask = await read_upload(form.mask)
        if variations is None and (mask is not None or options.region is not None):
            raise ApiError(
                ErrorCode.INVALID_OPTIONS,
                "a mask or region goes with one image and `variations`; send each image of its "
                "own size to /process with its own mask",
                detail={"field": "mask" if mask is not None else "region"},
            )
        # A batch of N costs N, counted before any image is read or decoded.
        await self.limiter.check_batch(caller.bucket, variations or len(form.images))
        names = [clean_name(upload.filename) for upload in form.images]
        uploads = [await upload.read() for upload in form.images]
        if variations is not None:
            seeds: list[int | None] = list(variation_seeds(options.seed, variations))
            entries = await self._variations(parts, uploads[0], mask, options, seeds, caller)
            names, uploads = names * variations, uploads * variations
        else:
            seeds = [options.seed] * len(uploads)
            entries = [
                await self._entry(parts, data, options.model_copy(update={"seed": seed}), caller)
                for data, seed in zip(uploads, seeds, strict=True)
            ]
        return BatchSubmission(
            owner=caller.owner,
            model=parts.info.name,
            kind="images" if variations is None else "variations",
            entries=entries,
            names=names,
            files=entry_names(names, options.output_format.value, variations=bool(variations)),
            seeds=seeds,
            deadline_s=parts.deadline_s or self.reader.settings.request_timeout_s,
            idempotency_key=caller.idempotency_key,
            request_hash=_batch_hash(entries, uploads) if caller.idempotency_key else None,
        )

    async def _variations(
        self,
        parts: EditParts,
        data: bytes,
        mask: bytes | None,
        options: EditOptions,
        seeds: list[int | None],
        caller: Caller,
    ) -> list[Submission | Refusal]:
        """One image (and its mask), checked once, and one entry per seed, all sharing its bytes.
        A bad image fails every item; a bad mask, which the whole batch shares, refuses it."""
        try:
            info = await self.reader.check_image(data)
        except InvalidInput as exc:
            return [self._refusal(parts, exc, caller) for _ in seeds]
        await self.reader.check_mask(mask, options, data, info)
        return [
            self.reader.submission(
                parts, [data], options.model_copy(update={"seed": seed}), caller, mask
            )
            for seed in seeds
        ]

    async def _entry(
        self, parts: EditParts, data: bytes, options: EditOptions, caller: Caller
    ) -> Submission | Refusal:
        try:
            await self.reader.check_image(data)
        except InvalidInput as exc:
            return self._refusal(parts, exc, caller)
        return self.reader.submission(parts, [data], options, caller)

    @staticmethod
    def _refusal(parts: EditParts, exc: InvalidInput, caller: Caller) -> Refusal:
        error = from_engine(exc)
        return Refusal(caller.owner, parts.info.name, caller.request_id, error.code, error.message)


def _batch_hash(entries: list[Submission | Refusal], uploads: list[bytes]) -> str:
    """What makes two batches the same request: each item's request (its edit, or for a refused
    item its bytes), in order."""
    digest = hashlib.sha256()
    for entry, data in zip(entries, uploads, strict=True):
        same = entry.request_hash if isinstance(entry, Submission) else None
        digest.update(f"{same or hashlib.sha256(data).hexdigest()}\0".encode())
    return digest.hexdigest()
