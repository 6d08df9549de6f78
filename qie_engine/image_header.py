"""What an upload's container says, and the limits it must meet, read before any pixel is decoded.

Pillow reads only the first header of a file and has no limit on JPEG scans, animation frames,
chunk counts or the metadata a JPEG or WebP carries, so the three walks here are written by hand:
JPEG marker segments (T.81 annex B), PNG chunks (PNG spec section 5) and WebP's RIFF chunks. Each
loops over segments, never over bytes: a chunk's length skips its payload and `re` skips a JPEG's
entropy-coded data, so a walk takes microseconds a chunk and stops at the first limit it passes.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import NoReturn

from qie_engine import limits
from qie_engine.errors import CorruptImage, ImageTooComplex, UnsupportedMediaType

# Pillow opens only these; every other format (TIFF, PSD, EPS, ICO, SVG...) is never parsed.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
NOT_AN_IMAGE = "the file is not a JPEG, PNG or WebP image; send one of those formats"


@dataclass(frozen=True)
class ImageLimits:
    """What one upload may cost; the gateway's check and the model's decode apply the same ones."""

    max_bytes: int = limits.MAX_IMAGE_BYTES
    max_pixels: int = limits.MAX_PIXELS
    max_jpeg_scans: int = limits.MAX_JPEG_SCANS
    max_metadata_bytes: int = limits.MAX_IMAGE_METADATA_BYTES
    max_frames: int = limits.MAX_IMAGE_FRAMES
    max_chunks: int = limits.MAX_IMAGE_CHUNKS


@dataclass(frozen=True)
class ImageInfo:
    """What the container says, read without decoding the pixels."""

    format: str
    width: int
    height: int
    frames: int = 1
    # The DCT coefficients (2 bytes each) a JPEG of more than one scan, such as a progressive one,
    # makes a decoder hold all at once, even at 1/8 scale; 0 for a single scan, decoded row by row.
    coefficient_bytes: int = 0
    metadata_bytes: int = 0
    file_bytes: int = 0

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.format]


def read_header(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Walk a JPEG, PNG or WebP container against the limits; refuse any other format unread."""
    if data.startswith(b"\xff\xd8\xff"):
        return read_jpeg_header(data, limits)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return read_png_header(data, limits)
    if is_webp(data):
        return read_webp_header(data, limits)
    raise UnsupportedMediaType(NOT_AN_IMAGE)


def check_scans(scans: int, limits: ImageLimits) -> None:
    if scans > limits.max_jpeg_scans:
        raise ImageTooComplex(
            f"the JPEG has more than {limits.max_jpeg_scans} scans; "
            "re-save it as a baseline (not progressive) JPEG, or as PNG"
        )


def check_metadata(metadata_bytes: int, limits: ImageLimits) -> None:
    if metadata_bytes > limits.max_metadata_bytes:
        raise ImageTooComplex(
            f"the image carries more than {limits.max_metadata_bytes} bytes of metadata "
            "(ICC profile, EXIF, XMP or text); re-save it without metadata"
        )


def check_frames(frames: int, limits: ImageLimits) -> None:
    if frames > limits.max_frames:
        raise ImageTooComplex(
            f"the animation has more than {limits.max_frames} frames; only the first frame is "
            "edited, so send that frame as a still image"
        )


def check_chunks(chunks: int, limits: ImageLimits) -> None:
    if chunks > limits.max_chunks:
        raise ImageTooComplex(
            f"the file is split into more than {limits.max_chunks} chunks or segments; "
            "re-save it with a common encoder"
        )


def chunk_name(kind: bytes) -> str:
    """A PNG or RIFF chunk type for a message: its letters, or hex where it holds other bytes."""
    return kind.decode("ascii").strip() if re.fullmatch(rb"[A-Za-z0-9 ]{4}", kind) else kind.hex()


# --- JPEG ----------------------------------------------------------------------------------------

