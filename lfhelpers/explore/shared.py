"""The explorer's shared, read-only state: computed once per run, memory-mapped by every visitor.

Every page visit of the served explorer starts its own kernel. What is the same for every
visitor (the lost photos' vectors, the classifier's probabilities, the colour names, the
thumbnails, the 2-D map) is computed once per run by :func:`prepare`, in a separate process
so that the visitor's kernel never imports TensorFlow, and written to one folder under the
cache:

``<cache_dir>/explore/shared-<key>/``
    ``files.json``        every photo shown (found items, then lost photos), absolute paths
    ``vectors.npy``       their global vectors by the search engine's recipe (float32)
    ``proba.npy``         the classifier's probabilities (when notebook 03's model exists),
                          with ``classes.json``
    ``palettes.json``     the main colours of each photo (when a colour model exists)
    ``thumbs.bin``        JPEG thumbnails, one after the other, ``thumbs.npy`` their offsets
    ``map-<method>.npy``  the 2-D map of the vectors
    ``info.json``         written last: the folder is complete

``key`` hashes everything the contents depend on (the manifest, the saved search engine, the
classifier, the colour model, the seed), so a new run gets a new folder and a visitor never
reads a half-written one (a lock file lets one process prepare while the others wait).
:class:`SharedState` opens the folder with ``numpy.load(mmap_mode="r")``: the visitors'
kernels share the pages of the operating system's file cache instead of holding copies.

Run as a module (``python -m lfhelpers.explore.shared SPEC.json``) it prepares one folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lfhelpers.explore import sources as src
from lfhelpers.fsutil import sha256_file
from lfhelpers.store import ContentStore

log = logging.getLogger(__name__)

#: Bumped when the folder's layout or contents change.
VERSION = 2
#: Longer side of the stored thumbnails (the cards show them at 160-220 px).
THUMB_SIDE = 224
#: Their JPEG quality.
THUMB_QUALITY = 82
#: A JPEG at most this many times THUMB_SIDE (and SMALL_BYTES long) is its own thumbnail.
SMALL_FACTOR = 1.5
SMALL_BYTES = 64 * 1024
#: Seconds a visitor's kernel waits for another process that is preparing the same folder.
WAIT_SECONDS = 1800


@dataclass
class SharedSpec:
    """What :func:`prepare` needs (JSON-friendly; paths absolute)."""

    clean_dir: str
    index_dir: str
    gallery: list[str]
    queries: list[str]
    classifier_model: str = ""
    color_model: str = ""
    color_source: str = ""
    cache_dir: str = ""
    seed: int = 0
    projection: str = "tsne"

    def key(self) -> str:
        """Hash of every input the folder's contents depend on."""
        def stat(path: str) -> list:
            p = Path(path)
            if not path or not p.exists():
                return [path, None]
            if p.is_dir():
                return [path, sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                     for f in p.iterdir() if f.is_file())]
            return [path, p.stat().st_size, p.stat().st_mtime_ns]

        manifest = Path(self.clean_dir) / "manifest.csv"
        parts = {"version": VERSION, "manifest": stat(str(manifest)),
                 "index": stat(self.index_dir), "classifier": stat(self.classifier_model),
                 "color": stat(self.color_model), "color_source": self.color_source,
                 "seed": self.seed, "n": [len(self.gallery), len(self.queries)]}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def folder(self) -> Path:
        """Where the prepared state lives."""
        base = Path(self.cache_dir) if self.cache_dir else Path(tempfile.gettempdir()) / "lfhelpers"
        return base / "explore" / f"shared-{self.key()}"


