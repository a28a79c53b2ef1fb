"""Data sources: a registry of the public data sets, safe download and safe extraction.

:func:`fetch` turns a data-set name (or a plain local folder) into a local folder of class
sub-folders (or, for ``codingtrain_colors``, a folder holding ``colorData.json``):

* a plain local folder is returned as it is (never copied, never modified);
* with an offline mirror (``LF_DATA_MIRROR=<folder>`` or ``mirror=``) the folder
  ``<mirror>/<name>`` is copied into ``dest``;
* otherwise the public source is downloaded (progress bar, timeouts, retries with back-off,
  resume with an HTTP ``Range`` request, size limit, SHA-256 check where known, atomic rename)
  into ``data/cache/downloads/`` and, for archives, safely extracted: only the data set's
  ``subdir`` (and listed classes) is kept, and members that would escape the destination
  (absolute paths, ``..``, links, devices) make the whole archive refused.

The result folder gets a small completion marker, ``.lf_fetch.json``; a later call with the
same source finds it and skips the work. Hidden files such as this marker are ignored by the
later steps.

The URL of a registered data set can be overridden, for tests or an internal copy, with the
``url=`` argument of :func:`fetch` or the environment variable ``LF_DATASET_URL_<NAME>``
(for example ``LF_DATASET_URL_LOSTNET``); the argument wins. The override must serve the same
content: the registry's archive layout and checksum still apply.

Command line: ``python -m lfhelpers fetch NAME [--dest DIR]`` (see :func:`fetch_main`).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

import requests
from tqdm import tqdm

from lfhelpers import __version__
from lfhelpers.errors import (
    DataError,
    DownloadError,
    LFError,
    NetworkUnavailableError,
    UnsafeArchiveError,
)
from lfhelpers.fsutil import sha256_file, write_json

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
#: First wait between download attempts, in seconds; it doubles after each failed attempt.
RETRY_BACKOFF_S = 1.0
#: Longest wait honoured from a server's ``Retry-After`` header, in seconds.
MAX_RETRY_AFTER_S = 60.0
#: Longest wait for a connection when ``timeout`` is one number, in seconds.
CONNECT_TIMEOUT_S = 10.0
#: HTTP statuses worth retrying.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: File name suffixes counted as images in summaries.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

_CHUNK = 1 << 16
_USER_AGENT = f"lfhelpers/{__version__} (lost-and-found workbook data fetch)"
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
    "caltech101_5": Dataset(
        name="caltech101_5",
        url=(
            "https://codeload.github.com/MachineLearning2020/Homework2-Caltech101/tar.gz/"
            f"{_CALTECH_COMMIT}"
        ),
        kind="archive",
        filename=f"Homework2-Caltech101-{_CALTECH_COMMIT[:12]}.tar.gz",
        subdir=f"Homework2-Caltech101-{_CALTECH_COMMIT}/101_ObjectCategories",
        classes=("BACKGROUND_Google", "brain", "crayfish", "helicopter", "okapi"),
        sha256=None,  # generated tarball, see lostnet
        size_limit=1 << 30,
        description="Five Caltech 101 categories used by the CNN tutorial (762 images).",
        citation=(
            "Caltech 101: L. Fei-Fei, R. Fergus, P. Perona, 'Learning generative visual models "
            "from few training examples', CVPR Workshop 2004; copy from "
            "github.com/MachineLearning2020/Homework2-Caltech101."
        ),
    ),
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


# --------------------------------------------------------------------------------------------
# download


def _part_paths(dest_file: Path) -> tuple[Path, Path]:
    """Return the ``.part`` file and its side-car (the server's validator) for ``dest_file``."""
    return (
        dest_file.with_name(dest_file.name + ".part"),
        dest_file.with_name(dest_file.name + ".part.json"),
    )


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _retry_after(response: requests.Response) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header given in seconds, else None."""
    value = response.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None


def _content_range_start(response: requests.Response) -> int | None:
    """First byte offset of a ``206`` answer (``Content-Range: bytes START-END/TOTAL``)."""
    value = response.headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    if unit.strip().lower() != "bytes":
        return None
    try:
        return int(spec.split("-", 1)[0])
    except ValueError:
        return None


def _expected_total(response: requests.Response, offset: int) -> int | None:
    """Full size of the file being received, when the server says so."""
    if response.status_code == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if total.isdigit():
            return int(total)
    length = response.headers.get("Content-Length", "")
    if length.isdigit():
        return offset + int(length) if response.status_code == 206 else int(length)
    return None


def _short_reason(exc: BaseException) -> str:
    """The innermost, human-readable reason of a requests connection error."""
    reason: object = exc
    while True:
        inner = getattr(reason, "reason", None)
        if inner is None and getattr(reason, "args", None):
            first = reason.args[0]  # type: ignore[union-attr]
            inner = first if isinstance(first, BaseException) else None
        if inner is None or inner is reason:
            break
        reason = inner
    return re.sub(r"^<[^>]*object at 0x[0-9a-f]+>:\s*", "", str(reason))


class _Retry(Exception):
    """Internal: the attempt failed in a way worth retrying."""

    def __init__(
        self, what: str, wait: float | None = None, network: bool = False, reason: str = ""
    ):
        super().__init__(what)
        self.wait = wait
        self.network = network
        self.reason = reason or what


def _fetch_once(
    session: requests.Session,
    url: str,
    part: Path,
    sidecar: Path,
    *,
    size_limit: int | None,
    timeout: float | tuple[float, float],
    progress: bool,
    label: str,
) -> bool:
    """Run one HTTP request and append to ``part``; return True when it resumed a partial file.

    Raises :class:`_Retry` for transient failures and :class:`DownloadError` for final ones.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        with contextlib.suppress(OSError, ValueError):
            validator = json.loads(sidecar.read_text(encoding="utf-8")).get("validator")
            if validator:
                headers["If-Range"] = validator
    if not isinstance(timeout, tuple):
        timeout = (min(CONNECT_TIMEOUT_S, timeout), timeout)
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.ConnectionError as exc:  # includes DNS failures and connect timeouts
        reason = _short_reason(exc)
        raise _Retry(f"could not connect: {reason}", network=True, reason=reason) from exc
    except requests.Timeout as exc:
        raise _Retry(f"timed out ({exc})") from exc
    except requests.RequestException as exc:
        raise DownloadError(f"Download of {url} failed: {exc}") from exc

    with response:
        status = response.status_code
        if status == 416 and offset:
            # The partial file is as long as (or longer than) the file: start over.
            logger.info("server refused to resume %s at byte %d; restarting", url, offset)
            _remove(part, sidecar)
            raise _Retry("range not satisfiable, restarting", wait=0.0)
        if status in RETRY_STATUSES:
            raise _Retry(f"server answered HTTP {status}", wait=_retry_after(response))
        if status >= 400:
            raise DownloadError(
                f"Download of {url} failed: the server answered HTTP {status} {response.reason}. "
                "Check the URL (or its LF_DATASET_URL_<NAME> override)."
            )
        resumed = False
        if offset and status == 206 and _content_range_start(response) == offset:
            resumed = True
            mode = "ab"
        elif status == 206:
            _remove(part, sidecar)
            raise _Retry("the server sent an unexpected byte range; restarting", wait=0.0)
        else:
            if offset:
                logger.info("server ignored the Range request for %s; restarting from 0", url)
            offset = 0
            mode = "wb"
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            part.parent.mkdir(parents=True, exist_ok=True)
            sidecar.write_text(json.dumps({"url": url, "validator": validator}), encoding="utf-8")

        total = _expected_total(response, offset)
        if size_limit is not None and total is not None and total > size_limit:
            _remove(part, sidecar)
            raise DownloadError(
                f"Download of {url} refused: the server announces {total:,} bytes, more than "
                f"the size limit of {size_limit:,} bytes."
            )
        written = offset
        bar = tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=label, disable=not progress, leave=False,
        )
        try:
            with open(part, mode) as fh:
                for block in response.iter_content(chunk_size=_CHUNK):
                    written += len(block)
                    if size_limit is not None and written > size_limit:
                        fh.close()
                        _remove(part, sidecar)
                        raise DownloadError(
                            f"Download of {url} aborted: it exceeded the size limit of "
                            f"{size_limit:,} bytes (partial file removed)."
                        )
                    fh.write(block)
                    bar.update(len(block))
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retry(f"connection broken after {written:,} bytes ({exc})") from exc
        except requests.Timeout as exc:
            raise _Retry(f"read timed out after {written:,} bytes ({exc})") from exc
        finally:
            bar.close()
        if total is not None and written != total:
            raise _Retry(f"received {written:,} of {total:,} bytes")
        return resumed


