"""One writer per run folder: an advisory lock on ``<out>/.run.lock``.

Two ``run`` commands into the same output folder would both write ``run.json``, ``metrics.json``
and the fingerprints in ``.cache/``. :func:`run_lock` takes an exclusive, non-blocking lock on a
file in the folder for as long as a run writes there; a second run stops at once with a message
naming the first (its process id and start time, written into the file). The lock is the
operating system's (``flock`` on POSIX, ``msvcrt.locking`` on Windows) and belongs to the open
file, so it is freed when the process ends, however it ends: a stale lock file never blocks.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from ..errors import BusyError

LOCK_NAME = ".run.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


def _try_lock(fh: IO[str]) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(fh: IO[str]) -> None:
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    else:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)


@contextmanager
def run_lock(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the write lock of run folder ``out`` (created if needed) inside the ``with``.

    Raises
    ------
    BusyError
        At once, when another process holds it; the message names that process.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
    try:
        if not _try_lock(fh):
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise BusyError(
                f"Another run is writing into {out} ({holder}). Wait for it to finish, or give "
                "this run another --out folder; two runs into one folder would overwrite each "
                "other's run.json and cache.")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, started "
                 f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC\n")
        fh.flush()
        try:
            yield path
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            _unlock(fh)
    finally:
        fh.close()
