"""Data sources: the registry of the public data sets and :func:`fetch`.

:func:`fetch` turns a data-set name (or a plain local folder) into a local folder of class
sub-folders (or, for ``codingtrain_colors``, a folder holding ``colorData.json``):

* a plain local folder is returned as it is (never copied, never modified);
* with an offline mirror (``LF_DATA_MIRROR=<folder>`` or ``mirror=``) the folder
  ``<mirror>/<name>`` is copied into ``dest``;
* otherwise the public source is downloaded by :func:`lfhelpers.data.download.download`
  (progress bar, timeouts, urllib3 retries with back-off honouring ``Retry-After``, resume with
  an HTTP ``Range`` request, size limit, SHA-256 check where known, atomic rename) into
  ``data/cache/downloads/`` and, for archives, extracted by
  :func:`lfhelpers.data.archives.safe_extract`: only the data set's ``subdir`` (and listed
  classes) is kept, and members that would escape the destination (absolute paths, ``..``,
  links, devices) make the whole archive refused.

The result folder gets a small completion marker, ``.lf_fetch.json``; a later call with the
same source finds it and skips the work. Hidden files such as this marker are ignored by the
later steps.

The URL of a registered data set can be overridden, for tests or an internal copy, with the
``url=`` argument of :func:`fetch` or the environment variable ``LF_DATASET_URL_<NAME>``
(for example ``LF_DATASET_URL_LOSTNET``); the argument wins. The override must serve the same
content: the registry's archive layout and checksum still apply.

Command line: ``python -m lfhelpers fetch NAME [--dest DIR]`` (see :func:`fetch_command`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from lfhelpers.data.archives import CorruptArchiveError, new_temp_dir, safe_extract
from lfhelpers.data.download import download, remove_files
from lfhelpers.errors import DataError, DownloadError, LFError, NetworkUnavailableError
from lfhelpers.fsutil import sha256_file, write_json
from lfhelpers.images import IMAGE_SUFFIXES

__all__ = ["DATASETS", "Dataset", "download", "fetch", "fetch_command", "resolve_url",
           "safe_extract", "summarize"]

logger = logging.getLogger(__name__)

#: Environment variable naming the offline mirror folder (``<mirror>/<name>``).
MIRROR_ENV = "LF_DATA_MIRROR"
#: Prefix of the environment variables overriding a data set's URL (``LF_DATASET_URL_LOSTNET``).
URL_ENV_PREFIX = "LF_DATASET_URL_"
#: Name of the completion marker written at the root of a fetched folder.
MARKER_NAME = ".lf_fetch.json"
#: Default folders, relative to the current working directory.
DEFAULT_RAW_DIR = Path("data/raw")
DEFAULT_CACHE_DIR = Path("data/cache/downloads")
#: File name suffixes counted as images in summaries.

_MIRROR_HINT = (
    f"set {MIRROR_ENV}=<folder holding lostnet/ caltech101_5/ codingtrain_colors/> to use an "
    "offline copy, or pass a local folder of class sub-folders instead of the data-set name"
)


@dataclass(frozen=True)
class Dataset:
    """One public data set in the registry.

    Attributes
    ----------
    name : str
        Registry name, also the folder name under the mirror and under ``data/raw``.
    url : str
        Public HTTP(S) location of the archive or file.
    kind : {"archive", "file"}
        ``"archive"``: a tar(.gz/.bz2/.xz) or zip to extract; ``"file"``: one file kept as is.
    filename : str
        Name of the downloaded file (in the cache; for ``"file"`` also in the result folder).
    subdir : str or None
        Folder inside the archive whose contents become the result folder.
    classes : tuple of str or None
        Class folders (directly under ``subdir``) to keep; ``None`` keeps all of them.
    sha256 : str or None
        Expected SHA-256 of the downloaded file, where the source is byte-stable.
    size_limit : int
        Largest accepted download, in bytes.
    description : str
        What the data set holds.
    citation : str
        Licence and citation note.
    """

    name: str
    url: str
    kind: Literal["archive", "file"]
    filename: str
    subdir: str | None = None
    classes: tuple[str, ...] | None = None
    sha256: str | None = None
    size_limit: int = 2 << 30
    description: str = ""
    citation: str = ""


_LOSTNET_COMMIT = "3f361eebbb00876520a530616ff1d8a613b2bfe8"
_CALTECH_COMMIT = "836044dd000296b2bb74d0aa4b4e462e459b01d7"
_COLORS_COMMIT = "e575fab0a5295eea3dfefb5c580a21c27911cf73"

_CALTECH101 = Dataset(
    name="caltech101",
    url=(
        "https://codeload.github.com/MachineLearning2020/Homework2-Caltech101/tar.gz/"
        f"{_CALTECH_COMMIT}"
    ),
    kind="archive",
    filename=f"Homework2-Caltech101-{_CALTECH_COMMIT[:12]}.tar.gz",
    subdir=f"Homework2-Caltech101-{_CALTECH_COMMIT}/101_ObjectCategories",
    sha256=None,  # GitHub generates the tarball on request; its bytes are not guaranteed
    size_limit=1 << 30,
    description=("All of Caltech 101 (102 folders, about 9,100 images); "
                 "benchmarks/bench_retrieval.py scores search on its 36 animal classes."),
    citation=(
        "Caltech 101: L. Fei-Fei, R. Fergus, P. Perona, 'Learning generative visual models "
        "from few training examples', CVPR Workshop 2004; copy from "
        "github.com/MachineLearning2020/Homework2-Caltech101."
    ),
)

#: The registry of public data sets, by name.
DATASETS: dict[str, Dataset] = {
    "lostnet": Dataset(
        name="lostnet",
        url=f"https://codeload.github.com/mh-zhou/idea-LostNet/tar.gz/{_LOSTNET_COMMIT}",
        kind="archive",
        filename=f"idea-LostNet-{_LOSTNET_COMMIT[:12]}.tar.gz",
        subdir=f"idea-LostNet-{_LOSTNET_COMMIT}/Python source code/datasets/train",
        classes=(
            "USBflashdisk", "card", "earphone", "key",
            "lipstick", "phone", "umbrella", "vacuumcup",
        ),
        sha256=None,  # GitHub generates the tarball on request; its bytes are not guaranteed
        size_limit=2 << 30,
        description="Photos of lost-and-found items, 8 classes (about 4,000 images, 300x300).",
        citation=(
            "Zhou et al., 'LostNet: A smart way for lost and find', PLoS ONE 2024 "
            "(paper CC BY 4.0; the repository github.com/mh-zhou/idea-LostNet states no licence)."
        ),
    ),
    "caltech101_5": replace(
        _CALTECH101,
        name="caltech101_5",
        classes=("BACKGROUND_Google", "brain", "crayfish", "helicopter", "okapi"),
        description="Five Caltech 101 categories used by the CNN tutorial (762 images).",
    ),
    "caltech101": _CALTECH101,
    "codingtrain_colors": Dataset(
        name="codingtrain_colors",
        url=(
            "https://raw.githubusercontent.com/CodingTrain/ColorClassifer-TensorFlow.js/"
            f"{_COLORS_COMMIT}/colorData.json"
        ),
        kind="file",
        filename="colorData.json",
        sha256="bc426dc9c5835875707509d84f26e37c74ff0c427d9c160f4ff94e48f671450a",
        size_limit=16 << 20,
        description="Crowd-sourced color names: 5,643 {r, g, b, label, uid} entries, 9 labels.",
        citation=(
            "The Coding Train color classifier data, "
            "github.com/CodingTrain/ColorClassifer-TensorFlow.js."
        ),
    ),
}


def _visible_files(root: Path) -> Iterator[Path]:
    """Files under ``root`` in sorted order, skipping hidden files and folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _tally(root: Path) -> tuple[int, int]:
    """(number of visible files, their total bytes) under ``root``."""
    files = total = 0
    for path in _visible_files(root):
        files += 1
        total += path.stat().st_size
    return files, total


