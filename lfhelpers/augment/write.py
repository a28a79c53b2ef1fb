"""Writing augmented copies of original images, in parallel and reproducibly.

Originals are read through the one image loader (:func:`lfhelpers.images.load_array`: EXIF
orientation, RGB mode rules, the pixel limit), as the models read them. Every copy gets its own
random generator derived from ``(seed, source path, k)``
(:func:`~lfhelpers.augment.transforms.image_rng`): the output is byte-identical whatever the
number of workers.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import imagehash
import pandas as pd
from joblib import Parallel, delayed
from PIL import Image
from tqdm import tqdm

from lfhelpers.augment.transforms import AugmentParams, augment_array, image_rng
from lfhelpers.data.manifest import MANIFEST_COLUMNS
from lfhelpers.errors import DataError
from lfhelpers.images import load_array

log = logging.getLogger(__name__)

#: Columns of an augmented manifest: the clean manifest's plus ``origin``.
AUG_COLUMNS = [*MANIFEST_COLUMNS, "origin"]


def out_stems(jobs: pd.DataFrame) -> dict[str, str]:
    """Output stem per source path: its file stem, made unique within its label's folder."""
    stems = {path: Path(path).stem for path in jobs["path"]}
    seen = pd.Series([(label, stems[path]) for path, label in zip(jobs["path"], jobs["label"],
                                                                   strict=True)])
    clash = set(seen[seen.duplicated(keep=False)])
    for path, label in zip(jobs["path"], jobs["label"], strict=True):
        if (label, stems[path]) in clash:
            stems[path] = f"{stems[path]}_{hashlib.sha1(path.encode()).hexdigest()[:6]}"
    return stems


def _augment_source(
    file: str, path: str, label: str, stem: str, ks: list[int], aug_dir: str,
    params: AugmentParams, seed: int, quality: int, extra: dict[str, Any], in_worker: bool,
) -> tuple[str, list[dict], str | None]:
    """Worker: read one original, write its copies ``ks``; return (path, rows, error)."""
    if in_worker:  # parallelism is over images: one OpenCV thread per worker process
        cv2.setNumThreads(1)
    try:
        array = load_array(file)
    except DataError as exc:
        return path, [], str(exc)
    folder = Path(aug_dir) / label
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in ks:
        out = Image.fromarray(augment_array(array, image_rng(seed, path, k), params))
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=quality)
        data = buf.getvalue()
        name = f"{stem}_aug{k}.jpg"
        target = folder / name
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, target)
        rows.append({"path": f"{label}/{name}", "label": label, "split": "train",
                     "sha256": hashlib.sha256(data).hexdigest(),
                     "phash": str(imagehash.phash(out)), "width": out.width,
                     "height": out.height, "bytes": len(data), "origin": path, **extra})
    return path, rows, None


def augment_sources(
    jobs: pd.DataFrame,
    aug_dir: str | os.PathLike[str],
    params: AugmentParams | None = None,
    seed: int = 0,
    n_jobs: int = -1,
    quality: int = 95,
    progress: bool = True,
    class_params: Mapping[str, AugmentParams] | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Write augmented copies of the given originals, in parallel.

    Parameters
    ----------
    jobs : pandas.DataFrame
        One row per original: ``path`` (its manifest path, the key of its randomness),
        ``label``, ``file`` (readable path), ``n_copies``; optional ``k_start`` (first copy
        number, default 0), ``stem`` (output file stem; default: the original's, made unique
        within its label), ``group`` and ``source`` (copied to the output rows).
    aug_dir : path-like
        Output folder; files go to ``<aug_dir>/<label>/<stem>_aug<k>.jpg``.
    params : AugmentParams, optional
        Transform ranges; the tutorial's by default.
    seed : int
        Run seed.
    n_jobs : int
        joblib workers (``-1``: all cores). The output does not depend on it.
    quality : int
        JPEG quality of the written files.
    progress : bool
        Show a tqdm progress bar.
    class_params : mapping of str to AugmentParams, optional
        Ranges of their own for some labels (see
        :func:`~lfhelpers.augment.transforms.params_by_class`); ``params`` for the others.

    Returns
    -------
    rows : pandas.DataFrame
        One manifest row per written file (columns :data:`AUG_COLUMNS`), sorted by path.
    skipped : list of (str, str)
        ``(path, reason)`` of originals that could not be read; each is logged as a warning.
    """
    params = params or AugmentParams()
    stems = dict(zip(jobs["path"], jobs["stem"], strict=True)) if "stem" in jobs else \
        out_stems(jobs)
    jobs = jobs[jobs["n_copies"] > 0]
    tasks = []
    for row in jobs.itertuples(index=False):
        start = int(getattr(row, "k_start", 0))
        extra = {"group": getattr(row, "group", ""), "source": getattr(row, "source", row.path)}
        tasks.append(delayed(_augment_source)(
            str(row.file), row.path, row.label, stems[row.path],
            list(range(start, start + int(row.n_copies))), str(aug_dir),
            (class_params or {}).get(row.label, params), int(seed),
            int(quality), extra, n_jobs != 1))
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    if tasks:
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(tasks)
        for path, written, error in tqdm(results, total=len(tasks), desc="augment",
                                         unit="image", disable=not progress):
            if error is not None:
                log.warning("Skipped %s: cannot read it: %s", path, error)
                skipped.append((path, error))
            rows.extend(written)
    frame = pd.DataFrame(rows, columns=AUG_COLUMNS)
    frame = frame.sort_values("path", kind="stable").reset_index(drop=True)
    return frame, sorted(skipped)
