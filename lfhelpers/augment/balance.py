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
is byte-identical whatever the number of workers. A class may get its own transforms
(``no_flip_classes``, ``class_params``), e.g. no mirroring for ID cards whose text would read
backwards. The transforms themselves are in :mod:`lfhelpers.augment.transforms`; reading the
output back in :mod:`lfhelpers.augment.output`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lfhelpers.augment.transforms import AugmentParams, params_by_class
from lfhelpers.augment.write import AUG_COLUMNS, augment_sources, out_stems
from lfhelpers.data.manifest import MANIFEST, read_manifest
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write, write_json

log = logging.getLogger(__name__)

#: Name of the file that records how an augmented folder was made.
RECORD = "augment.json"
#: Above this many copies per original a class is reported even when no cap is set.
WARN_COPIES = 10
_FORMAT_VERSION = 1


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
        A clean manifest (:func:`lfhelpers.data.read_manifest`); only ``split == "train"``
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


def _fingerprint(plan: BalancePlan, params: AugmentParams, own: Mapping[str, AugmentParams],
                 seed: int, quality: int) -> str:
    sources = plan.sources[["path", "label", "sha256"]].astype(str).values.tolist()
    payload = {"version": _FORMAT_VERSION, "sources": sources, "params": asdict(params),
               "seed": int(seed), "target": plan.target, "max_copies": plan.max_copies,
               "quality": int(quality)}
    if own:  # absent when no class has its own ranges: earlier outputs stay valid
        payload["class_params"] = {label: asdict(p) for label, p in sorted(own.items())}
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
    no_flip_classes: Iterable[str] = (),
    class_params: Mapping[str, AugmentParams] | None = None,
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
    no_flip_classes : iterable of str
        Classes whose copies are never mirrored (e.g. ``["card"]``: ID cards whose text would
        read backwards); their other transforms stay as drawn.
    class_params : mapping of str to AugmentParams, optional
        Transform ranges of their own for some classes (see
        :func:`~lfhelpers.augment.transforms.params_by_class`).

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
    own = {label: p for label, p in params_by_class(
        plan.summary.index, params, no_flip_classes=no_flip_classes,
        class_params=class_params).items() if p != params}
    fingerprint = _fingerprint(plan, params, own, seed, quality)
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
    rows, skipped = _write_plan(plan, aug_dir, params, own, seed, n_jobs, quality, progress)
    _remove_stale(aug_dir, previous, set(rows["path"]))
    with atomic_write(aug_dir / MANIFEST, newline="") as fh:
        rows[AUG_COLUMNS].to_csv(fh, index=False)
    summary = _summary(plan, rows)
    write_json(aug_dir / RECORD, {
        "fingerprint": fingerprint, "clean_dir": os.path.relpath(clean_dir, aug_dir),
        "target": plan.target, "max_copies": plan.max_copies, "seed": int(seed),
        "params": asdict(params), "quality": int(quality),
        "class_params": {label: asdict(p) for label, p in sorted(own.items())},
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
    plan: BalancePlan, aug_dir: Path, params: AugmentParams,
    own: Mapping[str, AugmentParams], seed: int, n_jobs: int, quality: int, progress: bool,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Write the planned copies; originals that fail are replaced by their classmates."""
    sources = plan.sources.assign(stem=plan.sources["path"].map(out_stems(plan.sources)))
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
        rows, skipped = augment_sources(todo, aug_dir, params, seed, n_jobs, quality, progress,
                                        class_params=own)
        frames.append(rows)
        bad.update(skipped)
        for path, count in zip(todo["path"], todo["n_copies"], strict=True):
            if path not in bad:
                done[path] = done.get(path, 0) + int(count)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=AUG_COLUMNS)
    return rows.sort_values("path", kind="stable").reset_index(drop=True), sorted(bad.items())