def _read_marker(dest: Path) -> dict | None:
    try:
        data = json.loads((dest / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_complete(
    dest: Path, name: str, source: str | None, expected: tuple[int, int] | None
) -> bool:
    """True when ``dest`` holds a finished fetch of ``name`` from ``source`` (``None``: from
    anywhere), unchanged since."""
    marker = _read_marker(dest)
    if not marker or marker.get("name") != name:
        return False
    if source is not None and marker.get("source") != source:
        return False
    recorded = (marker.get("files"), marker.get("bytes"))
    if expected is not None and recorded != expected:
        return False
    return _tally(dest) == recorded


def _write_marker(folder: Path, name: str, source: str, method: str) -> tuple[int, int]:
    files, total = _tally(folder)
    write_json(
        folder / MARKER_NAME,
        {
            "name": name,
            "source": source,
            "method": method,
            "files": files,
            "bytes": total,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return files, total


def _install(staged: Path, dest: Path) -> None:
    """Move the finished folder ``staged`` to ``dest``, replacing a stale earlier fetch."""
    if dest.exists():
        old = new_temp_dir(dest, "old")
        os.replace(dest, old / "data")
        try:
            os.replace(staged, dest)
        except BaseException:
            os.replace(old / "data", dest)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, dest)


def _check_replaceable(dest: Path) -> None:
    """Refuse to overwrite a folder that this module did not make."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise DataError(f"Destination {dest} exists and is not a folder; choose another --dest.")
    if any(dest.iterdir()) and _read_marker(dest) is None:
        raise DataError(
            f"Destination {dest} already exists, is not empty and was not made by fetch "
            f"(no {MARKER_NAME}); remove it, choose another destination, or pass the folder "
            "itself as a local source."
        )


def _check_nothing_added(dest: Path, staged: Path, name: str) -> None:
    """Refuse to replace an earlier fetch that holds files the source does not have: photos a
    person added there would be lost (the earlier copy is left as it is)."""
    if not dest.is_dir():
        return
    fresh = {p.relative_to(staged) for p in _visible_files(staged)}
    added = [p.relative_to(dest) for p in _visible_files(dest)
             if p.relative_to(dest) not in fresh]
    if added:
        raise DataError(
            f"{dest} holds {len(added)} file(s) that are not part of {name} (e.g. "
            f"{added[0]}): they were added after it was fetched, and fetching again would "
            f"replace the folder. Nothing was changed. Move your own photos into a folder of "
            f"your own and pass that folder as the source (notebook 01: source=<folder>; "
            f"`python -m lfhelpers clean <folder>`), or remove them to fetch {name} again.")


def _copy_tree(src: Path, dst: Path, progress: bool) -> None:
    """Copy the visible files of ``src`` into ``dst`` (contents only, fresh permissions)."""
    files = list(_visible_files(src))
    dst.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc=f"copy {src.name}", unit="file", disable=not progress,
                     leave=False):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def resolve_url(dataset: Dataset, url: str | None = None) -> str:
    """Return the URL to download ``dataset`` from.

    Parameters
    ----------
    dataset : Dataset
        Registry entry.
    url : str, optional
        Explicit override; wins over the environment.

    Returns
    -------
    str
        ``url``, else ``$LF_DATASET_URL_<NAME>`` (name upper-cased), else ``dataset.url``.
    """
    return url or os.environ.get(URL_ENV_PREFIX + dataset.name.upper()) or dataset.url


def _lookup(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"{name!r} is neither a known data set ({', '.join(sorted(DATASETS))}) nor an "
            "existing folder."
        ) from None


def fetch(
    name_or_path: str | os.PathLike[str],
    dest: str | os.PathLike[str] | None = None,
    *,
    mirror: str | os.PathLike[str] | None = None,
    progress: bool = True,
    url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return a local folder holding the named data set, fetching it when needed.

    Parameters
    ----------
    name_or_path : str or path-like
        A registry name (``"lostnet"``, ``"caltech101_5"``, ``"codingtrain_colors"``; see
        :data:`DATASETS`) or an existing folder. A folder is a plain local source and is
        returned as it is, never copied or modified. A bare string equal to a registry name
        means the data set; write ``./lostnet`` for a local folder of that name.
    dest : path-like, optional
        Result folder; default ``data/raw/<name>`` relative to the current directory. An
        existing folder is only replaced when an earlier :func:`fetch` made it.
    mirror : path-like, optional
        Offline mirror holding ``<mirror>/<name>``; default ``$LF_DATA_MIRROR``. When set,
        nothing is downloaded: the mirror's folder is copied into ``dest``.
    progress : bool
        Show tqdm progress bars.
    url : str, optional
        Download from this URL instead of the registry's (also ``$LF_DATASET_URL_<NAME>``).
    cache_dir : path-like, optional
        Where downloads are kept; default ``data/cache/downloads``.

    Returns
    -------
    Path
        The folder: class sub-folders of images (or ``colorData.json`` for
        ``codingtrain_colors``), plus the hidden marker ``.lf_fetch.json``.

    Raises
    ------
    NetworkUnavailableError
        The source URL cannot be reached and no mirror is set; the message says how to set one.
    DownloadError, UnsafeArchiveError, DataError
        A failed or refused download or extraction, a missing mirror folder, or a destination
        that holds something else.
    """
    if not (isinstance(name_or_path, str) and name_or_path in DATASETS):
        candidate = Path(name_or_path)
        if candidate.is_dir():
            logger.info("using the local folder %s as it is", candidate)
            return candidate
        if candidate.exists():
            raise DataError(
                f"{candidate} is a file; pass a folder of class sub-folders or a data-set name "
                f"({', '.join(sorted(DATASETS))})."
            )
    dataset = _lookup(str(name_or_path))
    dest = Path(dest) if dest is not None else DEFAULT_RAW_DIR / dataset.name
    mirror = mirror if mirror is not None else (os.environ.get(MIRROR_ENV) or None)

    if mirror is not None:
        source_dir = (Path(mirror) / dataset.name).resolve()
        if not source_dir.is_dir():
            raise DataError(
                f"The offline mirror has no folder {source_dir} (from {MIRROR_ENV}={mirror}). "
                f"It must hold {dataset.name}/; fix the mirror path or unset {MIRROR_ENV} to "
                "download from the public source."
            )
        source, method = str(source_dir), "mirror"
        expected = _tally(source_dir)
        if expected[0] == 0:
            raise DataError(f"The mirror folder {source_dir} holds no files.")
    else:
        source, method, expected = resolve_url(dataset, url), "download", None

    # Without a mirror, a complete earlier fetch (from the mirror or a download) is reused:
    # a rerun needs no network. A mirror or an explicit URL asks for that very source.
    wanted = source if (method == "mirror" or url or os.environ.get(
        URL_ENV_PREFIX + dataset.name.upper())) else None
    if _is_complete(dest, dataset.name, wanted, expected):
        logger.info("%s already fetched into %s; nothing to do", dataset.name, dest)
        return dest
    _check_replaceable(dest)

    stage = new_temp_dir(dest, "fetch")
    try:
        staged = stage / "data"
        if method == "mirror":
            _copy_tree(Path(source), staged, progress)
            if dataset.kind == "file" and dataset.sha256:
                if not (staged / dataset.filename).is_file():
                    raise DataError(
                        f"The mirror folder {source} has no {dataset.filename}."
                    )
                got = sha256_file(staged / dataset.filename)
                if got != dataset.sha256:
                    raise DataError(
                        f"{Path(source) / dataset.filename} has sha256 {got}, expected "
                        f"{dataset.sha256}; the mirror does not hold the registered file."
                    )
        else:
            cached = _download_cached(dataset, source, cache_dir, progress)
            if dataset.kind == "file":
                staged.mkdir()
                shutil.copyfile(cached, staged / dataset.filename)
            else:
                try:
                    safe_extract(
                        cached, staged, subdir=dataset.subdir, keep=dataset.classes,
                        progress=progress,
                    )
                except CorruptArchiveError:
                    # A truncated cached archive would fail the same way every time.
                    remove_files(cached)
                    logger.warning("removed the unreadable cached download %s", cached)
                    raise
        files, total = _write_marker(staged, dataset.name, source, method)
        _check_nothing_added(dest, staged, dataset.name)
        _install(staged, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    logger.info("fetched %s (%d files, %d bytes) into %s", dataset.name, files, total, dest)
    return dest


def _download_cached(
    dataset: Dataset, url: str, cache_dir: str | os.PathLike[str] | None, progress: bool
) -> Path:
    """Download ``url`` into the cache unless a good copy is there; return the cached file."""
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    url_tag = hashlib.sha256(url.encode("utf-8")).hexdigest()[:10]
    cached = cache / f"{dataset.name}-{url_tag}-{dataset.filename}"
    if cached.exists():
        if dataset.sha256 is None or sha256_file(cached) == dataset.sha256:
            logger.info("using the cached download %s", cached)
            return cached
        logger.warning("cached %s has the wrong checksum; downloading again", cached)
        remove_files(cached)
    try:
        return download(
            url, cached, sha256=dataset.sha256, size_limit=dataset.size_limit,
            progress=progress,
        )
    except NetworkUnavailableError as exc:
        raise NetworkUnavailableError(
            f"Cannot download {dataset.name!r}: the source URL {url} could not be reached "
            f"({getattr(exc, 'reason', exc)}). No offline mirror is set: {_MIRROR_HINT}."
        ) from exc
    except DownloadError as exc:
        raise DownloadError(f"{exc} To work without the download: {_MIRROR_HINT}.") from exc


def summarize(folder: str | os.PathLike[str]) -> dict[str, int]:
    """Count image files per class sub-folder (or visible files at the top, for a file set).

    Parameters
    ----------
    folder : path-like
        A fetched or local folder.

    Returns
    -------
    dict of str to int
        ``{class folder: image count}`` sorted by name; when there are no class folders,
        ``{file name: 1}`` for each visible top-level file.
    """
    folder = Path(folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        return {
            c.name: sum(1 for f in _visible_files(c) if f.suffix.lower() in IMAGE_SUFFIXES)
            for c in classes
        }
    return {p.name: 1 for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")}


def fetch_command(args: argparse.Namespace) -> int:
    """Command line ``python -m lfhelpers fetch NAME [--dest DIR]``.

    Prints the resulting folder and a per-class image count.

    Parameters
    ----------
    args : argparse.Namespace
        ``name`` (a data set or a folder), ``dest``, ``mirror`` and ``quiet``.

    Returns
    -------
    int
        0 on success, 2 on an :class:`~lfhelpers.errors.LFError` (message on stderr).
    """
    try:
        folder = fetch(args.name, args.dest, mirror=args.mirror, progress=not args.quiet)
        counts = summarize(folder)
    except LFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    if counts and any(Path(folder, k).is_dir() for k in counts):
        width = max(len(k) for k in counts)
        print(f"{len(counts)} classes, {sum(counts.values())} images")
        for label, count in counts.items():
            print(f"  {label:<{width}}  {count:>6}")
    else:
        print(f"{len(counts)} file(s): {', '.join(counts)}")
    return 0

