"""From a source to a clean, split data set: the orchestration above cleanup and split.

:func:`obtain_raw` gets the raw class folders (a local folder, a fetched public set, or the
synthetic fixture); :func:`prepare_dataset` cleans and splits them into a folder with
``manifest.csv``; :func:`ensure_manifest` does that on demand for notebooks given a plain folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from lfhelpers.data.checks import CleanOptions
from lfhelpers.data.clean import CleanReport, clean_dataset, list_raw_files
from lfhelpers.data.manifest import project_manifest, write_manifest
from lfhelpers.data.split import split_manifest
from lfhelpers.errors import DataError
from lfhelpers.fsutil import write_json

log = logging.getLogger(__name__)

#: The split settings of a clean set's last run (kept splits are reused only under the same).
SPLIT_SETTINGS = "split.json"
#: Version of the split method; a change splits every clean set afresh.
SPLIT_VERSION = 1


def prepare_dataset(
    raw_dir: str | os.PathLike[str],
    clean_dir: str | os.PathLike[str],
    *,
    seed: int = 42,
    min_per_class: int = 10,
    on_small_class: str = "exclude",
    label_map: str | os.PathLike[str] | dict | None = None,
    options: CleanOptions | None = None,
    n_jobs: int = 1,
    progress: bool = True,
    corrections: str | os.PathLike[str] | None = None,
) -> CleanReport:
    """Clean ``raw_dir`` into ``clean_dir``, split it, and write ``manifest.csv``.

    A rerun on the same ``clean_dir`` with the same ``seed`` and ``min_per_class`` keeps the
    split of every photo it split before and only assigns the new ones (see
    :func:`lfhelpers.data.split.split_manifest`'s ``previous``); the settings are kept in
    ``clean_dir/split.json``. Delete that file to split everything afresh.

    Logs a warning when fewer than two classes are left to train on.

    Parameters
    ----------
    raw_dir, clean_dir : path-like
        Class-folder input (never modified) and output folder.
    seed : int
        Split seed.
    min_per_class, on_small_class
        See :func:`lfhelpers.split.split_manifest`.
    label_map : path or mapping, optional
        See :func:`lfhelpers.data.clean.read_label_map`.
    options : CleanOptions, optional
        Cleanup limits and duplicate distances.
    n_jobs : int
        Decoding workers.
    progress : bool
        Show progress bars.
    corrections : path-like, optional
        Reviewed corrections (default ``clean_dir/corrections.csv`` when it exists); see
        :mod:`lfhelpers.data.corrections`.

    Returns
    -------
    CleanReport
        With the split manifest.
    """

    settings = {"version": SPLIT_VERSION, "seed": int(seed), "min_per_class": int(min_per_class)}
    previous = _previous_split(clean_dir, settings)
    report = clean_dataset(raw_dir, clean_dir, options=options, label_map=label_map,
                           n_jobs=n_jobs, progress=progress, corrections=corrections)
    if report.manifest.empty:
        raise DataError(f"Every file of {raw_dir} was rejected; see {clean_dir}/rejects.csv.")
    report.manifest = split_manifest(report.manifest, seed=seed, min_per_class=min_per_class,
                                     on_small_class=on_small_class, previous=previous)
    write_manifest(report.manifest, clean_dir)
    write_json(Path(clean_dir) / SPLIT_SETTINGS, settings)
    _warn_if_untrainable(report.manifest, raw_dir, min_per_class)
    return report


def _previous_split(clean_dir: str | os.PathLike[str], settings: dict) -> pd.DataFrame | None:
    """The split of the last run on ``clean_dir``, if it used the same settings."""
    path = Path(clean_dir) / SPLIT_SETTINGS
    manifest = project_manifest(clean_dir)
    if manifest is None or not path.is_file():
        return None
    try:
        same = json.loads(path.read_text(encoding="utf-8")) == settings
    except (OSError, ValueError) as exc:
        log.warning("Split afresh: %s is unreadable (%s).", path, exc)
        return None
    if not same:
        log.info("Split afresh: the split settings changed since the last run (%s).", path)
        return None
    return pd.read_csv(manifest, usecols=["path", "sha256", "split"], dtype=str,
                       keep_default_na=False)


def _warn_if_untrainable(manifest: pd.DataFrame, raw_dir: str | os.PathLike[str],
                         min_per_class: int) -> None:
    """Warn when fewer than two classes can be trained on (a classifier needs two)."""
    labels = sorted(manifest["label"].unique())
    usable = sorted(manifest.loc[manifest["split"] != "excluded", "label"].unique())
    if len(usable) >= 2:
        return
    if len(labels) == 1:
        what = f"one class ({labels[0]!r})"
    else:
        what = (f"{len(usable)} class(es) with at least min_per_class={min_per_class} photos "
                f"({', '.join(map(repr, usable)) or 'none'}; too small: "
                f"{', '.join(repr(x) for x in labels if x not in usable)})")
    log.warning("The clean set has %s: a classifier needs at least two classes to learn "
                "anything. Add a folder of photos per category, %s/<label>/<photo>, and clean "
                "again (or lower min_per_class).", what, Path(raw_dir))


def ensure_manifest(
    data_dir: str | os.PathLike[str],
    seed: int = 42,
    cache_root: str | os.PathLike[str] = "data/cache/clean",
    **kwargs: Any,
) -> Path:
    """Return a folder with a manifest for ``data_dir``, cleaning and splitting it if needed.

    Parameters
    ----------
    data_dir : path-like
        A cleaned folder (holds ``manifest.csv``), or a plain folder of class sub-folders.
    seed : int
        Split seed used when a plain folder has to be cleaned.
    cache_root : path-like
        Where a plain folder's clean copy goes (``<cache_root>/<name>-<hash>``); reruns reuse it.
    **kwargs
        Passed to :func:`prepare_dataset`.

    Returns
    -------
    pathlib.Path
        The folder holding ``manifest.csv``.
    """
    data_dir = Path(data_dir)
    if project_manifest(data_dir) is not None:  # a foreign manifest.csv is ignored (logged)
        return data_dir
    if not data_dir.is_dir():
        raise DataError(f"data_dir {data_dir} does not exist. Run notebook 01 first, or point "
                        "data_dir at a folder of class sub-folders.")
    key = hashlib.sha256(f"{data_dir.resolve()}|{seed}".encode()).hexdigest()[:10]
    clean_dir = Path(cache_root) / f"{data_dir.resolve().name}-{key}"
    prepare_dataset(data_dir, clean_dir, seed=seed, **kwargs)
    return clean_dir


def obtain_raw(
    source: str,
    data_dir: str | os.PathLike[str] = "",
    raw_dir: str | os.PathLike[str] = "data/raw",
    *,
    seed: int = 42,
    synthetic_per_class: int = 24,
) -> Path:
    """Return the raw class-folder set to clean: a local folder, a fetched data set or a fixture.

    Parameters
    ----------
    source : str
        A data set name of :data:`lfhelpers.sources.DATASETS` (fetched into ``raw_dir``, from
        ``LF_DATA_MIRROR`` when set), ``"synthetic"`` (the drawn test fixture with awkward files,
        written into ``raw_dir``), or ``""`` when ``data_dir`` is given.
    data_dir : path-like
        A local folder of class sub-folders; when set it is used as is (never modified).
    raw_dir : path-like
        Destination of a fetched or generated set.
    seed : int
        Seed of the synthetic fixture.
    synthetic_per_class : int
        Images per class of the synthetic fixture.

    Returns
    -------
    pathlib.Path
        The raw folder.
    """
    if data_dir:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(f"data_dir {folder} is not a folder of class sub-folders.")
        return folder
    if not source:
        raise DataError("Set either data_dir (a local folder) or source (a data set name).")
    raw = Path(raw_dir)
    if source == "synthetic":
        from lfhelpers.data.fixtures import make_synthetic_dataset
        from lfhelpers.fsutil import write_json

        marker = raw / ".lf_fetch.json"
        if not marker.exists():
            make_synthetic_dataset(raw, n_per_class=synthetic_per_class, seed=seed,
                                   with_bad_files=True)
            write_json(marker, {"name": "synthetic", "seed": seed,
                                "per_class": synthetic_per_class})
        return raw
    from lfhelpers.data.sources import fetch

    return fetch(source, dest=raw)


def folder_counts(raw_dir: str | os.PathLike[str]) -> pd.Series:
    """Number of files per class folder of a raw set (hidden files skipped).

    Parameters
    ----------
    raw_dir : path-like
        Folder of class sub-folders.

    Returns
    -------
    pandas.Series
        Index label, values file counts, sorted by label.
    """
    labels = [label for _, label in list_raw_files(Path(raw_dir))]
    return pd.Series(labels, dtype=str).value_counts().sort_index().rename("files")
