"""Errors raised by the engine. Each carries a stable code that the gateway maps to HTTP."""

from __future__ import annotations


class EngineError(Exception):
    """Base class; `code` is the stable machine-readable reason."""

    code = "model_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidInput(EngineError):
    """The request is wrong: Triton answers INVALID_ARG, the gateway 4xx."""

    code = "invalid_input"


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"


class ImageTooLarge(InvalidInput):
    code = "image_too_large"


class CorruptImage(InvalidInput):
    code = "corrupt_image"


class ImageTooComplex(InvalidInput):
    """Small in bytes but costly to read: too many JPEG scans, frames, chunks or metadata."""

    code = "image_too_complex"


class InvalidMask(InvalidInput):
    """The MASK is not an image the engine can read (empty, not JPEG/PNG/WebP, damaged)."""

    code = "invalid_mask"


class MaskSizeMismatch(InvalidInput):
    code = "mask_size_mismatch"


class MaskEmpty(InvalidInput):
    code = "mask_empty"


class RegionOutsideImage(InvalidInput):
    code = "region_outside_image"


class Cancelled(EngineError):
    """The caller cancelled, disconnected or ran out of time; the run stopped early."""

    code = "cancelled"
