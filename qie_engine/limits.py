"""The request limits that the gateway and every model both enforce, written once.

Each is a setting of the gateway and a parameter of the models, by the same name: an
environment variable of that name overrides it (for the models, when Triton starts). The README's
tables, .env.example, docker-compose.yaml and the Kubernetes manifests state these defaults; a
test checks that they agree with this file (tests/deploy/test_limits_stated_once.py).
"""

from __future__ import annotations

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # one image's bytes (413)
MAX_PIXELS = 4096 * 4096  # one image's pixels, read from its header (422 image_too_large)
MAX_PROMPT_CHARS = 1000  # a prompt's (or negative prompt's) characters (422 prompt_too_long)

# What an image's structure may cost to read, decided from its header before any pixel is
# decoded (qie_engine/image_header.py); past any of these: 422 image_too_complex.
# Scans in one JPEG. Encoders write 1 (baseline), 10 (libjpeg's progressive script for colour),
# 10 to 13 (mozjpeg), at most 18 (libjpeg's script for CMYK). A decoder walks every block of the
# image once a scan, about 1.7 ms a scan at 4096 x 4096, even at 1/8 scale: 32 scans bound that
# to about 55 ms, where a crafted file of 8,000 scans took 13 s.
MAX_JPEG_SCANS = 32
# Metadata in one file, summed: ICC, EXIF, XMP, text and unknown chunks (APPn and COM segments
# in a JPEG), compressed PNG chunks counted inflated. Pillow's own cap on one inflated text chunk
# (PngImagePlugin.MAX_TEXT_CHUNK, 1 MiB): a camera's EXIF stays under 64 KiB, an sRGB profile is
# 3 KiB and a CMYK press profile about 0.5 MiB. Results carry none of it.
MAX_IMAGE_METADATA_BYTES = 1024 * 1024
# Animation frames (APNG's acTL, WebP's ANMF chunks): 40 s at 25 frames a second. Only the first
# frame is edited; the others are parsed for nothing.
MAX_IMAGE_FRAMES = 1000
# Chunks (PNG, WebP) or markers (JPEG) in one file. libpng writes 8 KiB IDAT chunks, 2,560 in a
# 20 MiB PNG; a file of millions of empty chunks would make the walks themselves the cost.
MAX_IMAGE_CHUNKS = 10_000

# Each image limit's variable, and the field of ImageLimits it sets.
IMAGE_LIMITS = {
    "MAX_IMAGE_BYTES": "max_bytes",
    "MAX_PIXELS": "max_pixels",
    "MAX_JPEG_SCANS": "max_jpeg_scans",
    "MAX_IMAGE_METADATA_BYTES": "max_metadata_bytes",
    "MAX_IMAGE_FRAMES": "max_frames",
    "MAX_IMAGE_CHUNKS": "max_chunks",
}
# The variables both the gateway and every model read.
SHARED = (*IMAGE_LIMITS, "MAX_PROMPT_CHARS")


def default(name: str) -> int:
    """The default of one of the SHARED variables."""
    value: int = globals()[name]
    return value