class SharedState:
    """A prepared folder, opened read-only (arrays memory-mapped).

    Attributes
    ----------
    folder : Path
    files : list of str
        Every photo with a vector: found items first, then lost photos.
    row : dict
        ``path -> row`` of ``files``.
    vectors : ndarray (memory-mapped)
    proba : ndarray (memory-mapped) or None
    classes : list of str
    palettes : dict
        ``path -> [(name, share, hex), ...]``.
    info : dict
        ``notes``, ``timings`` and the inputs of :func:`prepare`.
    """

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self.info = json.loads((self.folder / "info.json").read_text(encoding="utf-8"))
        self.files = json.loads((self.folder / "files.json").read_text(encoding="utf-8"))
        self.row = {f: i for i, f in enumerate(self.files)}
        self.vectors = np.load(self.folder / "vectors.npy", mmap_mode="r")
        proba = self.folder / "proba.npy"
        self.proba = np.load(proba, mmap_mode="r") if proba.is_file() else None
        classes = self.folder / "classes.json"
        self.classes = (json.loads(classes.read_text(encoding="utf-8"))
                        if classes.is_file() else [])
        palettes = self.folder / "palettes.json"
        self.palettes = ({k: [tuple(e) for e in v] for k, v in
                          json.loads(palettes.read_text(encoding="utf-8")).items()}
                         if palettes.is_file() else {})
        self._thumb_offsets = np.load(self.folder / "thumbs.npy", mmap_mode="r")
        self._thumbs = np.memmap(self.folder / "thumbs.bin", dtype=np.uint8, mode="r") \
            if (self.folder / "thumbs.bin").stat().st_size else np.zeros(0, np.uint8)

    def thumbnail(self, path: str) -> bytes | None:
        """The stored JPEG thumbnail of a photo, or ``None`` when it has none."""
        i = self.row.get(path)
        if i is None:
            return None
        start, end = int(self._thumb_offsets[i]), int(self._thumb_offsets[i + 1])
        return bytes(self._thumbs[start:end]) if end > start else None

    def top3(self, path: str) -> list[tuple[str, float]]:
        """The classifier's three most likely categories of a photo (``[]`` without one)."""
        i = self.row.get(path)
        if self.proba is None or i is None:
            return []
        p = np.asarray(self.proba[i])
        return [(self.classes[j], float(p[j])) for j in np.argsort(-p, kind="stable")[:3]]

    def map_xy(self, method: str) -> np.ndarray | None:
        """The stored 2-D map, or ``None`` when it was not prepared for ``method``."""
        path = self.folder / f"map-{method}.npy"
        return np.load(path) if path.is_file() else None


def open_shared(spec: SharedSpec, in_process: bool = False) -> SharedState:
    """The prepared state of ``spec``: opened when complete, else prepared first.

    Parameters
    ----------
    spec : SharedSpec
    in_process : bool
        Prepare in this process (default: a child process, so that this one never imports
        TensorFlow; the child's memory is returned when it exits).

    Returns
    -------
    SharedState
    """
    folder = spec.folder()
    if (folder / "info.json").is_file():
        return SharedState(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if in_process:
        prepare(spec)
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(asdict(spec), fh)
        try:
            proc = subprocess.run([sys.executable, "-m", "lfhelpers.explore.shared", fh.name],
                                  capture_output=True, text=True, cwd=src.project_root())
        finally:
            os.unlink(fh.name)
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
            raise src.DataError("Preparing the explorer's shared data failed: "
                                + (lines[-1] if lines else f"exit code {proc.returncode}"))
    return SharedState(folder)


def prepare(spec: SharedSpec) -> Path:
    """Compute and write the shared state of ``spec`` (see the module docstring).

    One process prepares a folder; others wait on its lock file and then read it.
    """
    import fcntl

    folder = spec.folder()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "info.json").is_file():
            _prepare(spec, folder)
    return folder


