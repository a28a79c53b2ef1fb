"""Safe extraction of tar and zip archives.

:func:`safe_extract` checks every member before it writes anything: a member name that is
absolute or has a ``..`` component anywhere in the archive, and a symbolic or hard link, a
device or a FIFO among the members to extract, make the whole archive refused
(:class:`~lfhelpers.errors.UnsafeArchiveError`). Only regular files and folders are written,
into a temporary folder next to the destination that is renamed into place at the end.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from lfhelpers.errors import DataError, UnsafeArchiveError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16


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


def new_temp_dir(dest: Path, tag: str) -> Path:
    """A fresh hidden temporary folder next to ``dest`` (same file system, for atomic renames)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.{tag}-", dir=dest.parent))


class CorruptArchiveError(DataError):
    """The archive cannot be read (truncated, or not an archive at all)."""


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
    raise CorruptArchiveError(
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
        raise CorruptArchiveError(
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
        tmp = new_temp_dir(dest, "extract")
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
            raise CorruptArchiveError(
                f"{archive} is corrupt or truncated ({exc}); download it again."
            ) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("extracted %d members of %s into %s", len(chosen), archive.name, dest)
    return dest
