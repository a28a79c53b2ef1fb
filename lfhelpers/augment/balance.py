"""Class-balancing augmentation of the train split, offline (files) or online (Keras layers).

The tutorial raised every category below the mean count to about the mean with Keras's
``ImageDataGenerator`` (rotation 40 degrees, width and height shift 0.2, shear 0.2, zoom 0.2,
horizontal flip, fill mode ``nearest``) and wrote the new files next to the originals, before the
split. Here the same transforms are applied with OpenCV (:func:`cv2.warpAffine`) to the **train
split only** of a cleaned data set's manifest, and written to a folder of their own:

``<aug_dir>/<label>/<source stem>_aug<k>.jpg``
    the ``k``-th augmented copy of one clean train image;
``<aug_dir>/manifest.csv``
    one row per written file, with the clean manifest's columns (``split`` is ``train``,
    ``group`` and ``source`` are the original's) plus ``origin``: the original's manifest path;
``<aug_dir>/augment.json``
    what was asked for (sources, transforms, seed, target) and what came out; a rerun with the
    same inputs finds it and does nothing.

Validation and test images are never read, so nothing derived from them can reach training.
Every copy gets its own random generator derived from ``(seed, source path, k)``: the output
is byte-identical whatever the number of workers. :func:`keras_augmentation` offers the same
transforms as Keras 3 preprocessing layers, for augmenting online during training instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import imagehash
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from PIL import Image
from tqdm import tqdm

from lfhelpers.data.manifest import MANIFEST, MANIFEST_COLUMNS, read_manifest
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write, write_json

if TYPE_CHECKING:
    import keras
    import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

#: Name of the file that records how an augmented folder was made.
RECORD = "augment.json"
#: Columns of an augmented manifest: the clean manifest's plus ``origin``.
AUG_COLUMNS = [*MANIFEST_COLUMNS, "origin"]
#: Above this many copies per original a class is reported even when no cap is set.
WARN_COPIES = 10
_FORMAT_VERSION = 1
_BORDERS = {
    "nearest": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "wrap": cv2.BORDER_WRAP,
    "constant": cv2.BORDER_CONSTANT,
}


@dataclass(frozen=True)
class AugmentParams:
    """Random transform ranges; the defaults are the tutorial's ``ImageDataGenerator`` settings.

    Field names and units are those of the legacy ``ImageDataGenerator``, so
    ``ImageDataGenerator(**asdict(params))`` builds the equivalent legacy generator.

    Parameters
    ----------
    rotation_range : float
        Rotation angle drawn uniformly from ``[-rotation_range, rotation_range]`` degrees.
    width_shift_range, height_shift_range : float
        Shift drawn uniformly from ``[-r, r]`` times the image width (height).
    shear_range : float
        Shear **angle in degrees** drawn from ``[-shear_range, shear_range]``, as in the legacy
        class. The tutorial's 0.2 is therefore a very slight shear; pass about 11.3 for a shear
        factor of 0.2 (``tan(11.3 deg)``).
    zoom_range : float
        Zoom factors for x and y drawn independently from ``[1 - zoom_range, 1 + zoom_range]``
        (above 1 shows more of the scene, as in the legacy class).
    horizontal_flip : bool
        Mirror left-right with probability 0.5.
    fill_mode : {"nearest", "reflect", "wrap", "constant"}
        How pixels that come from outside the image are filled.
    cval : float
        Fill value for ``fill_mode="constant"``.
    """

    rotation_range: float = 40.0
    width_shift_range: float = 0.2
    height_shift_range: float = 0.2
    shear_range: float = 0.2
    zoom_range: float = 0.2
    horizontal_flip: bool = True
    fill_mode: str = "nearest"
    cval: float = 0.0

    def __post_init__(self) -> None:
        if self.fill_mode not in _BORDERS:
            raise ConfigError(f"fill_mode must be one of {sorted(_BORDERS)}, "
                              f"not {self.fill_mode!r}.")
        for name in ("rotation_range", "width_shift_range", "height_shift_range",
                     "shear_range", "zoom_range"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}.")
        if self.zoom_range >= 1:
            raise ConfigError(f"zoom_range must be below 1, not {self.zoom_range}.")


@dataclass
class BalancePlan:
    """How many images each class of the train split gets.

    Attributes
    ----------
    target : int
        Images per class aimed at.
    summary : pandas.DataFrame
        Index ``category``; columns ``before`` (clean train images), ``added`` (planned copies),
        ``after``, ``copies_per_image`` (most copies made of one original) and ``capped``
        (True where ``max_copies`` stopped the class short of the target).
    sources : pandas.DataFrame
        The train rows of the manifest, with an added ``order`` column (seeded tie-break).
    """

    target: int
    summary: pd.DataFrame
    sources: pd.DataFrame
    max_copies: int | None = None


@dataclass
class AugmentResult:
    """What :func:`balance_train` produced.

    Attributes
    ----------
    aug_dir : pathlib.Path
        The augmented folder.
    target : int
        Images per class aimed at.
    summary : pandas.DataFrame
        Index ``category``; ``before``, ``added``, ``after``, ``copies_per_image``, ``capped``,
        counted from the files actually written.
    manifest : pandas.DataFrame
        The augmented manifest (``file`` = absolute path).
    skipped : list of (str, str)
        ``(manifest path, reason)`` of originals that could not be read.
    reused : bool
        True when the folder already matched and nothing was written.
    """

    aug_dir: Path
    target: int
    summary: pd.DataFrame
    manifest: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reused: bool = False

    def before(self) -> dict[str, int]:
        """Train images per class before augmentation, ``{label: count}``."""
        return {str(k): int(v) for k, v in self.summary["before"].items()}

    def after(self) -> dict[str, int]:
        """Train images per class after augmentation (clean + augmented), ``{label: count}``."""
        return {str(k): int(v) for k, v in self.summary["after"].items()}


# --------------------------------------------------------------------------- transforms


def image_rng(seed: int, source: str, k: int) -> np.random.Generator:
    """Return the random generator of the ``k``-th copy of ``source``.

    Derived from a hash of ``(seed, source, k)``, so it does not depend on the order in which
    images are processed or on the number of workers.

    Parameters
    ----------
    seed : int
        Run seed.
    source : str
        The original's manifest path.
    k : int
        Copy number.

    Returns
    -------
    numpy.random.Generator
    """
    digest = hashlib.sha256(f"{int(seed)}|{source}|{int(k)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def random_transform(
    shape: tuple[int, ...], rng: np.random.Generator, params: AugmentParams | None = None
) -> tuple[np.ndarray, bool]:
    """Draw one random affine transform for an image of ``shape``.

    The composition is the legacy ``ImageDataGenerator``'s: rotation, shift, shear and zoom
    about the image centre, then an optional horizontal flip.

    Parameters
    ----------
    shape : tuple
        ``(height, width[, channels])``.
    rng : numpy.random.Generator
        Source of randomness (see :func:`image_rng`). Every range is always drawn, so that
        setting one range to 0 does not change the others' draws.
    params : AugmentParams, optional
        Ranges; the tutorial's by default.

    Returns
    -------
    matrix : numpy.ndarray
        ``(2, 3)`` matrix mapping output pixel ``(x, y)`` to input pixel coordinates.
    flip : bool
        Whether to mirror the result left-right.
    """
    p = params or AugmentParams()
    h, w = shape[:2]
    theta = np.deg2rad(rng.uniform(-p.rotation_range, p.rotation_range))
    tx = rng.uniform(-p.width_shift_range, p.width_shift_range) * w
    ty = rng.uniform(-p.height_shift_range, p.height_shift_range) * h
    shear = np.deg2rad(rng.uniform(-p.shear_range, p.shear_range))
    zx, zy = rng.uniform(1 - p.zoom_range, 1 + p.zoom_range, 2)
    flip = bool(rng.random() < 0.5) and p.horizontal_flip
    cx, cy = (w - 1) / 2, (h - 1) / 2
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                         [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    to_centre = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
    from_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    matrix = to_centre @ rotation @ shift @ shearing @ zoom @ from_centre
    return matrix[:2], flip


def augment_array(
    image: np.ndarray, rng: np.random.Generator, params: AugmentParams | None = None
) -> np.ndarray:
    """Apply one random transform to an image array.

    Parameters
    ----------
    image : numpy.ndarray
        ``(height, width[, channels])`` uint8 image.
    rng : numpy.random.Generator
        Source of randomness (see :func:`image_rng`).
    params : AugmentParams, optional
        Ranges; the tutorial's by default.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``image``.
    """
    p = params or AugmentParams()
    matrix, flip = random_transform(image.shape, rng, p)
    h, w = image.shape[:2]
    if flip:  # mirror the output grid inside the same warp: x -> w - 1 - x
        matrix = matrix @ np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=_BORDERS[p.fill_mode], borderValue=(p.cval,) * 4)
    return out.reshape(image.shape)


def keras_augmentation(
    params: AugmentParams | None = None, seed: int | None = None, name: str = "augmentation"
) -> keras.Sequential:
    """Return the same random transforms as Keras 3 preprocessing layers, for online use.

    Put it first in a model (it is active only in training) or map it over a ``tf.data``
    pipeline. Layers whose range is 0 are left out; ``RandomShear`` is used when the installed
    Keras has it (shear angle converted to its factor, ``tan(angle)``). Keras samples x and y
    zoom independently as the legacy class did; its composition order differs slightly from
    :func:`augment_array`.

    Parameters
    ----------
    params : AugmentParams, optional
        Ranges; the tutorial's by default.
    seed : int, optional
        Seed of the layers (layer ``i`` gets ``seed + i``).
    name : str
        Name of the returned model.

    Returns
    -------
    keras.Sequential
        Input: a batch of images (any size, channels last); output: same shape.
    """
    import keras

    p = params or AugmentParams()
    fill = {"fill_mode": p.fill_mode, "fill_value": float(p.cval)}
    layers: list[keras.layers.Layer] = []

    def seed_of() -> int | None:
        return None if seed is None else int(seed) + len(layers)

    if p.rotation_range:
        layers.append(keras.layers.RandomRotation(p.rotation_range / 360.0, seed=seed_of(),
                                                  **fill))
    if p.width_shift_range or p.height_shift_range:
        layers.append(keras.layers.RandomTranslation(p.height_shift_range, p.width_shift_range,
                                                     seed=seed_of(), **fill))
    if p.shear_range and hasattr(keras.layers, "RandomShear"):
        factor = float(np.tan(np.deg2rad(p.shear_range)))
        layers.append(keras.layers.RandomShear(x_factor=factor, seed=seed_of(), **fill))
    elif p.shear_range:
        log.info("This Keras has no RandomShear layer; online augmentation leaves shear out.")
    if p.zoom_range:
        layers.append(keras.layers.RandomZoom(p.zoom_range, p.zoom_range, seed=seed_of(),
                                              **fill))
    if p.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed_of()))
    return keras.Sequential(layers, name=name)


# --------------------------------------------------------------------------- planning


def resolve_target(counts: pd.Series | dict[str, int], target: str | int | float = "mean") -> int:
    """Turn a target mode into a number of images per class.

    Parameters
    ----------
    counts : pandas.Series or dict
        Train images per class.
    target : {"mean", "max"} or int
        ``"mean"``: the mean class count, rounded (the tutorial's choice); ``"max"``: the
        largest class; a number: that many images per class.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        For an unknown mode or a number below 1.
    DataError
        When ``counts`` is empty.
    """
    counts = pd.Series(counts, dtype="int64")
    if counts.empty:
        raise DataError("The train split is empty: nothing to balance. Check the manifest.")
    if isinstance(target, str) and target.strip().lower() in ("mean", "max"):
        mode = target.strip().lower()
        return int(round(counts.mean())) if mode == "mean" else int(counts.max())
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ConfigError(f"target must be 'mean', 'max' or a number of images per class, "
                          f"not {target!r}.") from None
    if isinstance(target, bool) or not math.isfinite(value) or value < 1:
        raise ConfigError(f"target must be 'mean', 'max' or a number >= 1, not {target!r}.")
    return int(round(value))


def plan_balance(
    manifest: pd.DataFrame,
    target: str | int | float = "mean",
    max_copies: int | None = 10,
    seed: int = 0,
) -> BalancePlan:
    """Decide how many augmented copies each class of the train split gets.

    A class below the target gets ``target - before`` new images, spread as evenly as possible
    over its originals (which ones get one more is seeded). Classes at or above the target are
    left alone. When a class would need more than ``max_copies`` copies of each original, it is
    capped there and a warning says so (a class of 2 images should not silently become hundreds
    of near-copies of them).

    Parameters
    ----------
    manifest : pandas.DataFrame
        A clean manifest (:func:`lfhelpers.dataset.read_manifest`); only ``split == "train"``
        rows are used.
    target : {"mean", "max"} or int
        See :func:`resolve_target`.
    max_copies : int or None
        Most augmented copies of one original; ``None`` for no cap (a warning is still logged
        above :data:`WARN_COPIES` copies per original).
    seed : int
        Seed of the tie-break between originals.

    Returns
    -------
    BalancePlan
    """
    if max_copies is not None and int(max_copies) < 0:
        raise ConfigError(f"max_copies must be >= 0 or None, not {max_copies}.")
    train = manifest[manifest["split"] == "train"].sort_values(["label", "path"])
    if train.empty:
        raise DataError("The manifest has no train rows: nothing to balance. Run the split of "
                        "notebook 01 first.")
    train = train.reset_index(drop=True)
    counts = train["label"].value_counts().sort_index()
    goal = resolve_target(counts, target)
    order = np.empty(len(train), dtype=np.int64)
    rows = []
    for label, idx in train.groupby("label", sort=True).indices.items():
        order[idx] = _label_rng(seed, label).permutation(len(idx))
        before = len(idx)
        need = max(goal - before, 0)
        wanted = math.ceil(need / before)
        capped = max_copies is not None and wanted > int(max_copies)
        added = min(need, before * int(max_copies)) if capped else need
        if capped:
            log.warning("Class %r has %d train images; reaching %d would take %d copies of each. "
                        "Capped at max_copies=%d copies per image: %d images. Collect more images "
                        "or raise max_copies.", label, before, goal, wanted, max_copies,
                        before + added)
        elif wanted > WARN_COPIES:
            log.warning("Class %r has %d train images and gets %d copies of each to reach %d; "
                        "it will be mostly near-copies.", label, before, wanted, goal)
        rows.append({"category": label, "before": before, "added": added,
                     "after": before + added, "copies_per_image": math.ceil(added / before),
                     "capped": capped})
    summary = pd.DataFrame(rows).set_index("category")
    train["order"] = order
    return BalancePlan(target=goal, summary=summary, sources=train,
                       max_copies=None if max_copies is None else int(max_copies))


def _label_rng(seed: int, label: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{int(seed)}|plan|{label}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _allocate(sources: pd.DataFrame, added: int) -> dict[str, int]:
    """Spread ``added`` copies over ``sources`` (seeded ``order``): {path: copies}."""
    if sources.empty or added <= 0:
        return {}
    ranked = sources.sort_values("order")["path"].tolist()
    base, extra = divmod(added, len(ranked))
    return {path: base + (1 if i < extra else 0) for i, path in enumerate(ranked)}


# --------------------------------------------------------------------------- writing


def _out_stems(jobs: pd.DataFrame) -> dict[str, str]:
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
        with Image.open(file) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return path, [], f"{type(exc).__name__}: {exc}"
    array = np.asarray(rgb)
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

    Returns
    -------
    rows : pandas.DataFrame
        One manifest row per written file (columns :data:`AUG_COLUMNS`), sorted by path.
    skipped : list of (str, str)
        ``(path, reason)`` of originals that could not be read; each is logged as a warning.
    """
    params = params or AugmentParams()
    stems = dict(zip(jobs["path"], jobs["stem"], strict=True)) if "stem" in jobs else \
        _out_stems(jobs)
    jobs = jobs[jobs["n_copies"] > 0]
    tasks = []
    for row in jobs.itertuples(index=False):
        start = int(getattr(row, "k_start", 0))
        extra = {"group": getattr(row, "group", ""), "source": getattr(row, "source", row.path)}
        tasks.append(delayed(_augment_source)(
            str(row.file), row.path, row.label, stems[row.path],
            list(range(start, start + int(row.n_copies))), str(aug_dir), params, int(seed),
            int(quality), extra, n_jobs != 1))
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    if tasks:
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(tasks)
        for path, written, error in tqdm(results, total=len(tasks), desc="augment",
                                         unit="image", disable=not progress):
            if error is not None:
                log.warning("Skipped %s: cannot read it (%s).", path, error)
                skipped.append((path, error))
            rows.extend(written)
    frame = pd.DataFrame(rows, columns=AUG_COLUMNS)
    frame = frame.sort_values("path", kind="stable").reset_index(drop=True)
    return frame, sorted(skipped)


def _fingerprint(plan: BalancePlan, params: AugmentParams, seed: int, quality: int) -> str:
    sources = plan.sources[["path", "label", "sha256"]].astype(str).values.tolist()
    payload = {"version": _FORMAT_VERSION, "sources": sources, "params": asdict(params),
               "seed": int(seed), "target": plan.target, "max_copies": plan.max_copies,
               "quality": int(quality)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _check_aug_dir(clean_dir: Path, aug_dir: Path) -> None:
    if aug_dir.resolve() == clean_dir.resolve():
        raise ConfigError(f"aug_dir {aug_dir} is the clean folder itself; augmented images go "
                          "into a folder of their own, e.g. data/augmented/<name>.")
    if (aug_dir / MANIFEST).exists() and not (aug_dir / RECORD).exists():
        raise ConfigError(f"{aug_dir} holds a {MANIFEST} that augmentation did not write (no "
                          f"{RECORD}); it may be a clean data set. Choose another aug_dir.")


def _reuse(aug_dir: Path, fingerprint: str) -> dict | None:
    """Return the saved record when ``aug_dir`` already holds this exact output."""
    try:
        record = json.loads((aug_dir / RECORD).read_text(encoding="utf-8"))
        if record.get("fingerprint") != fingerprint:
            return None
        rows = read_manifest(aug_dir, absolute=False)
    except (OSError, ValueError, DataError):
        return None
    for path, size in zip(rows["path"], rows["bytes"], strict=True):
        file = aug_dir / path
        if not file.is_file() or file.stat().st_size != int(size):
            return None
    return record


def _summary(plan: BalancePlan, rows: pd.DataFrame) -> pd.DataFrame:
    summary = plan.summary[["before"]].copy()
    added = rows.groupby("label").size() if not rows.empty else pd.Series(dtype="int64")
    per_image = (rows.groupby(["label", "origin"]).size().groupby(level=0).max()
                 if not rows.empty else pd.Series(dtype="int64"))
    summary["added"] = added.reindex(summary.index, fill_value=0).astype(int)
    summary["after"] = summary["before"] + summary["added"]
    summary["copies_per_image"] = per_image.reindex(summary.index, fill_value=0).astype(int)
    summary["capped"] = plan.summary["capped"]
    return summary


def default_aug_dir(clean_dir: str | os.PathLike[str]) -> Path:
    """Where augmented images of ``clean_dir`` go by default.

    ``data/clean/<name>`` gives ``data/augmented/<name>``; any other folder ``X`` gives
    ``X_augmented`` beside it.
    """
    clean_dir = Path(clean_dir)
    if clean_dir.parent.name == "clean":
        return clean_dir.parent.parent / "augmented" / clean_dir.name
    return clean_dir.parent / f"{clean_dir.name}_augmented"


def balance_train(
    clean_dir: str | os.PathLike[str],
    aug_dir: str | os.PathLike[str] | None = None,
    target: str | int | float = "mean",
    max_copies: int | None = 10,
    params: AugmentParams | None = None,
    seed: int = 0,
    n_jobs: int = -1,
    quality: int = 95,
    progress: bool = True,
) -> AugmentResult:
    """Balance the train split of a clean data set by writing augmented copies.

    Only ``split == "train"`` rows of ``<clean_dir>/manifest.csv`` are read; the clean folder is
    not modified. Originals that cannot be read are skipped with a logged reason and the other
    originals of their class make up for them. A rerun with the same sources, transforms, seed,
    target and cap finds ``augment.json`` and returns at once; otherwise the folder is rewritten
    and files of the previous run that are no longer wanted are removed.

    Parameters
    ----------
    clean_dir : path-like
        Folder holding the clean manifest.
    aug_dir : path-like, optional
        Output folder; :func:`default_aug_dir` when omitted or empty.
    target : {"mean", "max"} or int
        Images per class aimed at (see :func:`resolve_target`).
    max_copies : int or None
        Most augmented copies of one original (see :func:`plan_balance`).
    params : AugmentParams, optional
        Transform ranges; the tutorial's by default.
    seed : int
        Seed; the same seed gives byte-identical files.
    n_jobs : int
        joblib workers (``-1``: all cores).
    quality : int
        JPEG quality.
    progress : bool
        Show a progress bar.

    Returns
    -------
    AugmentResult

    Raises
    ------
    ConfigError
        When ``aug_dir`` is the clean folder or another data set's folder, or an option is
        invalid.
    DataError
        When the manifest is missing or has no train rows.
    """
    clean_dir = Path(clean_dir)
    aug_dir = Path(aug_dir) if aug_dir else default_aug_dir(clean_dir)
    params = params or AugmentParams()
    _check_aug_dir(clean_dir, aug_dir)
    plan = plan_balance(read_manifest(clean_dir), target, max_copies, seed)
    fingerprint = _fingerprint(plan, params, seed, quality)
    record = _reuse(aug_dir, fingerprint)
    if record is not None:
        log.info("%s already holds this augmentation; nothing to do.", aug_dir)
        rows = read_manifest(aug_dir)
        skipped = [tuple(s) for s in record.get("skipped", [])]
        return AugmentResult(aug_dir, plan.target, _summary(plan, rows), rows, skipped, True)

    previous = set()
    if (aug_dir / MANIFEST).exists():
        previous = set(read_manifest(aug_dir, absolute=False)["path"])
        (aug_dir / RECORD).unlink(missing_ok=True)
    aug_dir.mkdir(parents=True, exist_ok=True)
    rows, skipped = _write_plan(plan, aug_dir, params, seed, n_jobs, quality, progress)
    _remove_stale(aug_dir, previous, set(rows["path"]))
    with atomic_write(aug_dir / MANIFEST, newline="") as fh:
        rows[AUG_COLUMNS].to_csv(fh, index=False)
    summary = _summary(plan, rows)
    write_json(aug_dir / RECORD, {
        "fingerprint": fingerprint, "clean_dir": os.path.relpath(clean_dir, aug_dir),
        "target": plan.target, "max_copies": plan.max_copies, "seed": int(seed),
        "params": asdict(params), "quality": int(quality),
        "before": {str(k): int(v) for k, v in summary["before"].items()},
        "after": {str(k): int(v) for k, v in summary["after"].items()},
        "skipped": [list(s) for s in skipped]})
    rows = read_manifest(aug_dir)
    return AugmentResult(aug_dir, plan.target, summary, rows, skipped, False)


def _remove_stale(aug_dir: Path, previous: set[str], wanted: set[str]) -> None:
    """Delete files of an earlier (or interrupted) run that the new manifest does not list."""
    ours = {p.relative_to(aug_dir).as_posix() for p in aug_dir.glob("*/*_aug*.jpg")}
    ours |= {p.relative_to(aug_dir).as_posix() for p in aug_dir.glob("*/.*.tmp")}
    for stale in sorted((previous | ours) - wanted):
        (aug_dir / stale).unlink(missing_ok=True)


def _write_plan(
    plan: BalancePlan, aug_dir: Path, params: AugmentParams, seed: int, n_jobs: int,
    quality: int, progress: bool,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Write the planned copies; originals that fail are replaced by their classmates."""
    sources = plan.sources.assign(stem=plan.sources["path"].map(_out_stems(plan.sources)))
    done: dict[str, int] = {}
    bad: dict[str, str] = {}
    frames = []
    for _ in range(len(sources) + 1):
        jobs = []
        for label, wanted in plan.summary["added"].items():
            mates = sources[(sources["label"] == label) & ~sources["path"].isin(list(bad))]
            if plan.max_copies is not None:
                wanted = min(wanted, len(mates) * plan.max_copies)
            for path, count in _allocate(mates, int(wanted)).items():
                if count > done.get(path, 0):
                    jobs.append({"path": path, "k_start": done.get(path, 0),
                                 "n_copies": count - done.get(path, 0)})
        if not jobs:
            break
        todo = pd.DataFrame(jobs).merge(sources, on="path")
        rows, skipped = augment_sources(todo, aug_dir, params, seed, n_jobs, quality, progress)
        frames.append(rows)
        bad.update(skipped)
        for path, count in zip(todo["path"], todo["n_copies"], strict=True):
            if path not in bad:
                done[path] = done.get(path, 0) + int(count)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=AUG_COLUMNS)
    return rows.sort_values("path", kind="stable").reset_index(drop=True), sorted(bad.items())


# --------------------------------------------------------------------------- using the output


def read_augmented(aug_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read an augmented folder's manifest (``file`` = absolute path).

    Parameters
    ----------
    aug_dir : path-like
        Folder written by :func:`balance_train`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`AUG_COLUMNS` plus ``file``.
    """
    return read_manifest(aug_dir)


def origin_splits(clean_manifest: pd.DataFrame, augmented: pd.DataFrame) -> pd.Series:
    """Count augmented images by the split of the original they were made from.

    Parameters
    ----------
    clean_manifest : pandas.DataFrame
        The clean manifest (every split).
    augmented : pandas.DataFrame
        An augmented manifest.

    Returns
    -------
    pandas.Series
        Index: split (``train``, ``val``, ``test``, ``excluded``, ``missing`` for an origin not
        in the manifest); only ``train`` may be non-zero for a sound output.
    """
    split_of = dict(zip(clean_manifest["path"], clean_manifest["split"], strict=True))
    splits = [split_of.get(o, "missing") for o in augmented["origin"]]
    index = ["train", "val", "test", "excluded", "missing"]
    return pd.Series(splits, dtype=object).value_counts().reindex(index, fill_value=0) \
        .rename("augmented images").rename_axis("origin split")


def train_with_augmented(
    clean_dir: str | os.PathLike[str], aug_dir: str | os.PathLike[str] | None
) -> pd.DataFrame:
    """Return the clean train rows plus the augmented rows, for training a classifier.

    Parameters
    ----------
    clean_dir : path-like
        Clean data set folder.
    aug_dir : path-like or None
        Augmented folder; ``None`` or empty gives the clean train rows only.

    Returns
    -------
    pandas.DataFrame
        Manifest columns plus ``file`` (absolute), ``origin`` (empty for clean rows) and
        ``augmented`` (bool).

    Raises
    ------
    DataError
        When an augmented image was made from an image that is not in the clean train split
        (a leak of validation or test images into training): re-run the augmentation.
    """
    manifest = read_manifest(clean_dir)
    train = manifest[manifest["split"] == "train"].assign(origin="", augmented=False)
    if not aug_dir:
        return train.reset_index(drop=True)
    augmented = read_augmented(aug_dir)
    where = origin_splits(manifest, augmented)
    leaked = int(where.drop("train").sum())
    if leaked:
        raise DataError(f"{leaked} augmented images in {aug_dir} were not made from this clean "
                        f"train split ({where.to_dict()}). Re-run balance_train on {clean_dir}.")
    return pd.concat([train, augmented.assign(augmented=True)], ignore_index=True)


def comparison_grid(
    augmented: pd.DataFrame,
    clean_dir: str | os.PathLike[str],
    n_sources: int = 4,
    per_source: int = 4,
    seed: int = 0,
) -> plt.Figure:
    """Show originals beside their augmented copies, one original per row.

    Parameters
    ----------
    augmented : pandas.DataFrame
        An augmented manifest.
    clean_dir : path-like
        The clean folder the originals are in.
    n_sources : int
        Rows: originals shown, taken from the classes in turn (those with the most copies
        first).
    per_source : int
        Most augmented copies shown next to each original; when originals have fewer copies,
        several originals share a row.
    seed : int
        Which originals are picked.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from lfhelpers.plots import image_grid

    if augmented.empty:
        return image_grid([], suptitle="No augmented images (every class was at the target)")
    rng = np.random.default_rng(seed)
    queues = []
    for _, group in augmented.groupby("label", sort=True):
        copies = group.groupby("origin").size()
        ranked = sorted(copies.index, key=lambda o: (-copies[o], o))
        most = [ranked[i] for i in rng.permutation(len(ranked))
                if copies[ranked[i]] == copies.max()]
        queues.append(list(dict.fromkeys(most + ranked)))
    picks: list[str] = []
    for depth in range(max(len(q) for q in queues)):
        for queue in queues:
            if len(picks) < n_sources and depth < len(queue):
                picks.append(queue[depth])
    shown = min(per_source, max(int((augmented["origin"] == o).sum()) for o in picks))
    paths: list[Path | str] = []
    titles: list[str] = []
    for origin in picks:
        copies = augmented[augmented["origin"] == origin].head(shown)
        paths += [Path(clean_dir) / origin] + [Path(f) for f in copies["file"]]
        titles += [f"{copies['label'].iloc[0]}: original"] + [Path(p).stem.rsplit("_", 1)[-1]
                                                              for p in copies["path"]]
        paths += [""] * (shown - len(copies))
        titles += ["(no more copies)"] * (shown - len(copies))
    per_row = max(1, 6 // (shown + 1))
    return image_grid(paths, titles, ncols=per_row * (shown + 1), size=1.8,
                      suptitle="Originals (left) and augmented copies")