def download(
    url: str,
    dest_file: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    size_limit: int | None = None,
    timeout: float | tuple[float, float] = 30,
    retries: int = 3,
    progress: bool = True,
    backoff: float | None = None,
) -> Path:
    """Download ``url`` to ``dest_file`` safely.

    The bytes go to ``<dest_file>.part`` and are renamed into place only when complete (and,
    if ``sha256`` is given, verified). An existing ``.part`` file is resumed with an HTTP
    ``Range`` request; when the server ignores it, the download restarts from the beginning.
    Connection errors, timeouts, broken transfers and HTTP 408/425/429/5xx answers are retried
    with exponential back-off (honouring ``Retry-After``).

    Parameters
    ----------
    url : str
        HTTP(S) URL.
    dest_file : path-like
        Final file; its parent folders are created. An existing file is replaced.
    sha256 : str, optional
        Expected hex SHA-256 of the whole file.
    size_limit : int, optional
        Largest accepted size in bytes; beyond it the download is aborted and the partial file
        removed.
    timeout : float or (float, float)
        Read timeout in seconds, or ``(connect, read)``; one number also caps the connect
        timeout at :data:`CONNECT_TIMEOUT_S`.
    retries : int
        Attempts after the first one.
    progress : bool
        Show a tqdm progress bar.
    backoff : float, optional
        First wait between attempts in seconds (doubles each time); default
        :data:`RETRY_BACKOFF_S`.

    Returns
    -------
    Path
        ``dest_file``.

    Raises
    ------
    NetworkUnavailableError
        The host could not be reached (DNS failure, refused connection, connect timeout) on
        any attempt.
    DownloadError
        An HTTP error, the size limit, a checksum mismatch or a transfer that kept failing.
    """
    dest_file = Path(dest_file)
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    part, sidecar = _part_paths(dest_file)
    wait = RETRY_BACKOFF_S if backoff is None else backoff
    label = dest_file.name if len(dest_file.name) <= 40 else dest_file.name[:37] + "..."
    restarted_after_mismatch = False
    attempt = 0
    with requests.Session() as session:
        session.headers["User-Agent"] = _USER_AGENT
        while True:
            try:
                resumed = _fetch_once(
                    session, url, part, sidecar, size_limit=size_limit, timeout=timeout,
                    progress=progress, label=label,
                )
            except _Retry as exc:
                if attempt >= retries:
                    if exc.network:
                        error = NetworkUnavailableError(
                            f"Could not reach {url} after {attempt + 1} attempts: {exc}"
                        )
                        error.reason = exc.reason  # type: ignore[attr-defined]
                        raise error from exc
                    raise DownloadError(
                        f"Download of {url} failed after {attempt + 1} attempts: {exc}. "
                        "Run the command again to resume from the partial file."
                    ) from exc
                delay = exc.wait if exc.wait is not None else wait * (2**attempt)
                logger.warning(
                    "download of %s: %s; retrying in %.1f s (attempt %d of %d)",
                    url, exc, delay, attempt + 2, retries + 1,
                )
                time.sleep(delay)
                attempt += 1
                continue
            if sha256 is not None:
                actual = sha256_file(part)
                if actual.lower() != sha256.lower():
                    _remove(part, sidecar)
                    if resumed and not restarted_after_mismatch:
                        # The old partial file may have come from another version: start over.
                        logger.warning(
                            "checksum mismatch after resuming %s; downloading it again", url
                        )
                        restarted_after_mismatch = True
                        continue
                    raise DownloadError(
                        f"Checksum mismatch for {url}: expected sha256 {sha256}, got {actual}. "
                        "The file was not kept; the source may have changed or the transfer "
                        "was corrupted. Try again, or use an offline mirror "
                        f"({MIRROR_ENV})."
                    )
            os.replace(part, dest_file)
            _remove(sidecar)
            logger.info("downloaded %s -> %s", url, dest_file)
            return dest_file


