"""Light HTML reports: the figures embedded in an nbconvert export, re-encoded for the screen.

nbconvert embeds every figure as a base64 PNG. Photo grids (galleries, mistakes, query results)
are tens of thousands of colours in a PNG, a megabyte or more each; as JPEG at a screen width
they are a tenth of that and look the same. Plots (bars, curves, heat maps) have few colours:
they stay PNG, reduced to a 256-colour palette, which keeps lines and text sharp. A figure is
replaced only when the new encoding is smaller, so running this twice changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import atomic_write

#: Embedded figures wider than this (pixels) are shrunk to it: a wide screen's page width.
MAX_WIDTH = 1400
#: Figures with more distinct colours than this are photos (JPEG); the others plots (PNG).
PHOTO_COLORS = 4096
#: JPEG quality of photo figures.
JPEG_QUALITY = 82

_EMBEDDED = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=\s]+)")


@dataclass
class LightenReport:
    """What :func:`lighten_html` did: figures seen, re-encoded as JPEG or as palette PNG, and
    the bytes of the embedded figures before and after."""

    figures: int = 0
    jpeg: int = 0
    png: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


def reencode_figure(data: bytes, max_width: int = MAX_WIDTH,
                    photo_colors: int = PHOTO_COLORS,
                    jpeg_quality: int = JPEG_QUALITY) -> tuple[bytes, str]:
    """A figure's PNG bytes re-encoded for the screen.

    Parameters
    ----------
    data : bytes
        A PNG file.
    max_width : int
        Wider figures are shrunk to this width (aspect ratio kept, Lanczos).
    photo_colors : int
        More distinct colours than this: a photo grid, saved as JPEG; otherwise a plot, saved
        as a PNG with an adaptive 256-colour palette.
    jpeg_quality : int
        JPEG quality (1-95).

    Returns
    -------
    data : bytes
        The new file, or ``data`` itself when re-encoding does not make it smaller.
    mime : str
        ``"image/jpeg"`` or ``"image/png"``.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            if rgba.getextrema()[3][0] < 255:  # see-through pixels: keep the PNG as it is
                return data, "image/png"
            im = rgba
        im = im.convert("RGB")
    if im.width > max_width:
        im = im.resize((max_width, round(im.height * max_width / im.width)),
                       Image.Resampling.LANCZOS)
    out = io.BytesIO()
    photo = im.getcolors(photo_colors) is None  # None: more colours than photo_colors
    if photo:
        im.save(out, "JPEG", quality=jpeg_quality, optimize=True, progressive=True)
    else:
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                    dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
    new = out.getvalue()
    if len(new) >= len(data):
        return data, "image/png"
    return new, "image/jpeg" if photo else "image/png"


def lighten_html(text: str, **options: int) -> tuple[str, LightenReport]:
    """Re-encode every base64 PNG embedded in an HTML page (:func:`reencode_figure`).

    Parameters
    ----------
    text : str
        The HTML.
    **options
        Passed to :func:`reencode_figure` (``max_width``, ``photo_colors``, ``jpeg_quality``).

    Returns
    -------
    text : str
        The HTML with the figures replaced (everything else untouched).
    report : LightenReport
    """
    report = LightenReport()

    def replace(match: re.Match[str]) -> str:
        encoded = match.group(1)
        try:
            data = base64.b64decode(encoded)
            new, mime = reencode_figure(data, **options)
        except (binascii.Error, OSError, ValueError):  # not a readable PNG: leave it
            return match.group(0)
        report.figures += 1
        report.bytes_before += len(data)
        report.bytes_after += len(new)
        if new is data:
            return match.group(0)
        report.jpeg += mime == "image/jpeg"
        report.png += mime == "image/png"
        return f"data:{mime};base64,{base64.b64encode(new).decode('ascii')}"

    return _EMBEDDED.sub(replace, text), report


def lighten_file(path: str | os.PathLike[str], **options: int) -> LightenReport:
    """Re-encode the embedded figures of an HTML file in place (:func:`lighten_html`).

    Parameters
    ----------
    path : path-like
        An HTML file (e.g. a notebook's nbconvert export).
    **options
        Passed to :func:`reencode_figure`.

    Returns
    -------
    LightenReport
    """
    path = Path(path)
    text, report = lighten_html(path.read_text(encoding="utf-8"), **options)
    if report.jpeg or report.png:
        with atomic_write(path) as fh:
            fh.write(text)
    return report
