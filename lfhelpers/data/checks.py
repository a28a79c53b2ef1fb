"""The cleanup's checks of one raw file: is it a usable photo, and what are its hashes?

:func:`inspect_file` applies the checks of a file as a file (empty, larger than ``max_bytes``,
an extension that is not a photo's), then decodes it through the one image loader,
:func:`lfhelpers.images.decode_image`, whose guards (decompression bomb and pixel limit, a
complete decode, truncated files, EXIF orientation, the RGB mode rules) give the rejection
reasons, and finally the minimum side. :func:`check_file` adds the hashes and quality statistics
that the cleanup (:mod:`lfhelpers.data.clean`) caches per file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
from PIL import Image

from lfhelpers.data.quality import image_stats
from lfhelpers.errors import ConfigError
from lfhelpers.fsutil import sha256_file
from lfhelpers.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageRefused, decode_image


@dataclass(frozen=True)
class CleanOptions:
    """Options of the cleanup step (all have defaults suited to item photos).

    Parameters
    ----------
    min_side : int
        Images whose shorter side is below this many pixels are rejected (``too_small``).
    max_pixels : int
        Images with more pixels are rejected (``too_large``) before they are decoded; this is
        also the decompression-bomb guard.
    max_bytes : int
        Files larger than this are rejected (``too_large``) without being read.
    near_dup_distance : int
        Hamming distance of 64-bit perceptual hashes at or below which two images count as near
        duplicates; the later one (in path order) is quarantined. ``-1`` keeps near duplicates.
    group_distance : int
        Images this close (and not removed) are put in one group that the split keeps together.
    extensions : tuple of str
        File extensions looked at; other files are rejected as ``not_an_image``.
    """

    min_side: int = 32
    max_pixels: int = MAX_PIXELS
    max_bytes: int = 50_000_000
    near_dup_distance: int = 4
    group_distance: int = 8
    extensions: tuple[str, ...] = IMAGE_SUFFIXES

    def __post_init__(self) -> None:
        if self.min_side < 1 or self.max_pixels < 1:
            raise ConfigError("min_side and max_pixels must be positive.")
        if self.group_distance < self.near_dup_distance:
            raise ConfigError(
                f"group_distance ({self.group_distance}) must be >= near_dup_distance "
                f"({self.near_dup_distance})."
            )


@dataclass
class FileResult:
    """What the decode step found for one raw file (cached between runs)."""

    source: str
    label: str
    size: int
    mtime_ns: int
    ok: bool
    reason: str = ""
    detail: str = ""
    sha256: str = ""
    pixel_sha256: str = ""
    phash: str = ""
    width: int = 0
    height: int = 0
    out_ext: str = ""
    copy_bytes: bool = False
    quality: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def inspect_file(path: Path, options: CleanOptions) -> tuple[Image.Image | None, dict]:
    """Decode one file completely and decide whether it is usable.

    Parameters
    ----------
    path : pathlib.Path
        The raw file.
    options : CleanOptions
        Size limits and accepted extensions.

    Returns
    -------
    (image, info)
        ``image`` is the 8-bit RGB image with EXIF orientation applied (``None`` when rejected);
        ``info`` holds ``ok``, ``reason``, ``detail``, ``width``, ``height``, ``copy_bytes``.
    """
    size = path.stat().st_size
    if size == 0:
        return None, {"ok": False, "reason": "empty_file", "detail": "0 bytes"}
    if size > options.max_bytes:
        return None, {"ok": False, "reason": "too_large",
                      "detail": f"{size} bytes > max_bytes {options.max_bytes}"}
    if path.suffix.lower() not in options.extensions:
        return None, {"ok": False, "reason": "not_an_image",
                      "detail": f"extension {path.suffix or '(none)'} not accepted"}
    try:
        decoded = decode_image(path, max_pixels=options.max_pixels, strict=True)
    except ImageRefused as exc:
        return None, {"ok": False, "reason": exc.reason, "detail": exc.detail}
    rgb = decoded.image
    width, height = rgb.size
    if min(width, height) < options.min_side:
        return None, {"ok": False, "reason": "too_small",
                      "detail": f"{width}x{height} < min_side {options.min_side}"}
    copy_bytes = (decoded.format in ("JPEG", "PNG") and decoded.mode == "RGB"
                  and decoded.orientation in (1, None))
    return rgb, {"ok": True, "reason": "", "detail": "", "width": width, "height": height,
                 "copy_bytes": copy_bytes, "format": decoded.format}


def check_file(raw_dir: Path, rel: str, label: str, options: CleanOptions) -> FileResult:
    """Decode one raw file and compute its hashes (runs in a worker of the cleanup)."""
    path = raw_dir / rel
    stat = path.stat()
    result = FileResult(source=rel, label=label, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                        ok=False)
    img, info = inspect_file(path, options)
    result.reason, result.detail = info["reason"], info["detail"]
    result.sha256 = sha256_file(path)
    if img is None:
        return result
    result.ok = True
    result.width, result.height = info["width"], info["height"]
    result.copy_bytes = info["copy_bytes"]
    result.out_ext = Path(rel).suffix.lower() if result.copy_bytes else ".png"
    if result.out_ext == ".jpeg":
        result.out_ext = ".jpg"
    result.pixel_sha256 = _pixel_digest(img)
    result.phash = str(imagehash.phash(img))
    result.quality = image_stats(img)
    return result


def _pixel_digest(img: Image.Image) -> str:
    digest = hashlib.sha256(f"{img.size}".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()