# --------------------------------------------------------------------------------------------
# extraction


def _clean_member_name(name: str) -> PurePosixPath:
    """Return a member's relative path, or raise :class:`UnsafeArchiveError` if it could escape.

    Back-slashes count as separators; absolute paths, drive letters and ``..`` are refused.
    """
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise UnsafeArchiveError(f"member {name!r} has an absolute path")
    parts = [p for p in normalised.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r} has a '..' component (path traversal)")
    if any("\x00" in p for p in parts):
        raise UnsafeArchiveError(f"member {name!r} has a NUL byte in its name")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


@dataclass(frozen=True)
class _Member:
    rel: PurePosixPath  # path inside the archive (cleaned)
    is_dir: bool
    handle: object  # TarInfo or ZipInfo
    problem: str | None = None  # why extracting this member would be unsafe


def _tar_members(tar: tarfile.TarFile) -> list[_Member]:
    """List a tar's members; unsafe names raise at once, links and devices are flagged."""
    members = []
    for info in tar.getmembers():
        rel = _clean_member_name(info.name)
        problem = None
        if info.issym() or info.islnk():
            kind = "symbolic" if info.issym() else "hard"
            problem = f"member {info.name!r} is a {kind} link (to {info.linkname!r})"
        elif info.isdev():
            problem = f"member {info.name!r} is a device or FIFO"
        elif not (info.isfile() or info.isdir()):
            problem = f"member {info.name!r} has an unsupported type {info.type!r}"
        members.append(_Member(rel, info.isdir(), info, problem))
    return members