def _prepare(spec: SharedSpec, folder: Path) -> None:
    import shutil

    work = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    notes: list[str] = []
    timings: dict[str, float] = {}
    start = time.perf_counter()
    files = list(spec.gallery) + list(spec.queries)
    # threads that leave the interpreter most of the time (Pillow, OpenCV, NumPy): the
    # thumbnails (kept per photo) beside the vectors, then the map (one core) beside the colors
    # (the others): on 2 cores the first load takes about the longest chain, not the sum
    mapper = ThreadPoolExecutor(3)
    thumbs = mapper.submit(_write_thumbnails, files, work, spec.cache_dir or None)
    # the engine's recipe gives the embedder; its index, keypoints and vocabulary are not needed
    engine_embedder = src.recipe_embedder(spec.index_dir, spec.cache_dir or None)
    result = engine_embedder.extract(files)
    for path, reason in result.errors.items():
        notes.append(f"skipped {Path(path).name}: {reason}")
    kept = [f for f, ok in zip(files, result.ok, strict=True) if ok]
    np.save(work / "vectors.npy", np.asarray(result.features, np.float32))
    (work / "files.json").write_text(json.dumps(kept), encoding="utf-8")
    # the lost photos' keypoints are extracted when a visitor first searches with one
    timings["vectors_seconds"] = time.perf_counter() - start
    drawn = (mapper.submit(_draw_map, np.asarray(result.features, np.float32), spec)
             if spec.projection and len(kept) >= 3 else None)
    colors = mapper.submit(_palettes, kept, spec)

    if spec.classifier_model and Path(spec.classifier_model).is_file():
        t = time.perf_counter()
        embedder = (engine_embedder if src.same_classifier(engine_embedder, spec.classifier_model)
                    else src.classifier_embedder(spec.classifier_model, spec.cache_dir or None))
        raw = embedder.extract(kept, normalize=False)
        proba = np.zeros((len(kept), 0), np.float32)
        if raw.ok.all():
            proba = np.asarray(embedder.predict_proba(raw.features), np.float32)
        else:  # a photo the engine read but the classifier did not: no category for it
            got = np.asarray(embedder.predict_proba(raw.features), np.float32)
            proba = np.full((len(kept), got.shape[1]), np.nan, np.float32)
            proba[np.asarray(raw.ok)] = got
        classes = list(embedder.classes_) or [str(i) for i in range(proba.shape[1])]
        np.save(work / "proba.npy", proba)
        (work / "classes.json").write_text(json.dumps(classes), encoding="utf-8")
        timings["classifier_seconds"] = time.perf_counter() - t

    palettes, note, color_seconds = colors.result()
    notes += [note] if note else []
    if palettes is not None:
        notes += [f"no colors for {Path(f).name}: the photo could not be read"
                  for f in kept if f not in palettes]
        (work / "palettes.json").write_text(json.dumps(palettes), encoding="utf-8")
        timings["color_seconds"] = color_seconds
    timings["thumbs_seconds"] = thumbs.result()
    if len(kept) < len(files):  # the thumbnails follow files.json: drop the skipped photos'
        _keep_thumbnails(work, np.flatnonzero(result.ok).tolist())
    if drawn is not None:
        xy, timings["map_seconds"] = drawn.result()
        np.save(work / f"map-{spec.projection}.npy", np.asarray(xy, np.float32))
    mapper.shutdown()

    timings["prepare_seconds"] = time.perf_counter() - start
    info = {"spec": asdict(spec) | {"gallery": len(spec.gallery), "queries": len(spec.queries)},
            "notes": notes, "timings": timings}
    (work / "info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(work, folder)


def _palettes(files: list[str], spec: SharedSpec) -> tuple[dict[str, list] | None, str, float]:
    """Each readable photo's named colors (``None`` without a color model or source), a note
    when a color model had to be trained here, and the seconds they took."""
    t = time.perf_counter()
    note = ""
    if spec.color_model and Path(spec.color_model).is_file():
        namer = src.load_color_namer(spec.color_model, spec.color_source or "synthetic",
                                     spec.seed)
    elif spec.color_source:
        namer = src.load_color_namer(None, spec.color_source, spec.seed)
        note = (f"no color model at {spec.color_model or '(not set)'}; trained one on "
                f"{spec.color_source} (run notebook 04 to save one)")
    else:
        return None, note, 0.0
    found = src.palettes(files, namer, spec.seed, spec.cache_dir or None)
    palettes = {f: palette_rows(p) for f, p in zip(files, found, strict=True) if p is not None}
    return palettes, note, time.perf_counter() - t


def _write_thumbnails(files: list[str], work: Path, cache_dir: str | None = None) -> float:
    """``thumbs.bin`` (the JPEG thumbnails end to end) and ``thumbs.npy`` (their offsets).

    With ``cache_dir``, each thumbnail is kept under ``<cache_dir>/thumbnails`` by the photo's
    content, so that a gallery with a few new photos makes a few new thumbnails.
    """
    t = time.perf_counter()
    store = (ContentStore.under(Path(cache_dir) / "thumbnails",
                                {"side": THUMB_SIDE, "format": "jpeg", "quality": THUMB_QUALITY})
             if cache_dir else None)
    offsets = [0]
    with open(work / "thumbs.bin", "wb") as fh:
        for f in files:
            fh.write(_thumbnail(f, store))
            offsets.append(fh.tell())
    np.save(work / "thumbs.npy", np.asarray(offsets, np.int64))
    return time.perf_counter() - t


def _thumbnail(path: str, store: ContentStore | None) -> bytes:
    """A photo's thumbnail, from the store when it holds one for the photo's bytes."""
    small = small_jpeg(path)
    if small is not None:  # already thumbnail-sized: its own bytes, nothing to make or keep
        return small
    if store is None:
        return thumbnail_bytes(path)
    try:
        digest = sha256_file(path)
    except OSError:
        return b""
    kept = store.get(digest)
    if kept is not None:
        return np.asarray(kept, np.uint8).tobytes()
    data = thumbnail_bytes(path)
    if data:
        store.put(digest, np.frombuffer(data, np.uint8))
    return data


def _keep_thumbnails(work: Path, rows: list[int]) -> None:
    """Rewrite ``thumbs.bin``/``thumbs.npy`` with the thumbnails of ``rows`` only, in order."""
    offsets = np.load(work / "thumbs.npy")
    data = (work / "thumbs.bin").read_bytes()
    parts = [data[offsets[i]:offsets[i + 1]] for i in rows]
    (work / "thumbs.bin").write_bytes(b"".join(parts))
    np.save(work / "thumbs.npy", np.concatenate([[0], np.cumsum([len(x) for x in parts])]))


def _draw_map(features: np.ndarray, spec: SharedSpec) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    return src.project_2d(features, spec.projection, spec.seed), time.perf_counter() - t


def small_jpeg(path: str, side: int = THUMB_SIDE) -> bytes | None:
    """The file's own bytes when it can be shown as its thumbnail, else ``None``.

    That is a JPEG (RGB or grayscale) at most :data:`SMALL_FACTOR` times ``side`` on its longer
    side and :data:`SMALL_BYTES` long, stored upright (no EXIF rotation to apply): a cleaned
    data set's photos (300 px on lostnet). The file is read once and only its header parsed;
    decoding and encoding again would cost a few milliseconds per photo for a thumbnail of the
    same look.
    """
    from PIL import ExifTags, Image

    try:
        if os.path.getsize(path) > SMALL_BYTES:
            return None
        with open(path, "rb") as fh:
            data = fh.read()
        with Image.open(io.BytesIO(data)) as image:
            if (image.format != "JPEG" or image.mode not in ("RGB", "L")
                    or max(image.size) > SMALL_FACTOR * side
                    or image.getexif().get(ExifTags.Base.Orientation, 1) != 1):
                return None
        return data
    except Exception:  # noqa: BLE001 - unreadable here: the decoding path says why
        return None


def thumbnail_bytes(path: str, side: int = THUMB_SIDE) -> bytes:
    """A JPEG thumbnail of a photo file (``b""`` when it cannot be read)."""
    try:
        image = src.open_image(path, max_side=side * 2)
    except src.DataError:
        return b""
    image.thumbnail((side, side))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()


def palette_rows(palette: Any) -> list[tuple[str, float, str]]:
    """``[(name, share, hex), ...]`` of a ``Palette`` (JSON-friendly)."""
    return [(str(c.name), round(float(c.share), 4), str(c.hex)) for c in palette.colors]


def main(argv: list[str] | None = None) -> int:
    """``python -m lfhelpers.explore.shared SPEC.json``: prepare one folder."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING)
    spec = SharedSpec(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    try:
        print(prepare(spec))
    except src.LFError as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
