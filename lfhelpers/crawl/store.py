"""The crawl's files: journal and page cache (``OUT/.crawl``), the lock, and the sidecar."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lfhelpers.crawl.config import SIDECARS
from lfhelpers.crawl.names import normalize_url
from lfhelpers.errors import DataError
from lfhelpers.fsutil import atomic_write, write_json

#: The hidden state folder inside the output folder.
STATE_DIR = ".crawl"
#: Sidecar columns before the site's extra fields, and after them.
LEAD_COLUMNS = ["file", "category", "raw_category", "title", "date", "place"]
TAIL_COLUMNS = ["image_url", "detail_url", "page_url", "status", "reason", "note",
                "duplicate_of", "sha256", "bytes", "width", "height", "format", "fetched_at"]


class CrawlState:
    """The journal of processed items and the page cache under ``OUT/.crawl``."""

    def __init__(self, out: Path):
        self.out = out
        self.dir = out / STATE_DIR
        self.pages_dir = self.dir / "pages"
        self.pages_dir.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.dir / "journal.jsonl"
        self.records: dict[str, dict[str, Any]] = {}
        if self.journal_path.exists():
            with open(self.journal_path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut off by a hard stop
                    if isinstance(rec, dict) and rec.get("key"):
                        self.records[rec["key"]] = rec  # dict keeps first-seen order
        self._journal = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115

    def record(self, rec: dict[str, Any]) -> None:
        self.records[rec["key"]] = rec
        self._journal.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def _page_file(self, url: str) -> Path:
        digest = hashlib.sha256(normalize_url(url).encode()).hexdigest()[:24]
        return self.pages_dir / f"{digest}.json"

    def cached_page(self, url: str) -> tuple[str, str] | None:
        path = self._page_file(url)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return data["final_url"], data["html"]
        except (OSError, ValueError, KeyError):
            return None

    def store_page(self, url: str, final_url: str, html: str) -> None:
        write_json(self._page_file(url), {"url": url, "final_url": final_url, "html": html})

    def close(self) -> None:
        self._journal.close()


@contextlib.contextmanager
def lock(state_dir: Path) -> Iterator[None]:
    """Hold ``state_dir/lock`` (the process id) while a crawl writes; a stale lock is taken."""
    path = state_dir / "lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            alive = False
            if pid > 0 and pid != os.getpid():
                try:
                    os.kill(pid, 0)
                    alive = True
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    alive = True
            if alive:
                raise DataError(f"Another crawl (process {pid}) is writing to "
                                f"{state_dir.parent}; wait for it or remove {path}.") from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def remove_stale_temp(out: Path) -> None:
    """Delete temporary files an interrupted run left (``.name.XXXX.tmp`` of atomic writes)."""
    folders = [out, out / STATE_DIR / "pages",
               *(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())]
    for folder in folders:
        for tmp in folder.glob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)


def inside(root: Path, path: Path) -> Path:
    """Return ``path``, or raise :class:`DataError` when it resolves outside ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(f"Refusing to write {path}: it resolves outside the output folder {root}.")
    return path


def _rows(records: Mapping[str, Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    extras: dict[str, None] = {}
    rows = []
    for rec in records.values():
        row = {k: rec.get(k, "") for k in (*LEAD_COLUMNS, *TAIL_COLUMNS)}
        row.update(rec.get("extra") or {})
        extras.update(dict.fromkeys(rec.get("extra") or {}))
        rows.append(row)
    return rows, [*LEAD_COLUMNS, *(e for e in extras if e not in LEAD_COLUMNS + TAIL_COLUMNS),
                  *TAIL_COLUMNS]


def write_sidecar(out_dir: str | os.PathLike[str], fmt: str = "csv") -> Path:
    """(Re)write ``OUT/items.csv`` or ``OUT/items.jsonl`` from the crawl journal, atomically.

    Parameters
    ----------
    out_dir : path-like
        A crawl output folder.
    fmt : str
        ``csv`` or ``jsonl``.

    Returns
    -------
    pathlib.Path
        The sidecar: one row per item, saved or not, in crawl order.
    """
    out = Path(out_dir)
    state = CrawlState(out)
    state.close()
    rows, columns = _rows(state.records)
    path = out / SIDECARS[fmt]
    if fmt == "csv":
        with atomic_write(path, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    else:
        with atomic_write(path) as fh:
            for row in rows:
                fh.write(json.dumps({c: row.get(c, "") for c in columns}, ensure_ascii=False)
                         + "\n")
    other = out / SIDECARS["jsonl" if fmt == "csv" else "csv"]
    other.unlink(missing_ok=True)
    return path