def _zip_members(zf: zipfile.ZipFile) -> list[_Member]:
    """List a zip's members; unsafe names raise at once, links and devices are flagged."""
    members = []
    for info in zf.infolist():
        rel = _clean_member_name(info.filename)
        mode = info.external_attr >> 16  # Unix mode, when the zip was made on Unix
        problem = None
        if stat.S_ISLNK(mode):
            problem = f"member {info.filename!r} is a symbolic link"
        elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            problem = f"member {info.filename!r} is a device, FIFO or socket"
        members.append(_Member(rel, info.is_dir(), info, problem))
    return members


def _select(
    members: Sequence[_Member], subdir: str | None, keep: Iterable[str] | None
) -> list[tuple[_Member, PurePosixPath]]:
    """Keep the members under ``subdir`` (and the listed class folders); return (member, out)."""
    base = _clean_member_name(subdir) if subdir else PurePosixPath(".")
    keep_set = set(keep) if keep is not None else None
    chosen = []
    for member in members:
        if base != PurePosixPath("."):
            if member.rel == base or base not in member.rel.parents:
                continue
            out = member.rel.relative_to(base)
        else:
            out = member.rel
        if out == PurePosixPath("."):
            continue
        if keep_set is not None:
            if out.parts[0] not in keep_set or (len(out.parts) == 1 and not member.is_dir):
                continue
        chosen.append((member, out))
    return chosen


