"""The multipart form of POST /process, turned into one Submission, or refused with the reason.

Everything is checked here before a job exists: the model, the options (as JSON or as plain
form fields), the callback URL, the prompts, the image count, and each image's type, pixel count
and integrity (from its bytes, never its name). docs/openapi.json states the same rules
(openapi.py derives them from the same models and settings).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import UploadFile
from pydantic import BaseModel, Field, ValidationError

from gateway.errors import ApiError, ErrorCode
from gateway.http.decode_budget import DecodeBudget
from gateway.http.schemas import RequestOptions
from gateway.jobs.submission import Submission
from gateway.settings import Settings
from gateway.store.job_models import EditInputs
from gateway.triton.registry import ModelInfo
from gateway.webhooks.targets import CallbackPolicy
from qie_engine.contract import EditOptions, describe_validation_error
from qie_engine.edit_mask import check_mask_options, check_region, inspect_mask, read_mask
from qie_engine.edit_request import check_image_count, check_prompt
from qie_engine.image_codec import (
    ImageInfo,
    check_cost_bytes,
    decode_cost_bytes,
    inspect_image,
    upright_size,
    verify_image,
)

# A client's id for its image, echoed in the answer, the webhook and the X-Image-Id header.
IMAGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
IMAGE_ID_RULE = "1 to 128 letters, digits, '.', '_', ':' or '-'"
MAX_CALLBACK_URL_CHARS = 2048

# Options that may also come as plain form fields (text, parsed as numbers where they are).
PLAIN_OPTIONS = (
    "preset",
    "steps",
    "true_cfg_scale",
    "seed",
    "output_format",
    "width",
    "height",
    "region",
    "mask_padding",
    "mask_feather",
    "output_size",
)
PLAIN_FIELDS = (*PLAIN_OPTIONS, "timeout")
REGION_PATTERN = r"^\s*\d+\s*,\s*\d+\s*,\s*\d+\s*,\s*\d+\s*$"


class EditForm(BaseModel):
    """The parts every edit request shares (/process and /batches); an empty text field counts
    as absent."""

    prompt: str = Field(description="The edit instruction")
    negative_prompt: str | None = Field(None, description="What to steer away from")
    model: str | None = Field(None, description="Model name or alias; default DEFAULT_MODEL")
    options: str | None = Field(None, description="JSON object of options (the fields below)")
    preset: str | None = Field(None, description="fast or quality")
    steps: str | None = Field(None, description="Denoising steps")
    true_cfg_scale: str | None = Field(None, description="True CFG scale; 1 disables it")
    seed: str | None = Field(None, description="Random seed")
    output_format: str | None = Field(None, description="png, webp or jpeg")
    width: str | None = Field(None, description="Output width")
    height: str | None = Field(None, description="Output height")
    timeout: str | None = Field(None, description="Deadline in seconds (504 when passed)")
    mask: UploadFile | None = Field(
        None,
        description="A local edit: an image of the (first) image's size after EXIF orientation; "
        "white or opaque is edited, black or transparent kept, grey blends",
    )
    region: str | None = Field(
        None, description="A local edit of a rectangle: x,y,width,height in the image's pixels"
    )
    mask_padding: str | None = Field(None, description="Context kept around the mask's box")
    mask_feather: str | None = Field(None, description="Width of the blend at the mask's edge")
    output_size: str | None = Field(None, description="model (the default) or input")


class ProcessForm(EditForm):
    """The parts of POST /process as they arrive."""

    image: list[UploadFile] = Field(
        description="1 image (1-3 for Plus models): JPEG, PNG or WebP; the bytes decide"
    )
    run_async: bool = Field(False, alias="async", description="Same as Prefer: respond-async")
    callback_url: str | None = Field(None, description="Webhook called when the job ends")
    image_id: str | None = Field(None, description="Your id for the image; echoed back")


@dataclass(frozen=True)
class EditParts:
    """What an edit form says, checked: everything but its images."""

    info: ModelInfo
    options: RequestOptions
    prompt: str
    negative_prompt: str | None

    @property
    def deadline_s(self) -> float | None:
        return self.options.timeout


@dataclass(frozen=True)
class Caller:
    """What the request says about its sender, beside the form."""

    owner: str
    request_id: str
    prefer: str | None = None
    idempotency_key: str | None = None
    bucket: str = ""  # where its rate is counted (the key's; with auth off, its address)

    @property
    def respond_async(self) -> bool:
        return bool(self.prefer and "respond-async" in self.prefer.lower())


def as_number(value: str | None) -> Any:
    """Form fields arrive as text; numbers are parsed so that "8" is 8 and "8.5" stays invalid."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def as_region(value: str | None) -> Any:
    """A region field, "x,y,width,height", as its four numbers (the options then check them)."""
    if value is None or not value.strip():
        return None
    return [as_number(part) for part in value.split(",")]


