"""A small synthetic class-folder image set, for tests and the ``smoke`` profile.

This is clearly fixture data: drawn objects (shapes with distinct colors and textures on a
plain, slightly noisy background), not photos. Class names include a Korean one so that Unicode
labels are exercised end to end. ``with_bad_files=True`` adds the awkward inputs a real crawl
produces (truncated, empty, HTML saved as ``.jpg``, duplicates, CMYK, 16-bit, alpha, EXIF
rotation, tiny images) so that the cleanup step has something to quarantine.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: label -> (shape, main color RGB, texture)
SYNTHETIC_CLASSES: dict[str, tuple[str, tuple[int, int, int], str]] = {
    "ball": ("circle", (220, 40, 40), "plain"),
    "card": ("rectangle", (40, 90, 220), "stripes"),
    "key": ("triangle", (230, 190, 30), "dots"),
    "열쇠고리": ("star", (40, 170, 70), "checker"),
}


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Return a (size, size) array in [0, 1] that modulates the object's color."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = int(rng.integers(5, 9))
    if kind == "stripes":
        tex = ((xx + yy) // period) % 2
    elif kind == "dots":
        tex = ((xx % period) < period // 2) & ((yy % period) < period // 2)
    elif kind == "checker":
        tex = ((xx // period) + (yy // period)) % 2
    else:
        tex = np.ones((size, size))
    return 0.65 + 0.35 * tex.astype(float)


def _shape_mask(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one randomly placed and sized shape as an ``L`` mask."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    r = size * rng.uniform(0.22, 0.36)
    cx, cy = (size / 2 + rng.uniform(-0.12, 0.12, 2) * size).tolist()
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "rectangle":
        w, h = r * rng.uniform(1.1, 1.4), r * rng.uniform(0.6, 0.8)
        draw.rectangle([cx - w, cy - h, cx + w, cy + h], fill=255)
    elif shape == "triangle":
        angle = rng.uniform(0, 2 * np.pi)
        corners = [angle + k * 2 * np.pi / 3 for k in range(3)]
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in corners]
        draw.polygon(pts, fill=255)
    else:  # star
        angle = rng.uniform(0, 2 * np.pi)
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = angle + k * np.pi / 5
            pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
        draw.polygon(pts, fill=255)
    return mask


def draw_item(label: str, size: int = 96, seed: int = 0) -> Image.Image:
    """Draw one synthetic item photo of class ``label``.

    Parameters
    ----------
    label : str
        One of :data:`SYNTHETIC_CLASSES`.
    size : int
        Side of the square image in pixels.
    seed : int
        Seed of this image's randomness.

    Returns
    -------
    PIL.Image.Image
        An RGB image.
    """
    shape, color, texture = SYNTHETIC_CLASSES[label]
    rng = np.random.default_rng(seed)
    background = np.array(rng.integers(170, 245, 3), dtype=float)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * rng.uniform(40, 90)
    img = np.ones((size, size, 3)) * background + ramp
    img += rng.normal(0, 6, img.shape)
    # a small dark distractor (a "shadow" or second object) somewhere in the frame
    bx, by = rng.uniform(0.05, 0.8, 2) * size
    bw, bh = rng.uniform(0.1, 0.25, 2) * size
    blob = Image.new("L", (size, size), 0)
    ImageDraw.Draw(blob).ellipse([bx, by, bx + bw, by + bh], fill=255)
    blob_mask = np.asarray(blob.filter(ImageFilter.GaussianBlur(2))) / 255.0
    img = img * (1 - 0.6 * blob_mask[..., None])
    mask = np.asarray(_shape_mask(shape, size, rng).filter(ImageFilter.GaussianBlur(0.8))) / 255.0
    tint = np.clip(np.array(color) + rng.normal(0, 18, 3), 0, 255)
    obj = _texture(texture, size, rng)[..., None] * tint
    img = img * (1 - mask[..., None]) + obj * mask[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _jpeg_bytes(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _write_bad_files(dest: Path, labels: list[str], size: int, seed: int) -> dict[str, str]:
    """Write one of each awkward input; return {relative path: what it is}."""
    rng = np.random.default_rng(seed + 10_000)
    bad: dict[str, str] = {}
    first = labels[0]
    src = dest / first / f"{first}_000.jpg"

    def put(rel: str, data: bytes, what: str) -> None:
        path = dest / rel
        path.write_bytes(data)
        bad[rel] = what

    good = _jpeg_bytes(draw_item(first, size, seed + 999))
    put(f"{first}/zz_truncated.jpg", good[: len(good) // 2], "truncated JPEG")
    put(f"{first}/zz_empty.jpg", b"", "zero bytes")
    put(f"{first}/zz_error_page.jpg",
        b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>", "HTML error page")
    put(f"{first}/zz_exact_copy.jpg", src.read_bytes(), "exact duplicate")
    near = Image.open(src).convert("RGB")
    put(f"{first}/zz_near_copy.jpg", _jpeg_bytes(near, quality=70), "near duplicate (re-encoded)")
    tiny = draw_item(first, 12, seed + 7)
    put(f"{first}/zz_tiny.png", _png_bytes(tiny), "too small")

    second = labels[1 % len(labels)]
    base = draw_item(second, size, int(rng.integers(1 << 30)))
    put(f"{second}/zz_cmyk.jpg", _jpeg_bytes_mode(base.convert("CMYK")), "CMYK JPEG (kept)")
    grey = draw_item(second, size, int(rng.integers(1 << 30))).convert("L")
    put(f"{second}/zz_grey.jpg", _jpeg_bytes_mode(grey), "greyscale (kept)")
    rgba = draw_item(second, size, int(rng.integers(1 << 30))).convert("RGBA")
    alpha = np.full((size, size), 255, np.uint8)
    alpha[: size // 3] = 0
    rgba.putalpha(Image.fromarray(alpha))
    put(f"{second}/zz_alpha.png", _png_bytes(rgba), "RGBA PNG (kept, composited on white)")
    arr16 = (np.asarray(draw_item(second, size, int(rng.integers(1 << 30))).convert("L"),
                        dtype=np.uint16) * 257)
    put(f"{second}/zz_16bit.png", _png_bytes(Image.fromarray(arr16)), "16-bit PNG (kept, scaled)")
    rotated = draw_item(second, size, int(rng.integers(1 << 30))).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", quality=92, exif=exif)
    put(f"{second}/zz_exif_rotated.jpg", buf.getvalue(), "EXIF orientation 6 (kept, rotated)")
    pal = draw_item(second, size, int(rng.integers(1 << 30))).convert("P", palette=Image.ADAPTIVE)
    put(f"{second}/zz_palette.png", _png_bytes(pal), "palette PNG (kept)")
    return bad


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes_mode(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def make_synthetic_dataset(
    dest: str | os.PathLike[str],
    n_per_class: int | dict[str, int] = 24,
    size: int = 96,
    seed: int = 0,
    with_bad_files: bool = False,
    labels: list[str] | None = None,
) -> dict[str, str]:
    """Write a synthetic class-folder image set to ``dest/<label>/<label>_NNN.jpg``.

    Parameters
    ----------
    dest : path-like
        Root folder; class sub-folders are created in it.
    n_per_class : int or dict
        Images per class, or a per-label mapping (to make unbalanced sets).
    size : int
        Side of each square image in pixels (Xception needs at least 71).
    seed : int
        Seed; the same seed writes byte-identical files.
    with_bad_files : bool
        Also write the awkward inputs listed in the module docstring.
    labels : list of str, optional
        Subset of :data:`SYNTHETIC_CLASSES` to draw (default: all).

    Returns
    -------
    dict
        For the bad files written, relative path -> description (empty when none).
    """
    dest = Path(dest)
    labels = list(labels or SYNTHETIC_CLASSES)
    for li, label in enumerate(labels):
        count = n_per_class[label] if isinstance(n_per_class, dict) else n_per_class
        folder = dest / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = draw_item(label, size, seed * 1_000_003 + li * 10_007 + i)
            (folder / f"{label}_{i:03d}.jpg").write_bytes(_jpeg_bytes(img))
    if with_bad_files:
        return _write_bad_files(dest, labels, size, seed)
    return {}