def _new_temp_dir(dest: Path, tag: str) -> Path:
    """A fresh hidden temporary folder next to ``dest`` (same file system, for atomic renames)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.{tag}-", dir=dest.parent))


class _CorruptArchiveError(DataError):
    """Internal: the archive cannot be read (truncated or not an archive)."""


#: What the standard library raises on a truncated or corrupt archive.
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, zlib.error)


def _open_archive(archive: Path) -> tuple[tarfile.TarFile | zipfile.ZipFile, list[_Member]]:
    """Open a zip or tar archive and list its members (checked for safety)."""
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        try:
            return zf, _zip_members(zf)
        except BaseException:
            zf.close()
            raise
    if tarfile.is_tarfile(archive):
        tar = tarfile.open(archive, "r:*")
        try:
            return tar, _tar_members(tar)
        except BaseException:
            tar.close()
            raise
    raise _CorruptArchiveError(
        f"{archive} is neither a tar nor a zip archive (corrupt download?)."
    )


def _refusal(archive: Path, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"Refusing to extract {archive.name}: {reason}. Nothing was extracted; the archive is "
        "unsafe, get it from a trusted source."
    )


def _check_empty_or_missing(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(
            f"Destination {dest} already exists and is not empty; remove it or choose another."
        )


def safe_extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    subdir: str | None = None,
    keep: Iterable[str] | None = None,
    progress: bool = False,
) -> Path:
    """Extract a tar (plain, gz, bz2, xz) or zip archive, refusing anything unsafe.

    Every member is checked before anything is written: a member name that is absolute or
    has a ``..`` component anywhere in the archive, and a symbolic or hard link, device or FIFO
    among the members to extract, make the whole archive refused. Only regular files and
    folders are written, into a temporary folder next to ``dest`` that is then renamed to
    ``dest``.

    Parameters
    ----------
    archive : path-like
        The archive file.
    dest : path-like
        Result folder; it must not exist or be empty.
    subdir : str, optional
        Folder inside the archive whose contents become ``dest`` (others are skipped).
    keep : iterable of str, optional
        Names of the first-level folders under ``subdir`` to keep (class folders); every one
        must be present.
    progress : bool
        Show a tqdm progress bar over the members.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    UnsafeArchiveError
        A member would escape the destination or is a link or device; nothing is extracted.
    DataError
        Not a tar or zip file, ``subdir`` or a kept folder is missing, or ``dest`` is not empty.
    """
    archive, dest = Path(archive), Path(dest)
    keep = list(keep) if keep is not None else None
    _check_empty_or_missing(dest)
    try:
        arc, members = _open_archive(archive)
    except UnsafeArchiveError as exc:
        raise _refusal(archive, str(exc)) from None
    except _CORRUPT as exc:
        raise _CorruptArchiveError(
            f"{archive} is corrupt or truncated ({exc}); download it again."
        ) from exc
    with arc:
        chosen = _select(members, subdir, keep)
        unsafe = [m.problem for m, _ in chosen if m.problem]
        if unsafe:
            more = f" (and {len(unsafe) - 1} more)" if len(unsafe) > 1 else ""
            raise _refusal(archive, unsafe[0] + more)
        if not chosen:
            where = f"folder {subdir!r}" if subdir else "files"
            raise DataError(f"{archive.name} holds no {where}; is it the right archive?")
        if keep is not None:
            present = {out.parts[0] for _, out in chosen}
            missing = [k for k in keep if k not in present]
            if missing:
                raise DataError(
                    f"{archive.name} lacks the class folder(s) {missing} under "
                    f"{subdir or 'its root'!r}."
                )
        tmp = _new_temp_dir(dest, "extract")
        try:
            for member, out in tqdm(
                chosen, desc=f"extract {archive.name}", unit="file", disable=not progress,
                leave=False,
            ):
                target = tmp.joinpath(*out.parts)
                if member.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(arc, zipfile.ZipFile):
                    src = arc.open(member.handle)
                else:
                    src = arc.extractfile(member.handle)
                with src, open(target, "wb") as fh:
                    shutil.copyfileobj(src, fh, _CHUNK)
            if dest.exists():
                dest.rmdir()  # empty (checked above)
            os.replace(tmp, dest)
        except _CORRUPT as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _CorruptArchiveError(
                f"{archive} is corrupt or truncated ({exc}); download it again."
            ) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("extracted %d members of %s into %s", len(chosen), archive.name, dest)
    return dest


# --------------------------------------------------------------------------------------------
# fetch


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
        old = _new_temp_dir(dest, "old")
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

    stage = _new_temp_dir(dest, "fetch")
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
                except _CorruptArchiveError:
                    # A truncated cached archive would fail the same way every time.
                    _remove(cached)
                    logger.warning("removed the unreadable cached download %s", cached)
                    raise
        files, total = _write_marker(staged, dataset.name, source, method)
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
        _remove(cached)
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


# --------------------------------------------------------------------------------------------
# summary and command line


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
        The parsed command line (:mod:`lfhelpers.cli`).

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