# Between segments a marker is FF then any byte but 00 or FF (FF FF is fill); libjpeg skips
# stray bytes before it, and so does this search.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff]")
# In entropy-coded data FF 00 is a stuffed FF byte and FF D0-D7 a restart marker (T.81 B.1.1.5,
# F.1.2.3): the data ends at the first other marker.
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOS, _EOI, _COM = 0xDA, 0xD9, 0xFE
_PARAMETERLESS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RST0-7 carry no length
# SOF0-SOF15 less DHT (C4), JPG (C8) and DAC (CC), which share the range.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_APP = range(0xE0, 0xF0)


@dataclass
class _JpegWalk:
    data: bytes
    limits: ImageLimits
    markers: int = 0
    scans: int = 0
    metadata: int = 0
    frame: tuple[int, int, int] | None = None  # width, height, 8x8 blocks in all components

    def broken(self, why: str) -> NoReturn:
        # Before its frame header a file is no JPEG that Pillow could read; after it, a damaged one.
        if self.frame is None:
            raise UnsupportedMediaType(NOT_AN_IMAGE)
        raise CorruptImage(f"the JPEG is truncated or damaged: {why}")

    def segment_end(self, pos: int) -> int:
        """Where the segment whose 2-byte length starts at pos ends (the length counts itself)."""
        if pos + 2 > len(self.data):
            self.broken("it ends inside a marker")
        end = pos + int.from_bytes(self.data[pos : pos + 2], "big")
        if end < pos + 2 or end > len(self.data):
            self.broken("a segment runs past the end of the file")
        return end

    def scan_end(self, start: int) -> int:
        found = _JPEG_SCAN_END.search(self.data, start)
        if found is None:
            self.broken("it ends inside a scan")
        return found.start()

    def tally(self, marker: int, start: int, end: int) -> None:
        """Count what the segment of payload data[start:end] adds: a frame, a scan or metadata."""
        if marker in _SOF:
            if self.frame is not None:
                self.broken("its frame header is repeated")
            self.frame = self.read_frame(start, end)
        elif marker == _SOS:
            if self.frame is None:
                self.broken("a scan comes before the frame header")
            self.scans += 1
            check_scans(self.scans, self.limits)
        elif marker in _APP or marker == _COM:
            self.metadata += end - start
            check_metadata(self.metadata, self.limits)

    def read_frame(self, start: int, end: int) -> tuple[int, int, int]:
        """Width, height and the 8x8 blocks of all components, padded to whole MCUs as libjpeg
        does, from a frame header: precision, height, width, count, then each component's id,
        sampling factors and table."""
        data = self.data
        count = data[start + 5] if end - start >= 6 else 0
        if count == 0 or end - start < 6 + 3 * count:
            self.broken("its frame header is short")
        height, width = struct.unpack_from(">HH", data, start + 1)
        factors = [divmod(data[start + 7 + 3 * i], 16) for i in range(count)]
        if not all(1 <= h <= 4 and 1 <= v <= 4 for h, v in factors):
            self.broken("its frame header has bad sampling factors")
        mcus_across = -(-width // (8 * max(h for h, _ in factors)))
        mcus_down = -(-height // (8 * max(v for _, v in factors)))
        return width, height, mcus_across * mcus_down * sum(h * v for h, v in factors)


def read_jpeg_header(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Walk a JPEG's markers from SOI to EOI, skipping segment payloads and entropy-coded data."""
    walk = _JpegWalk(data, limits)
    pos = 2
    while True:
        found = _JPEG_MARKER.search(data, pos)
        if found is None:
            walk.broken("it ends before its end-of-image marker")
        marker, pos = data[found.start() + 1], found.end()
        walk.markers += 1
        check_chunks(walk.markers, limits)
        if marker == _EOI:
            break
        if marker in _PARAMETERLESS:
            continue
        end = walk.segment_end(pos)
        walk.tally(marker, pos + 2, end)
        pos = walk.scan_end(end) if marker == _SOS else end
    if walk.frame is None:
        walk.broken("it has no frame header")
    width, height, blocks = walk.frame
    return ImageInfo(
        "JPEG",
        width,
        height,
        coefficient_bytes=blocks * 64 * 2 if walk.scans > 1 else 0,
        metadata_bytes=walk.metadata,
        file_bytes=len(data),
    )


# --- PNG -----------------------------------------------------------------------------------------

# Ancillary chunks that hold pixels or animation rather than metadata.
_PNG_NOT_METADATA = frozenset({b"tRNS", b"acTL", b"fcTL", b"fdAT"})


@dataclass
class _PngWalk:
    data: bytes
    limits: ImageLimits
    chunks: int = 0
    metadata: int = 0
    frames: int = 1
    size: tuple[int, int] | None = None

    def broken(self, why: str) -> NoReturn:
        if self.size is None:
            raise UnsupportedMediaType(NOT_AN_IMAGE)
        raise CorruptImage(f"the PNG is truncated or damaged: {why}")

    def tally(self, kind: bytes, start: int, end: int) -> None:
        """Count what the chunk of payload data[start:end] adds: the size, frames or metadata."""
        if kind == b"IHDR":
            if end - start < 13:
                self.broken("its IHDR chunk is short")
            self.size = struct.unpack_from(">II", self.data, start)
        elif kind == b"acTL":
            if end - start < 8:
                self.broken("its acTL chunk is short")
            self.frames = struct.unpack_from(">I", self.data, start)[0]
            check_frames(self.frames, self.limits)
        elif kind[0] & 0x20 and kind not in _PNG_NOT_METADATA:  # bit 5 of byte 0: ancillary
            allowance = self.limits.max_metadata_bytes - self.metadata
            self.metadata += png_metadata_bytes(kind, self.data, start, end, allowance)
            check_metadata(self.metadata, self.limits)


def read_png_header(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Walk a PNG's chunks by their lengths, inflating no pixels and no more metadata than
    the limit allows."""
    walk = _PngWalk(data, limits)
    pos = 8
    while pos < len(data):  # a PNG that stops after its last IDAT, with no IEND, still decodes
        if pos + 8 > len(data):
            walk.broken("it ends inside a chunk header")
        length, kind = struct.unpack_from(">I4s", data, pos)
        start, end = pos + 8, pos + 8 + length
        if end + 4 > len(data):  # the payload and its CRC
            walk.broken(f"its {chunk_name(kind)} chunk runs past the end of the file")
        if walk.size is None and kind != b"IHDR":
            walk.broken("it does not start with IHDR")
        walk.chunks += 1
        check_chunks(walk.chunks, limits)
        if kind == b"IEND":
            break
        walk.tally(kind, start, end)
        pos = end + 4
    if walk.size is None:
        walk.broken("it has no IHDR chunk")
    return ImageInfo(
        "PNG",
        *walk.size,
        frames=walk.frames,
        metadata_bytes=walk.metadata,
        file_bytes=len(data),
    )


def png_metadata_bytes(kind: bytes, data: bytes, start: int, end: int, allowance: int) -> int:
    """A metadata chunk's size as Pillow will hold it: iCCP, zTXt and compressed iTXt inflated,
    never past one byte over the allowance, so a zlib bomb costs what the limit allows."""
    stream = _png_compressed_stream(kind, data, start, end)
    if stream is None:
        return end - start
    # max_length 0 would mean no limit: ask for at least one byte.
    most = max(0, allowance) + 1
    try:
        inflated = zlib.decompressobj().decompress(memoryview(data)[stream:end], most)
    except zlib.error:
        return end - start  # Pillow drops a profile or text it cannot inflate
    return stream - start + len(inflated)


def _png_compressed_stream(kind: bytes, data: bytes, start: int, end: int) -> int | None:
    """Where the zlib stream of an iCCP, zTXt or compressed iTXt chunk starts (PNG spec 11.3)."""
    if kind not in (b"iCCP", b"zTXt", b"iTXt"):
        return None
    name_end = data.find(b"\x00", start, end)
    if name_end < 0:
        return None
    if kind != b"iTXt":
        return name_end + 2  # name, NUL, compression method, stream
    if name_end + 1 >= end or data[name_end + 1] != 1:  # the compression flag
        return None
    language_end = data.find(b"\x00", name_end + 3, end)
    translated_end = data.find(b"\x00", language_end + 1, end) if language_end >= 0 else -1
    return translated_end + 1 if translated_end >= 0 else None


# --- WebP ----------------------------------------------------------------------------------------

# Chunks that hold the image or the animation; every other chunk (ICCP, EXIF, XMP, unknown) is
# metadata that libwebp skips.
_WEBP_PIXELS = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF"})
_WEBP_FIRST = (b"VP8 ", b"VP8L", b"VP8X")


def is_webp(data: bytes) -> bool:
    """Pillow's own test: a RIFF WEBP file whose first chunk is VP8, VP8L or VP8X."""
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] in _WEBP_FIRST


@dataclass
class _WebpWalk:
    data: bytes
    limits: ImageLimits
    chunks: int = 0
    metadata: int = 0
    frames: int = 0
    size: tuple[int, int] | None = None

    def tally(self, kind: bytes, start: int, end: int) -> None:
        """Count what the chunk of payload data[start:end] adds: the size, a frame or metadata."""
        if kind == b"VP8X":
            if end - start < 10:
                _webp_broken("its VP8X chunk is short")
            # The canvas: 24-bit width - 1 and height - 1, after the flags and 3 reserved bytes.
            self.size = (
                int.from_bytes(self.data[start + 4 : start + 7], "little") + 1,
                int.from_bytes(self.data[start + 7 : start + 10], "little") + 1,
            )
        elif kind in (b"VP8 ", b"VP8L"):
            size = webp_bitstream_size(kind, self.data, start, end)
            self.size = self.size or size
        elif kind == b"ANMF":
            self.frames += 1
            check_frames(self.frames, self.limits)
        elif kind not in _WEBP_PIXELS:
            self.metadata += end - start
            check_metadata(self.metadata, self.limits)


def _webp_broken(why: str) -> NoReturn:
    raise CorruptImage(f"the WebP is truncated or damaged: {why}")


def read_webp_header(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Walk a WebP's RIFF chunks: every size must fit the data, so a cut file is refused here."""
    riff_end = 8 + struct.unpack_from("<I", data, 4)[0]
    if riff_end > len(data):
        _webp_broken(f"its RIFF header says {riff_end} bytes, the file has {len(data)}")
    walk = _WebpWalk(data, limits)
    pos = 12
    while pos < riff_end:  # bytes after the RIFF payload are ignored, as libwebp does
        if pos + 8 > riff_end:
            _webp_broken("it ends inside a chunk header")
        kind, length = struct.unpack_from("<4sI", data, pos)
        start, end = pos + 8, pos + 8 + length
        if end > riff_end:
            _webp_broken(f"its {chunk_name(kind)} chunk runs past the end of the RIFF payload")
        walk.chunks += 1
        check_chunks(walk.chunks, limits)
        walk.tally(kind, start, end)
        pos = end + length % 2  # chunks are padded to an even size
    if walk.size is None:
        _webp_broken("it holds no image")
    return ImageInfo(
        "WEBP",
        *walk.size,
        frames=max(1, walk.frames),
        metadata_bytes=walk.metadata,
        file_bytes=len(data),
    )


def webp_bitstream_size(kind: bytes, data: bytes, start: int, end: int) -> tuple[int, int]:
    """The size a VP8L header (14 bits each, minus one) or a VP8 key frame header gives."""
    if kind == b"VP8L":
        if end - start < 5 or data[start] != 0x2F:
            _webp_broken("its VP8L header is damaged")
        bits = struct.unpack_from("<I", data, start + 1)[0]
        return (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
    # A 3-byte frame tag (bit 0 clear for a key frame, bits 5-23 the first partition's size),
    # the start code 9D 01 2A, then 14-bit width and height (RFC 6386 section 9.1).
    if end - start < 10 or data[start + 3 : start + 6] != b"\x9d\x01\x2a":
        _webp_broken("its VP8 header is damaged")
    tag = int.from_bytes(data[start : start + 3], "little")
    if tag & 1 or 10 + (tag >> 5) > end - start:
        _webp_broken("its VP8 first partition runs past its chunk")
    width, height = struct.unpack_from("<HH", data, start + 6)
    return width & 0x3FFF, height & 0x3FFF
