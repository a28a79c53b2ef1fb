"""The explorer's inputs: which run to show, what is missing, and photos uploaded by a user.

An uploaded photo is untrusted: it goes through the checks of the cleanup (file size limit,
decompression-bomb guard on the pixel count, a complete decode, the minimum side) before any
model sees it, and it is kept in memory only; :func:`save_upload` writes it to ``data/uploads``
when the analyst asks for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from lfhelpers.explore.sources import (
    CleanOptions,
    DataError,
    atomic_write,
    open_image,
    project_path,
)

#: Where :func:`save_upload` keeps uploaded photos (relative to the project folder).
UPLOAD_DIR = Path("data") / "uploads"
#: Largest photo the explorer accepts from a visitor (a phone photo is 2-12 MB). The page
#: refuses a larger file before sending it, with a message; ``make explore`` lets the server
#: take messages a little larger, so that the kernel's own check answers when the page's
#: does not run.
UPLOAD_MAX_BYTES = 20_000_000


class MissingInput(DataError):
    """An earlier notebook's output the explorer needs is not there; the message says which."""


def newest_run(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The run folder to show by default: ``reports/latest`` or the newest ``reports/runs/*``.

    Parameters
    ----------
    root : path-like, optional
        The project folder (default: :func:`lfhelpers.paths.project_root`).

    Returns
    -------
    pathlib.Path or None
        ``reports/latest`` when it holds a ``run.json``, else the most recently finished run
        under ``reports/runs/``, else ``None``.
    """
    base = Path(root) if root is not None else project_path(".")
    latest = base / "reports" / "latest"
    if (latest / "run.json").is_file():
        return latest
    runs = [p.parent for p in (base / "reports" / "runs").glob("*/run.json")]
    return max(runs, key=lambda p: (p / "run.json").stat().st_mtime) if runs else None


def resolve_run_dir(run_dir: str | os.PathLike[str] | None) -> Path | None:
    """``run_dir`` as a folder, or the default of :func:`newest_run` when it is empty."""
    if run_dir:
        return project_path(run_dir)
    return newest_run()


@dataclass
class RunInfo:
    """What a run folder says about itself (``run.json`` and ``metrics.json``)."""

    folder: Path | None
    profile: str = ""
    finished: str = ""
    metrics: dict | None = None

    def describe(self) -> str:
        """One line: the run's folder, profile and time, or that there is none."""
        if self.folder is None:
            return "no pipeline run found (reports/latest or reports/runs/*)"
        when = f", finished {self.finished}" if self.finished else ""
        profile = f"profile {self.profile}" if self.profile else "run"
        return f"{profile} in {self.folder.name}{when}"


def read_run(run_dir: str | os.PathLike[str] | None) -> RunInfo:
    """Read ``run.json`` and ``metrics.json`` of a run folder (missing files: empty fields)."""
    folder = resolve_run_dir(run_dir)
    if folder is None or not folder.is_dir():
        return RunInfo(folder=None)
    info = RunInfo(folder=folder, metrics={})
    try:
        run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        info.profile = str(run.get("profile", ""))
        info.finished = str(run.get("finished_utc", ""))
    except (OSError, ValueError):
        pass
    try:
        info.metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    return info


@dataclass
class Upload:
    """A checked, decoded photo from the user.

    Attributes
    ----------
    name : str
        The file name the user gave (for display only).
    key : str
        ``upload:<sha256 prefix>``: how the matcher's tables refer to this photo.
    image : PIL.Image.Image
        The decoded RGB photo (EXIF orientation applied).
    content : bytes
        The bytes as uploaded (written only by :func:`save_upload`).
    """

    name: str
    key: str
    image: Image.Image
    content: bytes


def check_upload(content: bytes | bytearray | memoryview, name: str = "upload",
                 options: CleanOptions | None = None, max_bytes: int | None = None) -> Upload:
    """Check an uploaded photo as the cleanup checks a raw file, and decode it.

    Parameters
    ----------
    content : bytes
        The file's bytes.
    name : str
        Its name, for messages.
    options : CleanOptions, optional
        Limits (default: the cleanup's: file size, pixel count, minimum side).
    max_bytes : int, optional
        A smaller file-size limit than ``options.max_bytes`` (the explorer's
        :data:`UPLOAD_MAX_BYTES`).

    Returns
    -------
    Upload

    Raises
    ------
    DataError
        With a one-line message when the file is empty, too large, not an image, damaged or
        too small.
    """
    options = options or CleanOptions()
    data = bytes(content)
    shown = _safe_name(name)
    if not data:
        raise DataError(f"{shown} is empty.")
    limit = min(options.max_bytes, max_bytes or options.max_bytes)
    if len(data) > limit:
        raise DataError(f"{shown} is too large ({len(data) / 1e6:.1f} MB, more than "
                        f"{limit / 1e6:.0f} MB).")
    try:
        image = open_image(data, max_pixels=options.max_pixels)
    except DataError as exc:
        raise DataError(str(exc).replace("<image>", shown)) from None
    if min(image.size) < options.min_side:
        raise DataError(f"{shown} is too small ({image.width}x{image.height} pixels; the "
                        f"shorter side must be at least {options.min_side}).")
    key = "upload:" + hashlib.sha256(data).hexdigest()[:16]
    return Upload(name=shown, key=key, image=image, content=data)


def _safe_name(name: str) -> str:
    """A file name without folders or odd characters (for messages and saving)."""
    base = Path(str(name).replace("\\", "/")).name or "upload"
    base = re.sub(r"[^\w.\-]+", "_", base, flags=re.UNICODE).strip("._") or "upload"
    return base[:80]


def save_upload(upload: Upload, folder: str | os.PathLike[str] = UPLOAD_DIR) -> Path:
    """Write an uploaded photo to ``folder`` (``data/uploads``), named by its content.

    Parameters
    ----------
    upload : Upload
        From :func:`check_upload`.
    folder : path-like
        Target folder (relative: to the project folder).

    Returns
    -------
    pathlib.Path
        ``<folder>/<sha256 prefix>-<name>``; an existing identical file is kept.
    """
    target = project_path(folder) / f"{upload.key.split(':', 1)[1]}-{upload.name}"
    if not target.exists():
        with atomic_write(target, "wb") as fh:
            fh.write(upload.content)
    return target


def read_upload_value(value: Any) -> tuple[bytes, str] | None:
    """The first file of an ipywidgets ``FileUpload`` value as ``(bytes, name)``, or ``None``."""
    items = list(value.values()) if isinstance(value, dict) else list(value or ())
    if not items:
        return None
    item = items[0]
    get = item.get if isinstance(item, dict) else lambda k, d=None: getattr(item, k, d)
    content = get("content", b"")
    if isinstance(content, memoryview):
        content = content.tobytes()
    return bytes(content), str(get("name", "upload") or "upload")
