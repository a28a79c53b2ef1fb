"""Using an augmented folder: reading it back, checking its origins, showing it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lfhelpers.data.manifest import read_manifest
from lfhelpers.errors import DataError

if TYPE_CHECKING:
    import matplotlib.pyplot as plt


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
