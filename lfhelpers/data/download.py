"""A checked, resumable download of one file over HTTP(S).

:func:`download` writes to ``<file>.part`` and renames it into place only when it is complete
and, where a SHA-256 is known, verified. Retries of failed requests (connection errors, read
timeouts, HTTP 408/425/429/5xx, honouring ``Retry-After``) are urllib3's, through the session
of :func:`lfhelpers.http.make_session`; a transfer that breaks off is resumed with an HTTP
``Range`` request, here or on a later run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from lfhelpers.errors import DownloadError, NetworkUnavailableError
from lfhelpers.fsutil import sha256_file
from lfhelpers.http import (
    PRODUCT,
    RETRY_STATUSES,
    Retry,
    is_unreachable,
    make_session,
    short_reason,
    split_timeout,
)

logger = logging.getLogger(__name__)

#: Back-off factor between download attempts, in seconds (``RETRY_BACKOFF_S`` before the first
#: retry, then ``2 * RETRY_BACKOFF_S``, ``4 * RETRY_BACKOFF_S`` ...).
RETRY_BACKOFF_S = 1.0
#: Longest ``Retry-After`` a download waits for, in seconds; a longer one ends the retries.
MAX_RETRY_AFTER_S = 60.0

_CHUNK = 1 << 16
_USER_AGENT = f"{PRODUCT} (lost-and-found workbook data fetch)"


class _Interrupted(Exception):
    """Internal: the transfer stopped early; the next request resumes (or restarts) it."""


def _part_paths(dest_file: Path) -> tuple[Path, Path]:
    """Return the ``.part`` file and its side-car (the server's validator) for ``dest_file``."""
    return (
        dest_file.with_name(dest_file.name + ".part"),
        dest_file.with_name(dest_file.name + ".part.json"),
    )


def remove_files(*paths: Path) -> None:
    """Delete files that may not exist."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


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


def _attempts(response: requests.Response) -> int:
    """Requests urllib3 made for this answer: the first one and its retries."""
    retries = getattr(response.raw, "retries", None)
    return 1 + len(getattr(retries, "history", ()))


def _request(session: requests.Session, url: str, headers: dict[str, str],
             timeout: float | tuple[float, float], retries: int) -> requests.Response:
    """GET ``url`` (urllib3 retries included); raise the package's errors when it fails."""
    try:
        return session.get(url, headers=headers, stream=True, timeout=split_timeout(timeout))
    except requests.RequestException as exc:
        reason = short_reason(exc)
        if is_unreachable(exc):
            error = NetworkUnavailableError(
                f"Could not reach {url} after {retries + 1} attempts: could not connect: "
                f"{reason}")
            error.reason = reason  # type: ignore[attr-defined]
            raise error from exc
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            raise DownloadError(
                f"Download of {url} failed after {retries + 1} attempts: {reason}. Run the "
                "command again to resume from the partial file.") from exc
        raise DownloadError(f"Download of {url} failed: {reason}") from exc


def _check_status(response: requests.Response, url: str, offset: int, part: Path,
                  sidecar: Path) -> None:
    """Raise for an answer that carries no usable body."""
    status = response.status_code
    if status == 416 and offset:
        # The partial file is as long as (or longer than) the file: start over.
        logger.info("server refused to resume %s at byte %d; restarting", url, offset)
        remove_files(part, sidecar)
        raise _Interrupted("range not satisfiable, restarting")
    if status in RETRY_STATUSES:
        asked = response.headers.get("Retry-After")
        wait = f" and asks to wait {asked} s (Retry-After)" if asked else ""
        raise DownloadError(
            f"Download of {url} failed: the server answered HTTP {status} {response.reason}"
            f"{wait} after {_attempts(response)} attempts. Try again later; a rerun resumes "
            "from the partial file.")
    if status >= 400:
        raise DownloadError(
            f"Download of {url} failed: the server answered HTTP {status} {response.reason}. "
            "Check the URL (or its LF_DATASET_URL_<NAME> override).")
    if status == 206 and not (offset and _content_range_start(response) == offset):
        remove_files(part, sidecar)
        raise _Interrupted("the server sent an unexpected byte range; restarting")


def _fetch_once(
    session: requests.Session,
    url: str,
    part: Path,
    sidecar: Path,
    *,
    size_limit: int | None,
    timeout: float | tuple[float, float],
    retries: int,
    progress: bool,
    label: str,
) -> bool:
    """Run one request and append to ``part``; return True when it resumed a partial file.

    Raises :class:`_Interrupted` when the transfer should be resumed or restarted, and
    :class:`DownloadError` for final failures.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        with contextlib.suppress(OSError, ValueError):
            validator = json.loads(sidecar.read_text(encoding="utf-8")).get("validator")
            if validator:
                headers["If-Range"] = validator
    with _request(session, url, headers, timeout, retries) as response:
        _check_status(response, url, offset, part, sidecar)
        resumed = response.status_code == 206
        if not resumed:
            if offset:
                logger.info("server ignored the Range request for %s; restarting from 0", url)
            offset = 0
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            part.parent.mkdir(parents=True, exist_ok=True)
            sidecar.write_text(json.dumps({"url": url, "validator": validator}), encoding="utf-8")

        total = _expected_total(response, offset)
        if size_limit is not None and total is not None and total > size_limit:
            remove_files(part, sidecar)
            raise DownloadError(
                f"Download of {url} refused: the server announces {total:,} bytes, more than "
                f"the size limit of {size_limit:,} bytes.")
        written = _stream(response, part, "ab" if resumed else "wb", offset, total, size_limit,
                          url, sidecar, tqdm(total=total, initial=offset, unit="B",
                                             unit_scale=True, unit_divisor=1024, desc=label,
                                             disable=not progress, leave=False))
        if total is not None and written != total:
            raise _Interrupted(f"received {written:,} of {total:,} bytes")
        return resumed


def _stream(response: requests.Response, part: Path, mode: str, offset: int,
            total: int | None, size_limit: int | None, url: str, sidecar: Path,
            bar: Any) -> int:
    """Write the body to ``part``; return the bytes now in it."""
    written = offset
    try:
        with open(part, mode) as fh:
            for block in response.iter_content(chunk_size=_CHUNK):
                written += len(block)
                if size_limit is not None and written > size_limit:
                    fh.close()
                    remove_files(part, sidecar)
                    raise DownloadError(
                        f"Download of {url} aborted: it exceeded the size limit of "
                        f"{size_limit:,} bytes (partial file removed).")
                fh.write(block)
                bar.update(len(block))
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.Timeout) as exc:
        raise _Interrupted(f"connection broken after {written:,} bytes "
                           f"({short_reason(exc)})") from exc
    finally:
        bar.close()
    return written


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
    Failed requests (connection errors, timeouts, HTTP 408/425/429/5xx) are retried by urllib3
    with exponential back-off, honouring ``Retry-After`` up to :data:`MAX_RETRY_AFTER_S`; a
    transfer that breaks off is resumed.

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
        timeout at :data:`lfhelpers.http.CONNECT_TIMEOUT_S`.
    retries : int
        Retries of a failed request after its first attempt, and also the number of times a
        broken transfer is resumed.
    progress : bool
        Show a tqdm progress bar.
    backoff : float, optional
        Back-off factor in seconds (see :data:`RETRY_BACKOFF_S`, the default).

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
    label = dest_file.name if len(dest_file.name) <= 40 else dest_file.name[:37] + "..."

    def tell(retry: Retry, _url: str, response: Any, error: Exception | None) -> None:
        # urllib3 itself warns about connection errors; answers it retries quietly
        level = logging.WARNING if response is not None else logging.INFO
        what = f"HTTP {response.status}" if response is not None else short_reason(error)
        logger.log(level, "download of %s: %s; retrying in %.1f s (attempt %d of %d)", url,
                   what, retry.wait_before_next(response), len(retry.history) + 1, retries + 1)

    session = make_session(retries, RETRY_BACKOFF_S if backoff is None else backoff,
                           user_agent=_USER_AGENT, max_retry_after=MAX_RETRY_AFTER_S,
                           on_retry=tell)
    resumes = 0
    restarted_after_mismatch = False
    with session:
        while True:
            try:
                resumed = _fetch_once(session, url, part, sidecar, size_limit=size_limit,
                                      timeout=timeout, retries=retries, progress=progress,
                                      label=label)
            except _Interrupted as exc:
                if resumes >= retries:
                    raise DownloadError(
                        f"Download of {url} failed after {resumes + 1} attempts: {exc}. "
                        "Run the command again to resume from the partial file.") from exc
                resumes += 1
                logger.warning("download of %s: %s; resuming (attempt %d of %d)", url, exc,
                               resumes + 1, retries + 1)
                continue
            if sha256 is not None:
                actual = sha256_file(part)
                if actual.lower() != sha256.lower():
                    remove_files(part, sidecar)
                    if resumed and not restarted_after_mismatch:
                        # The old partial file may have come from another version: start over.
                        logger.warning(
                            "checksum mismatch after resuming %s; downloading it again", url)
                        restarted_after_mismatch = True
                        continue
                    raise DownloadError(
                        f"Checksum mismatch for {url}: expected sha256 {sha256}, got {actual}. "
                        "The file was not kept; the source may have changed or the transfer "
                        "was corrupted.")
            os.replace(part, dest_file)
            remove_files(sidecar)
            logger.info("downloaded %s -> %s", url, dest_file)
            return dest_file
