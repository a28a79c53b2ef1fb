"""The manifest of a cleaned data set: ``<clean_dir>/manifest.csv`` and its image paths.

The manifest is written by :mod:`lfhelpers.clean` and :mod:`lfhelpers.split`. Columns:

``path``      image path relative to the clean folder (POSIX separators), e.g. ``key/key_001.jpg``
``label``     class label (any Unicode)
``split``     ``train``, ``val``, ``test`` or ``excluded`` (class too small to split)
``sha256``    SHA-256 of the clean file's bytes
``phash``     64-bit perceptual hash (16 hex digits, :func:`imagehash.phash`)
``group``     near-duplicate group id; a group never straddles two splits
``width``, ``height``, ``bytes``  of the clean file
``source``    the raw file it came from, relative to the raw folder
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lfhelpers.errors import DataError
from lfhelpers.fsutil import atomic_write

MANIFEST = "manifest.csv"
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["path", "label", "split", "sha256", "phash", "group", "width", "height",
                    "bytes", "source"]


def manifest_path(clean_dir: str | os.PathLike[str]) -> Path:
    """Return ``<clean_dir>/manifest.csv``."""
    return Path(clean_dir) / MANIFEST


def read_manifest(
    clean_dir: str | os.PathLike[str],
    splits: Iterable[str] | None = None,
    absolute: bool = True,
) -> pd.DataFrame:
    """Read the manifest of a cleaned data set.

    Parameters
    ----------
    clean_dir : path-like
        Folder holding ``manifest.csv`` and the clean class folders.
    splits : iterable of str, optional
        Keep only these splits (e.g. ``["train"]``). Default: every row, ``excluded`` included.
    absolute : bool
        Add a column ``file`` with the absolute path of each image.

    Returns
    -------
    pandas.DataFrame
        One row per clean image, columns as in the module docstring (``label`` kept as str).

    Raises
    ------
    DataError
        When the manifest is missing; the message says how to make it.
    """
    path = manifest_path(clean_dir)
    if not path.exists():
        raise DataError(
            f"No manifest at {path}. Run notebook 01 or `python -m lfhelpers clean RAW_DIR "
            f"--out {clean_dir}` first."
        )
    df = pd.read_csv(path, dtype={"label": str, "phash": str, "sha256": str, "path": str,
                                  "source": str, "split": str}, keep_default_na=False)
    if splits is not None:
        df = df[df["split"].isin(list(splits))].reset_index(drop=True)
    if absolute:
        root = Path(clean_dir).resolve()
        df["file"] = [str(root / p) for p in df["path"]]
    return df


def class_counts(df: pd.DataFrame, by: str = "split") -> pd.DataFrame:
    """Count images per label, one column per value of ``by`` plus a ``total`` column.

    Parameters
    ----------
    df : pandas.DataFrame
        A manifest (or any frame with ``label`` and ``by`` columns).
    by : str
        Column to spread into columns.

    Returns
    -------
    pandas.DataFrame
        Index ``label``; integer counts.
    """
    table = pd.crosstab(df["label"], df[by]).rename_axis(index="label", columns=None)
    ordered = [c for c in (*SPLITS, "excluded") if c in table.columns]
    table = table[ordered + [c for c in table.columns if c not in ordered]]
    table["total"] = table.sum(axis=1)
    return table


def write_manifest(manifest: pd.DataFrame, clean_dir: str | os.PathLike[str]) -> Path:
    """Write ``manifest.csv`` atomically (UTF-8, columns of :data:`MANIFEST_COLUMNS`).

    Parameters
    ----------
    manifest : pandas.DataFrame
        Rows to write; extra columns are kept after the standard ones.
    clean_dir : path-like
        Folder of the clean data set.

    Returns
    -------
    pathlib.Path
        The manifest path.
    """
    path = manifest_path(clean_dir)
    extra = [c for c in manifest.columns if c not in MANIFEST_COLUMNS and c != "file"]
    with atomic_write(path, newline="") as fh:
        manifest[MANIFEST_COLUMNS + extra].to_csv(fh, index=False)
    return path
