"""A batch's zip: the names of its entries, made from the uploads' file names, and its bytes.

A client's file name is text to show, never a path. Cleaning first folds compatibility forms
(NFKC), so a look-alike such as a fullwidth solidus, backslash or colon becomes the character it
imitates and the rules that follow see it. Those keep the last path segment only; drop control,
format (bidirectional overrides, zero-width marks), private-use and unassigned characters; replace
the characters Windows forbids; trim dots and spaces at either end (so no "..", no hidden file);
and shorten it.

An entry is "<stem>-edited.<ext>" (a variation: "<stem>-edited-<n>.<ext>", n from 1), the
extension that of the output format; a name with no stem left is "image-<n>". Names that clash,
ignoring case, get "-2", "-3" ... . The suffix also keeps an entry off the input's own name, so
unpacking beside the inputs overwrites none, and off Windows' device names (CON, NUL ...), which
Windows reads up to the first dot: a stem "nul.tar" becomes "nul_tar".
"""

from __future__ import annotations

import io
import re
import time
import unicodedata
import zipfile
from collections.abc import Sequence
from typing import NamedTuple

# Unicode categories dropped from names: control, format, surrogate, private use, unassigned,
# and the line and paragraph separators.
DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"{kind}{n}" for kind in ("COM", "LPT") for n in range(1, 10))}
)
WINDOWS_FORBIDDEN = re.compile(r'[<>:"/\\|?*]')
MAX_STEM_CHARS = 80
MAX_EXTENSION_CHARS = 8
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
ZIP_EPOCH = 315532800.0 + 86400  # a zip's timestamps start in 1980


def clean_name(raw: str | None) -> str:
    """A file name fit to show and to store: see the module's docstring. May be empty."""
    # NFKC, not NFC: a fullwidth solidus (U+FF0F) reads as "/", and a tool that folds
    # compatibility forms later would turn "..<U+FF0F>x" into a path. Folded first, the rules
    # below see the character it imitates.
    text = unicodedata.normalize("NFKC", raw or "")
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(c for c in text if unicodedata.category(c) not in DROPPED_CATEGORIES)
    text = WINDOWS_FORBIDDEN.sub("_", text).strip(" .")
    stem, dot, extension = text.rpartition(".")
    if not dot or len(extension) > MAX_EXTENSION_CHARS:
        stem, extension = text, ""
    if len(stem) > MAX_STEM_CHARS:
        text = stem[:MAX_STEM_CHARS].rstrip(" .") + (f".{extension}" if extension else "")
    return text


def _stem(name: str, index: int) -> str:
    stem, dot, _extension = name.rpartition(".")
    stem = (stem if dot else name).strip(" .")[:MAX_STEM_CHARS].rstrip(" .")
    head, dot, rest = stem.partition(".")
    if dot and head.upper() in WINDOWS_DEVICES:
        stem = f"{head}_{rest}"
    return stem or f"image-{index + 1}"


def entry_names(names: Sequence[str], output_format: str, *, variations: bool = False) -> list[str]:
    """The zip entry of each item, in order: unique (ignoring case), safe, with the right
    extension. `names` are cleaned names (clean_name); for variations, the one input's name
    once per variation."""
    extension = EXTENSIONS.get(output_format, output_format)
    taken: set[str] = set()
    entries = []
    for index, name in enumerate(names):
        base = f"{_stem(name, index)}-edited" + (f"-{index + 1}" if variations else "")
        entry, copy = f"{base}.{extension}", 1
        while entry.casefold() in taken:
            copy += 1
            entry = f"{base}-{copy}.{extension}"
        taken.add(entry.casefold())
        entries.append(entry)
    return entries


class ArchiveEntry(NamedTuple):
    name: str
    data: bytes
    modified: float  # seconds since the epoch: when the edit finished


def build_zip(entries: Sequence[ArchiveEntry]) -> bytes:
    """A zip of the entries, in order. Stored, not deflated: the images are compressed already."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data, modified in entries:
            stamp = time.localtime(max(modified, ZIP_EPOCH))[:6]
            archive.writestr(zipfile.ZipInfo(name, date_time=stamp), data)
    return buffer.getvalue()
