"""Near-duplicate queries: "this is my wallet".

Each query is a cropped, slightly rotated, re-lit, re-encoded copy of one gallery photo
(:func:`make_near_duplicates`); :func:`duplicate_recall` says how often that very photo is
among the first k matches, :func:`duplicate_table` lists the matches for the figures.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance
from tqdm import tqdm

from lfhelpers.data.sampling import seeded_digest
from lfhelpers.errors import DataError
from lfhelpers.fsutil import atomic_write, sha256_file
from lfhelpers.images import open_image
from lfhelpers.similarity.search.gallery import GalleryIndex

log = logging.getLogger(__name__)


def perturb(image: Image.Image, rng: np.random.Generator, max_crop: float = 0.15,
            max_rotation: float = 10.0, max_brightness: float = 0.25,
            jpeg_quality: tuple[int, int] = (40, 85)) -> tuple[Image.Image, str]:
    """A plausible second photo of the same item: crop, small rotation, brightness, JPEG.

    Parameters
    ----------
    image : PIL.Image.Image
        The original (RGB).
    rng : numpy.random.Generator
        Draws the strengths.
    max_crop : float
        Up to this fraction of each side is cut away (at random sides).
    max_rotation : float
        Degrees, either way (the corners are filled with the edge color).
    max_brightness : float
        Brightness factor in ``1 ± max_brightness``.
    jpeg_quality : (int, int)
        JPEG quality range of the re-encoding.

    Returns
    -------
    image : PIL.Image.Image
    description : str
        The transformation drawn, e.g. ``"crop 8%, rotate -4.1°, brightness 1.12, jpeg q62"``.
    """
    image = image.convert("RGB")
    w, h = image.size
    crop = rng.uniform(0.0, max_crop)
    left, top = rng.uniform(0, crop) * w, rng.uniform(0, crop) * h
    image = image.crop((int(left), int(top), int(w - (crop * w - left)),
                        int(h - (crop * h - top))))
    angle = rng.uniform(-max_rotation, max_rotation)
    edge = tuple(int(c) for c in np.asarray(image)[0, 0])
    image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=edge)
    factor = 1.0 + rng.uniform(-max_brightness, max_brightness)
    image = ImageEnhance.Brightness(image).enhance(factor)
    quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out, (f"crop {crop:.0%}, rotate {angle:+.1f}°, brightness {factor:.2f}, "
                 f"jpeg q{quality}")


def make_near_duplicates(
    files: Sequence[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
    n: int = 200,
    seed: int = 0,
    **strength: Any,
) -> pd.DataFrame:
    """Write ``n`` transformed copies of gallery photos (one per drawn photo) into ``dest``.

    Which photos are drawn, and how each is transformed, follow the photo's content (a seeded
    hash of its bytes), not its place in ``files``: a gallery that gained or lost a few photos
    keeps the other copies byte for byte, so their embeddings and keypoints are read back from
    the caches.

    Parameters
    ----------
    files : sequence of path-like
        The gallery photos.
    dest : path-like
        Output folder (created); files are ``dup_<digest>.jpg`` (the original's content). A
        rerun with the same arguments rewrites the same files; copies of photos no longer drawn
        are removed from it.
    n : int
        Queries to make (at most ``len(files)``; each original is used once).
    seed : int
        Which originals and which transformations.
    **strength
        Passed to :func:`perturb` (``max_crop``, ``max_rotation``, ...).

    Returns
    -------
    pandas.DataFrame
        Columns ``query`` (new file), ``original`` (its gallery photo), ``original_index``
        (position in ``files``) and ``transform``; in the order of ``files``.
    """
    files = [os.fspath(f) for f in files]
    if not files:
        raise DataError("No gallery photos to make near-duplicate queries from.")
    digests = []
    for f in files:
        try:
            digests.append(sha256_file(f))
        except OSError as exc:  # an unreadable original is never drawn
            log.warning("Skipped %s for the near-duplicate test: %s", f, exc)
            digests.append("")
    rank = [seeded_digest(d, seed) if d else "~" for d in digests]
    picks = sorted(sorted(range(len(files)), key=lambda i: (rank[i], i))[:min(int(n),
                                                                                 len(files))])
    dest = Path(dest)
    rows, written = [], set()
    for i in tqdm(picks, desc="near-duplicate queries", unit="img"):
        rng = np.random.default_rng(int(rank[i][:16], 16) if digests[i] else seed)
        try:
            copy, how = perturb(open_image(files[i]), rng, **strength)
        except Exception as exc:  # noqa: BLE001 - an unreadable original is skipped
            log.warning("Skipped %s for the near-duplicate test: %s", files[i], exc)
            continue
        target = dest / f"dup_{digests[i][:20]}.jpg"
        if target.name in written:  # the same photo twice in the gallery
            target = dest / f"dup_{digests[i][:20]}_{i}.jpg"
        with atomic_write(target, "wb") as fh:
            copy.save(fh, "JPEG", quality=95)
        written.add(target.name)
        rows.append({"query": str(target), "original": files[i], "original_index": int(i),
                     "transform": how})
    for stale in dest.glob("dup_*.jpg"):  # copies of photos this draw no longer holds
        if stale.name not in written:
            stale.unlink()
    return pd.DataFrame(rows, columns=["query", "original", "original_index", "transform"])


def duplicate_recall(indices: np.ndarray, original_index: Sequence[int],
                     ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Share of near-duplicate queries whose original is among their first k matches.

    Parameters
    ----------
    indices : ndarray of shape (m, >= max(ks))
        Ranked gallery rows per query (from :meth:`GalleryIndex.search`).
    original_index : sequence of int
        The gallery row of each query's original.
    ks : sequence of int

    Returns
    -------
    dict
        ``dup_recall_at_<k>`` for each k.
    """
    indices = np.asarray(indices)
    orig = np.asarray(original_index).reshape(-1, 1)
    return {f"dup_recall_at_{k}": float((indices[:, :k] == orig).any(axis=1).mean())
            for k in ks}


def duplicate_table(index: GalleryIndex, vectors: np.ndarray, duplicates: pd.DataFrame,
                    k: int = 5, misses_first: bool = True) -> pd.DataFrame:
    """Matches of near-duplicate queries with their originals, for :func:`plot_matches`.

    Parameters
    ----------
    index : GalleryIndex
        The gallery the originals belong to (``original_index`` are its rows).
    vectors : ndarray of shape (m, d)
        Embeddings of the first ``m`` rows of ``duplicates``.
    duplicates : pandas.DataFrame
        From :func:`make_near_duplicates`.
    k : int
    misses_first : bool
        Put the queries whose original is not the first match at the top (for figures).

    Returns
    -------
    pandas.DataFrame
        As :meth:`GalleryIndex.query_table`, plus ``original`` and ``original_rank`` (rank of
        the original among this query's k matches; 0 when it is not among them).
    """
    dups = duplicates.iloc[:len(vectors)]
    labels = [str(index.labels_[i]) for i in dups["original_index"]]
    table = index.query_table(vectors, k, query_paths=list(dups["query"]), query_labels=labels)
    table["original"] = table["query"].map(dups.set_index("query")["original"])
    hit_rank = table["rank"].where(table["path"] == table["original"], 0)
    table["original_rank"] = hit_rank.groupby(table["query"]).transform("max")
    if misses_first:
        table = table.sort_values("original_rank", key=lambda r: r == 1, kind="stable")
    return table.reset_index(drop=True)
