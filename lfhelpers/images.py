"""The one image loader: any supported file to 8-bit RGB, and the one resize for the models.

Every stage opens photos through this module, so that a photo reaches every model (training,
evaluation, ``predict``, embeddings, the matcher) as the same array:

* :func:`to_rgb`: any Pillow mode to 8-bit RGB with one set of rules: transparency composited
  on white, 16-bit and 32-bit integer images scaled (not clipped), float images stretched,
  palette, CMYK and greyscale converted;
* :func:`open_image`: a file, bytes or array to an RGB (or RGBA, on request) Pillow image with
  the EXIF orientation applied, optionally shrunk so that its longer side is at most
  ``max_side`` (JPEGs are decoded at a reduced scale first, which is much faster); a photo it
  refuses (missing, not an image, too large, truncated, undecodable) raises
  :class:`ImageRefused`, whose ``reason`` the cleanup records in its quarantine;
* :func:`decode_image`: the same, plus what the stored file said (format, mode, EXIF
  orientation), for the cleanup's decision to copy a file byte for byte;
* :func:`load_rgb`: the model input: ``(size, size, 3)`` ``uint8``, squashed to a square with
  Pillow's antialiased bilinear filter;
* :func:`load_array`: an RGB array of the photo (shrunk to ``max_side``), for hand-made features;
* :func:`thumbnail`: a small RGB array for figures; a file that cannot be read gives a grey tile.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from lfhelpers.errors import DataError

#: File name endings of photos, everywhere a folder is listed (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: What :func:`load_rgb` and :func:`open_image` accept.
ImageSource = str | os.PathLike | bytes | bytearray | np.ndarray | Image.Image

#: Images with more pixels are refused (the decompression-bomb guard of :func:`open_image`).
MAX_PIXELS = 40_000_000

_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_HTML_STARTS = (b"<!doctype", b"<html", b"<?xml")
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")


def to_rgb(img: Image.Image, keep_alpha: bool = False) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (or RGBA with ``keep_alpha``).

    Parameters
    ----------
    img : PIL.Image.Image
        A decoded image.
    keep_alpha : bool
        Return an ``RGBA`` image when the input has transparency, instead of compositing it
        on white.

    Returns
    -------
    PIL.Image.Image
        ``RGB`` (or ``RGBA``).
    """
    if img.mode in _HIGH_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / (257.0 if arr.max(initial=0) <= 65535 else arr.max() / 255.0)
        elif img.mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA") if "transparency" in img.info or img.mode == "PA" \
            else img.convert("RGB")
    if img.mode in _ALPHA_MODES:
        img = img.convert("RGBA")
        if keep_alpha:
            return img
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def _from_array(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (
            arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(f"Image arrays must be uint8 (H, W), (H, W, 3) or (H, W, 4), got "
                        f"{arr.dtype} {arr.shape}.")
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(arr), mode)


class ImageRefused(DataError):
    """A photo :func:`open_image` will not open: the message, a reason code and a detail.

    Attributes
    ----------
    reason : str
        ``"missing"`` (no such file, or a folder), ``"not_an_image"``, ``"too_large"``,
        ``"truncated"`` or ``"decode_error"``; the cleanup quarantines the photo under it.
    detail : str
        What the check found, in a few words (the cleanup's ``rejects.csv`` records it).
    """

    def __init__(self, message: str, reason: str, detail: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple:  # raised in joblib workers: it must survive pickling
        return type(self), (str(self), self.reason, self.detail)


@dataclass(frozen=True)
class DecodedImage:
    """A photo as :func:`decode_image` gives it, with what its stored file said.

    Attributes
    ----------
    image : PIL.Image.Image
        The loaded ``RGB`` (or ``RGBA``) image, EXIF orientation applied.
    format : str or None
        Pillow's name of the file format (``"JPEG"``, ``"PNG"``...); ``None`` for arrays.
    mode : str
        The mode as stored (before the conversion to RGB).
    orientation : int
        The stored EXIF orientation tag (``1`` when there is none).
    """

    image: Image.Image
    format: str | None
    mode: str
    orientation: Any


def open_image(source: ImageSource, max_side: int | None = None, *,
               keep_alpha: bool = False, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open a photo as an RGB Pillow image: EXIF orientation applied, one set of mode rules.

    Parameters
    ----------
    source : path-like, bytes, ndarray or PIL image
        The photo.
    max_side : int, optional
        Shrink (never enlarge) so that the longer side is at most this many pixels; JPEGs are
        decoded at a reduced scale first. ``None`` keeps the full size.
    keep_alpha : bool
        Keep transparency (``RGBA``) instead of compositing on white.
    max_pixels : int
        Larger images are refused before they are decoded (decompression-bomb guard).

    Returns
    -------
    PIL.Image.Image
        A loaded ``RGB`` (or ``RGBA``) image.

    Raises
    ------
    ImageRefused
        When the file is missing, is not an image, is too large or cannot be decoded; the
        message names the file and says what is wrong, without Python exception names.
    DataError
        When an array has the wrong type or shape.
    """
    return decode_image(source, max_side, keep_alpha=keep_alpha, max_pixels=max_pixels).image


def decode_image(source: ImageSource, max_side: int | None = None, *, keep_alpha: bool = False,
                 max_pixels: int = MAX_PIXELS, strict: bool = False) -> DecodedImage:
    """:func:`open_image`, plus the stored format, mode and EXIF orientation of the file.

    Parameters
    ----------
    source, max_side, keep_alpha, max_pixels
        As for :func:`open_image`.
    strict : bool
        Refuse (``decode_error``) a photo whose EXIF orientation cannot be applied, instead of
        keeping its stored orientation: the cleanup quarantines such a file, a model reading a
        photo takes it as stored.

    Returns
    -------
    DecodedImage

    Raises
    ------
    ImageRefused, DataError
        As for :func:`open_image`.
    """
    name = "<image>" if isinstance(source, bytes | bytearray | np.ndarray | Image.Image) \
        else os.fspath(source)
    if isinstance(source, np.ndarray):
        img = _from_array(source)
    elif isinstance(source, Image.Image):
        img = source
    else:
        img = _open_file(source, name, max_side, max_pixels)
    fmt, mode, orientation = img.format, img.mode, 1
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block: keep the stored orientation
        if strict:
            raise ImageRefused(f"{name}: its EXIF orientation cannot be applied.",
                               "decode_error", repr(exc)[:200]) from None
    try:
        img = to_rgb(img, keep_alpha=keep_alpha)
    except Exception as exc:  # noqa: BLE001 - a mode Pillow cannot convert
        raise ImageRefused(f"{name} is not a readable image ({_reason(exc)}).",
                           "decode_error", repr(exc)[:200]) from None
    if max_side is not None and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR)
    return DecodedImage(img, fmt, mode, orientation)


def _open_file(source: str | os.PathLike | bytes | bytearray, name: str, max_side: int | None,
               max_pixels: int) -> Image.Image:
    """Open and fully decode a file or bytes with the guards; refusals raise ImageRefused."""
    if not isinstance(source, bytes | bytearray):
        if os.path.isdir(source):
            raise ImageRefused(f"{name} is a folder, not an image file.", "missing", "a folder")
        if not os.path.exists(source):
            raise ImageRefused(f"{name}: no such file.", "missing", "no such file")
    fh: Any = io.BytesIO(source) if isinstance(source, bytes | bytearray) else name
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fh)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
            raise _refusal(name, exc, source, loading=False) from None
        width, height = img.size
        if width * height > max_pixels:
            img.close()
            raise ImageRefused(f"{name} is too large ({width}x{height} pixels, more than "
                               f"{max_pixels}).", "too_large",
                               f"{width}x{height} > max_pixels {max_pixels}")
        try:
            if max_side is not None and max(img.size) > max_side:
                img.draft(img.mode if img.mode in ("RGB", "L") else None, (max_side, max_side))
            img.load()
        except Exception as exc:  # noqa: BLE001
            img.close()
            raise _refusal(name, exc, source, loading=True) from None
    return img


def _refusal(name: str, exc: BaseException, source: str | os.PathLike | bytes | bytearray,
             loading: bool) -> ImageRefused:
    """The refusal of a file Pillow failed on, while opening it or (``loading``) decoding it."""
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return ImageRefused(f"{name} is too large to decode safely.", "too_large",
                            str(exc)[:200])
    message = f"{name} is not a readable image ({_reason(exc)})."
    if isinstance(exc, UnidentifiedImageError):
        return ImageRefused(message, "not_an_image", _what_it_is(source))
    if loading and isinstance(exc, OSError):
        reason = "truncated" if "truncated" in str(exc).lower() else "decode_error"
        return ImageRefused(message, reason, str(exc)[:200])
    return ImageRefused(message, "decode_error", repr(exc)[:200])


def _what_it_is(source: str | os.PathLike | bytes | bytearray) -> str:
    """What a file Pillow cannot identify holds: an HTML (or XML) page, or something unknown."""
    if isinstance(source, bytes | bytearray):
        head = bytes(source[:64])
    else:
        try:
            with open(source, "rb") as fh:
                head = fh.read(64)
        except OSError:
            head = b""
    return "HTML page" if head.lstrip().lower().startswith(_HTML_STARTS) else "unknown format"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "cannot identify image file" in text:
        return "unknown or damaged image format"
    if "truncated" in text.lower():
        return "the file is truncated"
    return text[:200] or "the decoder failed"


def resize_square(img: Image.Image, size: int) -> np.ndarray:
    """Squash an RGB image to ``size`` × ``size`` (antialiased bilinear); ``uint8`` array."""
    if img.size != (size, size):
        img = img.resize((int(size), int(size)), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def load_rgb(source: ImageSource, size: int) -> np.ndarray:
    """The model input of a photo: ``(size, size, 3)`` ``uint8`` RGB.

    The same function feeds training, evaluation, ``predict``, the embeddings and the matcher,
    so a photo reaches every model as the same array.

    Parameters
    ----------
    source : path-like, bytes, ndarray or PIL image
        The photo.
    size : int
        Output side in pixels.

    Returns
    -------
    numpy.ndarray
        ``(size, size, 3)`` ``uint8``.

    Raises
    ------
    DataError
        When the photo cannot be read (see :func:`open_image`).
    """
    return resize_square(open_image(source, max_side=max(2 * int(size), 1)), int(size))


def load_array(source: ImageSource, max_side: int | None = None) -> np.ndarray:
    """An RGB ``uint8`` array of the photo, shrunk to ``max_side`` (aspect ratio kept)."""
    return np.asarray(open_image(source, max_side=max_side), dtype=np.uint8)


def thumbnail(source: ImageSource, size: int = 256) -> np.ndarray:
    """A small RGB array of the photo for figures; a grey tile when it cannot be read."""
    try:
        img = open_image(source, max_side=size)
        return np.asarray(img, dtype=np.uint8)
    except DataError:
        return np.full((8, 8, 3), 200, np.uint8)


def thread_map(fn: Callable[[Any], Any], items: Sequence[Any], n_jobs: int = -1) -> list[Any]:
    """``[fn(x) for x in items]`` on up to ``n_jobs`` threads (``-1``: one per core).

    For photo work that releases the GIL (decoding, OpenCV's keypoints and model fits, faiss'
    matching, the colour clusters' numpy): photos described at once, candidates verified at
    once. The results keep the order of ``items``.
    """
    items = list(items)
    workers = min(len(items), (os.cpu_count() or 1) if int(n_jobs) < 1 else int(n_jobs))
    if workers < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))