def _checked(data: dict[str, Any]) -> RequestOptions:
    try:
        return RequestOptions.model_validate(data)
    except ValidationError as exc:
        raise ApiError(
            ErrorCode.INVALID_OPTIONS,
            describe_validation_error(exc),
            detail=[
                {"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()
            ],
        ) from None


def _parse_json_options(options: str) -> Any:
    """The options JSON; 422 for what json cannot or must not read (a number of thousands of
    digits, nesting that would exhaust the stack), never a 500."""
    try:
        return json.loads(options)
    except json.JSONDecodeError as exc:
        why = exc.msg
    except ValueError:
        why = "a number with too many digits"
    except RecursionError:
        why = "nested too deep"
    raise ApiError(
        ErrorCode.INVALID_OPTIONS,
        f"options is not valid JSON: {why}",
        detail={"field": "options"},
    )


def read_options(options: str | None, plain: Mapping[str, Any]) -> RequestOptions:
    """The options JSON (strict: "8" is not 8 there), then plain form fields on top of it.

    Each must be valid on its own, as the OpenAPI document says: a plain field never hides a bad
    value in the JSON.
    """
    data: dict[str, Any] = {}
    if options:
        data = _parse_json_options(options)
        if not isinstance(data, dict):
            raise ApiError(ErrorCode.INVALID_OPTIONS, "options must be a JSON object")
        _checked(data)
    fields = {k: (as_region if k == "region" else as_number)(v) for k, v in plain.items()}
    return _checked({**data, **{k: v for k, v in fields.items() if v is not None}})


def request_hash(sub: Submission) -> str:
    """What makes two submissions the same request, for Idempotency-Key replays: every field
    that changes the answer (the edit, its images, its deadline, how and where it answers)."""
    request = sub.request
    digest = hashlib.sha256()
    parts = (
        request.model,
        request.prompt,
        request.negative_prompt or "",
        request.options_json,
        repr(sub.deadline_s),
        "async" if sub.respond_async else "sync",
        sub.callback_url or "",
        sub.image_id or "",
    )
    files = [*request.images, *([request.mask] if request.mask is not None else [])]
    for part in (*parts, *(hashlib.sha256(data).hexdigest() for data in files)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def check_image_id(image_id: str | None) -> None:
    if image_id is not None and not IMAGE_ID.fullmatch(image_id):
        raise ApiError(
            ErrorCode.INVALID_INPUT,
            f"image_id must be {IMAGE_ID_RULE} (it travels in the X-Image-Id header)",
            detail={"field": "image_id"},
        )


async def read_upload(part: UploadFile | None) -> bytes | None:
    """An optional file part's bytes; a part with no name and no bytes, as a browser sends a
    file field left empty, is absent."""
    if part is None:
        return None
    data = await part.read()
    return None if not data and not part.filename else data


class FormReader:
    """The /process form (and the parts every edit form shares), checked."""

    def __init__(
        self, settings: Settings, policy: CallbackPolicy, models: Mapping[str, ModelInfo]
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.models = models  # the registry's, kept up to date as Triton's models change
        self.limits = settings.image_limits()
        self.budget = DecodeBudget(settings.max_decode_mb * 1024 * 1024)

    def model(self, name: str | None) -> ModelInfo:
        resolved = self.settings.resolve_model(name)
        info = self.models.get(resolved)
        if info is None:
            known = {"models": sorted(self.models)}
            raise ApiError(ErrorCode.MODEL_NOT_FOUND, f"unknown model {resolved!r}", detail=known)
        if not info.ready:
            message = f"model {resolved} is not ready (loading or failed); retry shortly"
            raise ApiError(ErrorCode.MODEL_UNAVAILABLE, message)
        return info

    def parts(self, form: EditForm) -> EditParts:
        """The model, the options and the prompts, checked (an image is checked on its own)."""
        info = self.model(form.model)
        options = read_options(form.options, {k: getattr(form, k) for k in PLAIN_FIELDS})
        max_chars = self.settings.max_prompt_chars
        prompt = check_prompt(form.prompt, max_chars)
        negative = None
        if form.negative_prompt and form.negative_prompt.strip():
            negative = check_prompt(form.negative_prompt, max_chars, name="negative_prompt")
        return EditParts(info, options, prompt, negative)

    async def check_image(self, data: bytes) -> ImageInfo:
        """Type, pixels and structure from the header, then an integrity check within the memory
        budget, both off the event loop. Raises the engine's InvalidInput, which the one error
        handler answers."""
        info = await asyncio.to_thread(inspect_image, data, self.limits)
        async with self.budget.reserve(check_cost_bytes(info)):
            await asyncio.to_thread(verify_image, data, info)
        return info

    async def check_mask(
        self, mask: bytes | None, options: EditOptions, image: bytes, info: ImageInfo
    ) -> None:
        """A local edit's mask (decoded within the memory budget) or region, against the first
        image's upright size, so that a bad one is refused before a job exists. The model reads
        the mask again with the same functions."""
        check_mask_options(mask is not None, options)
        if mask is None and options.region is None:
            return
        size = await asyncio.to_thread(upright_size, image, info)
        if mask is None:
            assert options.region is not None
            check_region(options.region, size)
            return
        mask_info = await asyncio.to_thread(inspect_mask, mask, self.limits)
        async with self.budget.reserve(decode_cost_bytes(mask_info)):
            await asyncio.to_thread(read_mask, mask, size, self.limits)

    def submission(
        self,
        parts: EditParts,
        images: list[bytes],
        options: EditOptions,
        caller: Caller,
        mask: bytes | None = None,
    ) -> Submission:
        """One job's submission, of checked parts, images and mask."""
        options_json = options.model_dump_json(exclude_none=True)
        request = EditInputs(
            parts.info.name,
            images,
            parts.prompt,
            parts.negative_prompt,
            options_json,
            caller.request_id,
            mask,
        )
        submission = Submission(
            owner=caller.owner,
            request=request,
            deadline_s=parts.deadline_s or self.settings.request_timeout_s,
            idempotency_key=caller.idempotency_key,
        )
        if caller.idempotency_key:
            submission.request_hash = request_hash(submission)
        return submission

    def _callback(self, url: str | None) -> str | None:
        if not url:
            return None
        if len(url) > MAX_CALLBACK_URL_CHARS:
            raise ApiError(
                ErrorCode.INVALID_CALLBACK_URL,
                f"callback_url is {len(url)} characters; the limit is {MAX_CALLBACK_URL_CHARS}",
                detail={"field": "callback_url"},
            )
        return self.policy.check_url(url)

    async def read(self, form: ProcessForm, caller: Caller) -> Submission:
        parts = self.parts(form)
        callback = self._callback(form.callback_url)
        check_image_id(form.image_id)
        uploads = [await part.read() for part in form.image]
        check_image_count(len(uploads), parts.info.max_images)
        infos = [await self.check_image(data) for data in uploads]
        options = parts.options.edit_options()
        mask = await read_upload(form.mask)
        await self.check_mask(mask, options, uploads[0], infos[0])
        submission = self.submission(parts, uploads, options, caller, mask)
        submission.respond_async = form.run_async or caller.respond_async
        submission.callback_url = callback
        submission.image_id = form.image_id
        if caller.idempotency_key:
            submission.request_hash = request_hash(submission)
        return submission
