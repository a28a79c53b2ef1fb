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

A folder may hold a ``manifest.csv`` that this project did not write (a data set's own
listing, a spreadsheet export). :func:`project_manifest` tells the two apart by the columns
of its header (:data:`REQUIRED_COLUMNS`): a foreign one is ignored with a logged line, and
:func:`list_photos` then lists the class sub-folders instead; :func:`read_manifest` refuses it
with a message that says what to do.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lfhelpers.errors import DataError
from lfhelpers.fsutil import atomic_write
from lfhelpers.images import IMAGE_SUFFIXES

MANIFEST = "manifest.csv"
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["path", "label", "split", "sha256", "phash", "group", "width", "height",
                    "bytes", "source"]
#: Columns whose presence in the header marks a ``manifest.csv`` as this project's (clean
#: sets and augmented folders both write them first).
REQUIRED_COLUMNS = ("path", "label", "split")
#: File name suffixes listed as photos in a folder of class sub-folders.

log = logging.getLogger(__name__)


def manifest_path(clean_dir: str | os.PathLike[str]) -> Path:
    """Return ``<clean_dir>/manifest.csv``."""
    return Path(clean_dir) / MANIFEST


def manifest_header(path: str | os.PathLike[str]) -> list[str]:
    """The column names in the first line of a CSV file (``[]`` when empty or unreadable)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return [c.strip() for c in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def is_project_manifest(path: str | os.PathLike[str]) -> bool:
    """Whether the CSV file ``path`` is a manifest this project wrote.

    It is when its header names every column of :data:`REQUIRED_COLUMNS`; any other CSV (a
    data set's own listing, an export) is foreign.
    """
    return set(REQUIRED_COLUMNS) <= set(manifest_header(path))


def _foreign(path: Path) -> str:
    header = manifest_header(path)
    shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "") if header else "none"
    return (f"{path} is not a manifest of this project: its columns ({shown}) lack "
            f"{', '.join(c for c in REQUIRED_COLUMNS if c not in header)}")


def project_manifest(folder: str | os.PathLike[str]) -> Path | None:
    """``<folder>/manifest.csv`` when it exists and is this project's, else None.

    A foreign ``manifest.csv`` (see :func:`is_project_manifest`) is ignored with a logged line:
    the folder is then taken as a folder of class sub-folders.
    """
    path = manifest_path(folder)
    if not path.is_file():
        return None
    if is_project_manifest(path):
        return path
    log.warning("Ignoring %s; using the class sub-folders of %s instead.", _foreign(path),
                Path(folder))
    return None


def list_photos(
    data_dir: str | os.PathLike[str],
    suffixes: Iterable[str] = IMAGE_SUFFIXES,
) -> pd.DataFrame:
    """``path, label`` of every photo of a clean set or of a folder of class sub-folders.

    Parameters
    ----------
    data_dir : path-like
        A clean set (its ``manifest.csv`` is read; ``excluded`` rows are left out) or a
        folder of class sub-folders (folder name = label). A ``manifest.csv`` that this
        project did not write is ignored with a logged line.
    suffixes : iterable of str
        File name suffixes (lower case) taken as photos in class sub-folders.

    Returns
    -------
    pandas.DataFrame
        Columns ``path`` (absolute) and ``label``.

    Raises
    ------
    DataError
        When ``data_dir`` is not a folder or holds no photos.
    """
    root = Path(data_dir)
    if project_manifest(root) is not None:
        df = read_manifest(root)
        if "split" in df:
            df = df[df["split"] != "excluded"]
        return pd.DataFrame({"path": df["file"].astype(str), "label": df["label"].astype(str)})
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give a clean set (manifest.csv) or a folder "
                        "of class sub-folders.")
    wanted = tuple(s.lower() for s in suffixes)
    rows = [{"path": str(p.resolve()), "label": d.name}
            for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
            for p in sorted(d.iterdir()) if p.suffix.lower() in wanted]
    if not rows:
        raise DataError(f"No photos in {root}: expected manifest.csv or <class>/<photo> files.")
    return pd.DataFrame(rows)


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
        When the manifest is missing or is not this project's (another CSV named
        ``manifest.csv``); the message says how to make one.
    """
    path = manifest_path(clean_dir)
    if not path.exists():
        raise DataError(
            f"No manifest at {path}. Run notebook 01 or `python -m lfhelpers clean RAW_DIR "
            f"--out {clean_dir}` first."
        )
    if not is_project_manifest(path):
        raise DataError(
            f"{_foreign(path)}. Clean the folder into a new one first (`python -m lfhelpers "
            f"clean {clean_dir} --out CLEAN_DIR`, which ignores that file) and use CLEAN_DIR."
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
