"""Cleanup of a raw class-folder image set.

``clean_dataset(raw_dir, clean_dir)`` decodes every file fully, converts it to 8-bit RGB (greyscale,
palette, CMYK, alpha composited on white, 16-bit scaled), applies the EXIF orientation, rejects
images that are too small or too large, removes exact duplicates (content hash) and near duplicates
(perceptual hash), quarantines photos filed under two labels (``label_conflict``: the same or a
near-identical photo in two class folders), applies the analyst's reviewed corrections
(``clean_dir/corrections.csv``, see :mod:`lfhelpers.data.corrections`), and writes:

- ``clean_dir/<label>/<file>``: the clean images (byte copies when the raw file was already a plain
  RGB JPEG or PNG with no orientation tag; otherwise re-encoded losslessly as PNG);
- ``clean_dir/_quarantine/<reason>/<label>/<file>``: a copy of every rejected file;
- ``clean_dir/rejects.csv``: ``source, label, reason, detail, quarantine``;
- ``clean_dir/manifest.csv``: see :mod:`lfhelpers.data.manifest` (the split column is filled by
  :func:`lfhelpers.split.split_manifest`).

The raw folder is never modified. A rerun only decodes files that are new or changed (a per-file
cache in ``clean_dir/.clean_cache.json``, which also keeps each photo's quality statistics of
:func:`lfhelpers.data.quality.image_stats` for the audit) and writes the same manifest.

This module walks the folders, keeps the cache, applies the corrections and writes the clean set
and the quarantine; the checks of one file are in :mod:`lfhelpers.data.checks` (which decodes
through the one image loader, :mod:`lfhelpers.images`), the duplicates in
:mod:`lfhelpers.data.duplicates`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from lfhelpers.data.checks import CleanOptions, FileResult, check_file, inspect_file
from lfhelpers.data.corrections import apply_corrections
from lfhelpers.data.duplicates import mark_duplicates
from lfhelpers.data.manifest import MANIFEST, MANIFEST_COLUMNS
from lfhelpers.data.quality import STATS_VERSION
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write, sha256_file, write_json
from lfhelpers.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

QUARANTINE = "_quarantine"
REJECTS = "rejects.csv"
CACHE = ".clean_cache.json"
CACHE_VERSION = 2

#: Reasons a file can be rejected, in the order they are checked.
REASONS = ("empty_file", "not_an_image", "decode_error", "truncated", "too_large", "too_small",
           "rejected_by_review", "exact_duplicate", "label_conflict", "near_duplicate")


@dataclass
class CleanReport:
    """Summary of one cleanup run."""

    clean_dir: Path
    manifest: pd.DataFrame
    rejects: pd.DataFrame
    n_raw: int
    n_decoded: int
    n_cached: int
    n_relabelled: int = 0

    @property
    def n_clean(self) -> int:
        """Number of clean images."""
        return len(self.manifest)

    @property
    def n_rejected(self) -> int:
        """Number of quarantined files."""
        return len(self.rejects)

    def rejected_by_reason(self) -> dict[str, int]:
        """Count of rejects per reason."""
        return {str(k): int(v) for k, v in self.rejects["reason"].value_counts().items()}


def read_label_map(path: str | os.PathLike[str] | None) -> dict[str, str | None]:
    """Read a label-mapping file: raw folder name -> project label.

    Parameters
    ----------
    path : path-like or None
        A CSV with columns ``folder,label``, or a JSON/YAML mapping. An empty label drops that
        folder (logged). ``None`` or ``""`` gives an empty mapping (folder names are labels).

    Returns
    -------
    dict
        Folder name (NFC-normalised) to label, or to ``None`` for folders to drop.
    """
    if not path:
        return {}
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Label map {path} does not exist.")
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if not {"folder", "label"} <= set(frame.columns):
            raise ConfigError(f"Label map {path} needs the columns 'folder' and 'label'.")
        pairs: Iterable[tuple[str, str]] = zip(frame["folder"], frame["label"], strict=True)
    else:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, Mapping):
            raise ConfigError(f"Label map {path} must be a mapping of folder -> label.")
        pairs = data.items()
    return {_nfc(str(k)): (_nfc(str(v)).strip() or None) if v is not None else None
            for k, v in pairs}


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def list_raw_files(raw_dir: Path) -> list[tuple[str, str]]:
    """List ``(relative path, folder label)`` for every file under ``raw_dir/<label>/``.

    Hidden files and folders (starting with ``.``) are skipped. Files directly in ``raw_dir``
    have no label: sidecars (``items.csv`` of a crawl) are ignored quietly, images with a warning.
    """
    found: list[tuple[str, str]] = []
    loose = 0
    for entry in sorted(raw_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            loose += entry.suffix.lower() in IMAGE_SUFFIXES
            continue
        for dirpath, dirnames, filenames in os.walk(entry):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel = (Path(dirpath) / name).relative_to(raw_dir).as_posix()
                found.append((rel, _nfc(entry.name)))
    if loose:
        log.warning("%d image(s) directly in %s have no class folder and were ignored.", loose,
                    raw_dir)
    return found


def _load_cache(clean_dir: Path, options: CleanOptions) -> dict[str, FileResult]:
    path = clean_dir / CACHE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("Ignoring unreadable cache %s", path)
        return {}
    if (data.get("version"), data.get("stats_version")) != (CACHE_VERSION, STATS_VERSION) or (
            data.get("options") != _options_key(options)):
        return {}
    return {k: FileResult(**v) for k, v in data.get("files", {}).items()}


def _options_key(options: CleanOptions) -> dict:
    key = asdict(options)
    key["extensions"] = list(key["extensions"])
    # dedup distances do not change per-file decode results
    key.pop("near_dup_distance")
    key.pop("group_distance")
    return key


def _safe_name(label: str, rel: str, ext: str, taken: set[str]) -> str:
    """A unique output file name under the label folder, derived from the raw file name."""
    stem = _nfc(Path(rel).stem).replace("/", "_").strip() or "image"
    name = f"{stem}{ext}"
    k = 1
    while f"{label}/{name}".casefold() in taken:
        name = f"{stem}_{k}{ext}"
        k += 1
    taken.add(f"{label}/{name}".casefold())
    return name


def clean_dataset(
    raw_dir: str | os.PathLike[str],
    clean_dir: str | os.PathLike[str],
    *,
    options: CleanOptions | None = None,
    label_map: Mapping[str, str | None] | str | os.PathLike[str] | None = None,
    n_jobs: int = 1,
    progress: bool = True,
    corrections: str | os.PathLike[str] | None = None,
) -> CleanReport:
    """Clean a raw class-folder image set into ``clean_dir`` (see the module docstring).

    Parameters
    ----------
    raw_dir : path-like
        Folder of class sub-folders (folder name = label). Never modified.
    clean_dir : path-like
        Output folder; created. Must not be inside ``raw_dir``.
    options : CleanOptions, optional
        Size limits and duplicate distances.
    label_map : mapping or path, optional
        Raw folder name -> label (``None``/empty drops a folder); see :func:`read_label_map`.
    n_jobs : int
        Worker processes for decoding (joblib); ``-1`` uses every core.
    progress : bool
        Show a tqdm progress bar.
    corrections : path-like, optional
        The analyst's reviewed corrections (``path, action, new_label, note``; see
        :mod:`lfhelpers.data.corrections`). Default: ``clean_dir/corrections.csv`` when it
        exists. Relabelled photos move to their new label with ``original_label`` recorded in
        the manifest; rejected ones are quarantined as ``rejected_by_review``.

    Returns
    -------
    CleanReport
        Manifest (split column still empty), rejects and counts.

    Raises
    ------
    DataError
        When ``raw_dir`` is missing or holds no class folder with files.
    """
    options = options or CleanOptions()
    raw_dir = Path(raw_dir).resolve()
    clean_dir = Path(clean_dir).resolve()
    if not raw_dir.is_dir():
        raise DataError(f"Raw folder {raw_dir} does not exist; fetch a data set or point "
                        "data_dir at a folder of class sub-folders.")
    if clean_dir == raw_dir or raw_dir in clean_dir.parents:
        raise ConfigError(f"The clean folder {clean_dir} must not be inside the raw folder "
                          f"{raw_dir} (raw data is never modified).")
    if not isinstance(label_map, Mapping):
        label_map = read_label_map(label_map)
    files = list_raw_files(raw_dir)
    if not files:
        raise DataError(f"{raw_dir} holds no class sub-folder with files; expected "
                        f"{raw_dir}/<label>/<image>.")
    mapped: list[tuple[str, str]] = []
    dropped: dict[str, int] = {}
    for rel, folder in files:
        label = label_map.get(folder, folder) if label_map else folder
        if label is None:
            dropped[folder] = dropped.get(folder, 0) + 1
            continue
        mapped.append((rel, label))
    for folder, count in dropped.items():
        log.warning("Label map drops folder %r (%d files).", folder, count)

    clean_dir.mkdir(parents=True, exist_ok=True)
    cache = _load_cache(clean_dir, options)
    todo: list[tuple[str, str]] = []
    results: dict[str, FileResult] = {}
    for rel, label in mapped:
        stat = (raw_dir / rel).stat()
        hit = cache.get(rel)
        if hit and hit.size == stat.st_size and hit.mtime_ns == stat.st_mtime_ns:
            hit.label = label
            results[rel] = hit
        else:
            todo.append((rel, label))
    if todo:
        jobs = (delayed(check_file)(raw_dir, rel, label, options) for rel, label in todo)
        iterator = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
        for res in tqdm(iterator, total=len(todo), desc="decode", disable=not progress,
                        unit="img"):
            results[res.source] = res
    write_json(clean_dir / CACHE, {"version": CACHE_VERSION, "stats_version": STATS_VERSION,
                                   "options": _options_key(options),
                                   "files": {k: asdict(v) for k, v in sorted(results.items())}})

    ordered = [FileResult(**asdict(results[rel])) for rel, _ in mapped]
    n_relabelled = apply_corrections(ordered, clean_dir, corrections,
                                     _previous_outputs(clean_dir))
    mark_duplicates(ordered, options)
    manifest, rejects = _write_outputs(raw_dir, clean_dir, ordered, options)
    report = CleanReport(clean_dir=clean_dir, manifest=manifest, rejects=rejects,
                         n_raw=len(files), n_decoded=len(todo), n_cached=len(mapped) - len(todo),
                         n_relabelled=n_relabelled)
    for row in rejects.itertuples():
        log.info("rejected %s: %s (%s)", row.source, row.reason, row.detail)
    return report


def _write_outputs(raw_dir: Path, clean_dir: Path, results: list[FileResult],
                   options: CleanOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write clean files, quarantine copies, rejects.csv and manifest.csv (split left empty)."""
    taken: set[str] = set()
    previous = _previous_outputs(clean_dir)
    rows, reject_rows = [], []
    expected: set[Path] = set()
    for res in results:
        src = raw_dir / res.source
        if not res.ok:
            target = clean_dir / QUARANTINE / res.reason / res.label / Path(res.source).name
            expected.add(target)
            if not target.exists() or target.stat().st_size != res.size:
                _copy_atomic(src, target)
            reject_rows.append({"source": res.source, "label": res.label, "reason": res.reason,
                                "detail": res.detail,
                                "quarantine": target.relative_to(clean_dir).as_posix()})
            continue
        name = _safe_name(res.label, res.source, res.out_ext, taken)
        target = clean_dir / res.label / name
        expected.add(target)
        rel = f"{res.label}/{name}"
        if res.copy_bytes:
            digest = res.sha256
            if not (target.exists() and target.stat().st_size == res.size):
                _copy_atomic(src, target)
        else:
            digest = previous.get(res.source, ("", ""))[1]
            if not (previous.get(res.source, ("",))[0] == rel and target.exists()
                    and sha256_file(target) == digest):
                img, _ = inspect_file(src, options)
                if img is None:  # the raw file changed between decode and write
                    raise DataError(f"{src} changed while cleaning; run the cleanup again.")
                with atomic_write(target, "wb") as fh:
                    img.save(fh, "PNG")
                digest = sha256_file(target)
        rows.append({"path": rel, "label": res.label, "split": "", "sha256": digest,
                     "phash": res.phash, "group": res.extra["group"], "width": res.width,
                     "height": res.height, "bytes": target.stat().st_size,
                     "source": res.source,
                     "original_label": res.extra.get("original_label", "")})
    _remove_stale(clean_dir, expected)
    relabelled = any(row["original_label"] for row in rows)
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + ["original_label"] * relabelled)
    rejects = pd.DataFrame(reject_rows,
                           columns=["source", "label", "reason", "detail", "quarantine"])
    with atomic_write(clean_dir / REJECTS, newline="") as fh:
        rejects.to_csv(fh, index=False, quoting=csv.QUOTE_MINIMAL)
    return manifest, rejects


def _copy_atomic(src: Path, target: Path) -> None:
    with atomic_write(target, "wb") as fh, open(src, "rb") as raw:
        shutil.copyfileobj(raw, fh)


def _previous_outputs(clean_dir: Path) -> dict[str, tuple[str, str]]:
    """``{source: (clean path, sha256)}`` from the manifest of an earlier run, if any."""
    path = clean_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        return dict(zip(old["source"], zip(old["path"], old["sha256"], strict=True),
                        strict=True))
    except (OSError, ValueError, KeyError):
        return {}


def _remove_stale(clean_dir: Path, expected: set[Path]) -> None:
    """Move outputs of an earlier run that this run no longer produces into quarantine/stale.

    Clean files are derived data, but they are still moved rather than deleted.
    """
    for path in sorted(clean_dir.rglob("*")):
        if not path.is_file() or path in expected:
            continue
        rel = path.relative_to(clean_dir)
        if rel.parts[0].startswith(".") or rel.parts[0] == "_stale" or len(rel.parts) < 2:
            continue
        target = clean_dir / "_stale" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        log.info("Moved stale output %s to %s", rel, target.relative_to(clean_dir))
