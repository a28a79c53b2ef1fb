"""Small file-system helpers: atomic writes and content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", durable: bool = True,
                 **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path`` and move it into place only on success.

    Parameters
    ----------
    path : path-like
        Final destination. Parent folders are created.
    mode : str
        ``"w"`` (text, UTF-8 by default) or ``"wb"``.
    durable : bool
        Flush the file to the disk (``fsync``) before it takes its place, so that a power cut
        cannot leave an empty file there. Caches whose damaged entries are recomputed pass
        ``False``: writing thousands of small entries then costs a tenth of the time.
    **kwargs
        Passed to :func:`open` (for example ``newline=""`` for CSV).

    Yields
    ------
    file object
        Write to it; on an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON, atomically.

    Parameters
    ----------
    path : path-like
        Destination file.
    data : Any
        JSON-serialisable object.
    """
    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False, sort_keys=False)
        fh.write("\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file's bytes.

    Parameters
    ----------
    path : path-like
        File to hash.
    chunk : int
        Read size in bytes.

    Returns
    -------
    str
        64 hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
