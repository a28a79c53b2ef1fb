"""Local keypoint features of a photo (RootSIFT or ORB), with a content-addressed disk cache.

A photo is opened through the project's one loader (:func:`lfhelpers.images.open_image`, EXIF
orientation applied), shrunk so that its longer side is at most ``max_side`` pixels, turned to
greyscale and described by at most ``n_features`` keypoints. The result,
:class:`~lfhelpers.similarity.features.keypoints.Keypoints`, keeps the keypoint positions in the
shrunk photo's pixels together with the factor back to the original photo, so that matches can
be drawn on the full-size photo.

:class:`LocalFeatures` keeps one ``.npz`` per photo and option set in the workbook's
content-addressed store (:class:`lfhelpers.store.ContentStore`), named by the SHA-256 of the
photo's bytes; a damaged or truncated file is set aside and recomputed, an outdated one
recomputed, each with a logged warning.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import sha256_file
from lfhelpers.images import thread_map
from lfhelpers.similarity.features.keypoints import METHODS, Keypoints, grey_array
from lfhelpers.store import ContentStore

log = logging.getLogger(__name__)

#: Version of the cache file layout and of the extraction; a change makes old files outdated.
FORMAT_VERSION = 2

#: Default longer side (pixels) of the photo that keypoints are detected on.
DEFAULT_MAX_SIDE = 640

#: Default number of keypoints kept (the strongest).
DEFAULT_N_FEATURES = 1000


class LocalFeatures:
    """Keypoints of photo files, with a per-photo disk cache.

    Parameters
    ----------
    method : {"rootsift", "orb"}
        ``"rootsift"``: OpenCV SIFT, compared as RootSIFT (the accurate default); ``"orb"``:
        binary ORB (about 10x faster to extract, much less accurate on camera photos).
    max_side : int
        Longer side (pixels) of the photo the keypoints are detected on; larger photos are
        shrunk (smaller ones are not enlarged).
    n_features : int
        Keypoints kept per photo (the strongest).
    cache_dir : path-like, optional
        Cache folder; ``None`` disables the cache.
    on_error : {"raise", "record"}
        An unreadable photo raises :class:`~lfhelpers.errors.DataError` (``"raise"``) or gives
        an empty :class:`Keypoints` whose ``error`` says why (``"record"``; also in
        ``errors_``).
    n_jobs : int
        Photos described at once (threads: OpenCV releases the GIL; ``-1``: one per core).

    Attributes
    ----------
    errors_ : dict
        Path -> reason for each unreadable photo of the last :meth:`extract` (``"record"``).
    n_cached_ : int
        Photos of the last :meth:`extract` read from the cache.
    seconds_ : float
        Wall-clock time of the last :meth:`extract`.
    """

    def __init__(self, method: str = "rootsift", max_side: int = DEFAULT_MAX_SIDE,
                 n_features: int = DEFAULT_N_FEATURES,
                 cache_dir: str | os.PathLike[str] | None = None, on_error: str = "raise",
                 n_jobs: int = -1):
        self.method = method
        self.max_side = max_side
        self.n_features = n_features
        self.cache_dir = cache_dir
        self.on_error = on_error
        self.n_jobs = n_jobs

    # -- options ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {sorted(METHODS)}, got {self.method!r}.")
        if int(self.max_side) < 32:
            raise ConfigError(f"max_side must be at least 32 pixels, got {self.max_side!r}.")
        if int(self.n_features) < 1:
            raise ConfigError(f"n_features must be at least 1, got {self.n_features!r}.")
        if self.on_error not in ("raise", "record"):
            raise ConfigError(f"on_error must be 'raise' or 'record', got {self.on_error!r}.")

    def options(self) -> dict[str, Any]:
        """What determines the features of a photo (part of the cache key).

        Returns
        -------
        dict
            ``method``, ``max_side``, ``n_features``, ``version`` and the OpenCV version.
        """
        return {"method": self.method, "max_side": int(self.max_side),
                "n_features": int(self.n_features), "version": FORMAT_VERSION,
                "opencv": cv2.__version__.split(".")[0]}

    def _store(self) -> ContentStore | None:
        if self.cache_dir is None:
            return None
        folder = Path(self.cache_dir) / f"{self.method}-{int(self.max_side)}-{int(self.n_features)}"
        return ContentStore(folder, self.options(), suffix=".npz")

    def cache_path(self, digest: str) -> Path | None:
        """Cache file of a photo with this SHA-256 (``None`` without a cache)."""
        store = self._store()
        return None if store is None else store.path(digest)

    # -- extraction ------------------------------------------------------------------------

    def _detector(self) -> Any:
        if self.method == "orb":
            return cv2.ORB_create(nfeatures=int(self.n_features))
        return cv2.SIFT_create(nfeatures=int(self.n_features))

    def describe(self, image: Any) -> Keypoints:
        """Keypoints of one photo, without the cache.

        Parameters
        ----------
        image : path-like, bytes, ndarray or PIL image
            The photo (anything :func:`lfhelpers.images.open_image` takes).

        Returns
        -------
        Keypoints
            Empty (and logged) when the photo has no texture.

        Raises
        ------
        DataError
            When the photo cannot be read.
        """
        self._check()
        grey, scale = grey_array(image, int(self.max_side))
        size = (int(grey.shape[1]), int(grey.shape[0]))
        if min(grey.shape) < 16:
            log.info("No keypoints in %s: the photo is only %dx%d pixels.",
                     _name(image), size[0], size[1])
            return Keypoints.empty(self.method, size, scale)
        points, desc = self._detector().detectAndCompute(grey, None)
        if desc is None or not points:
            log.info("No keypoints in %s (a uniform or blurred photo).", _name(image))
            return Keypoints.empty(self.method, size, scale)
        if len(points) > int(self.n_features):  # SIFT may return a few more (orientations)
            keep = np.argsort([-p.response for p in points], kind="stable")[:int(self.n_features)]
            points, desc = [points[i] for i in keep], desc[keep]
        xy = np.array([p.pt for p in points], dtype=np.float32).reshape(-1, 2)
        if self.method == "rootsift":
            desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
        return Keypoints(xy, np.ascontiguousarray(desc, dtype=np.uint8), size, scale,
                         self.method)

    def extract(self, paths: Sequence[str | os.PathLike[str]]) -> list[Keypoints]:
        """Keypoints of each photo file, from the cache when possible.

        Parameters
        ----------
        paths : sequence of path-like
            Photo files.

        Returns
        -------
        list of Keypoints
            One per path, in order.

        Raises
        ------
        DataError
            When a photo cannot be read and ``on_error="raise"``; the message names the file.
        """
        self._check()
        start = time.perf_counter()
        self.errors_: dict[str, str] = {}
        self.n_cached_ = 0
        files = [os.fspath(p) for p in paths]
        store = self._store()
        done = thread_map(lambda f: self._one(f, store), files, int(self.n_jobs))
        out = [kp for kp, _ in done]
        self.n_cached_ = sum(cached for _, cached in done)
        for path, kp in zip(files, out, strict=True):
            if kp.error:
                self.errors_[path] = kp.error
        self.seconds_ = time.perf_counter() - start
        return out

    def _one(self, path: str, store: ContentStore | None) -> tuple[Keypoints, bool]:
        """Keypoints of one file and whether they came from the cache."""
        try:
            digest = sha256_file(path)
        except OSError as exc:
            return self._failed(path, DataError(
                f"Cannot read {path}: {exc.strerror or exc}.")), False
        if store is not None:
            cached = self._read(store, digest)
            if cached is not None:
                return cached, True
        try:
            kp = self.describe(path)
        except DataError as exc:
            return self._failed(path, exc), False
        if store is not None:
            self._write(store, digest, kp)
        return kp, False

    def _failed(self, path: str, exc: DataError) -> Keypoints:
        if self.on_error == "raise":
            raise exc
        log.warning("Skipped %s: %s", path, exc)
        return Keypoints.empty(self.method, error=str(exc))

    # -- cache files -----------------------------------------------------------------------

    def _meta(self, digest: str) -> dict[str, Any]:
        return {**self.options(), "sha256": digest}

    def _write(self, store: ContentStore, digest: str, kp: Keypoints) -> None:
        meta = {**self._meta(digest), "image_size": list(kp.image_size), "scale": kp.scale}
        store.put(digest, {"xy": kp.xy, "descriptors": kp.descriptors,
                           "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)})

    def _read(self, store: ContentStore, digest: str) -> Keypoints | None:
        data = store.get(digest)  # a damaged file is set aside (logged) and reads as None
        if data is None:
            return None
        entry = store.path(digest)
        try:
            meta = json.loads(bytes(data["meta"]).decode())
            xy = np.asarray(data["xy"], np.float32)
            desc = np.asarray(data["descriptors"], np.uint8)
        except (KeyError, ValueError) as exc:
            store.set_aside(digest, f"{type(exc).__name__}: {exc}")
            return None
        expected = self._meta(digest)
        if any(meta.get(k) != v for k, v in expected.items()):
            log.warning("Recomputing the outdated cache file %s (written with %s).", entry,
                        {k: meta.get(k) for k in expected if meta.get(k) != expected[k]})
            return None
        if xy.ndim != 2 or xy.shape[1] != 2 or desc.shape != (len(xy), METHODS[self.method]):
            log.warning("Recomputing the inconsistent cache file %s.", entry)
            return None
        size = meta.get("image_size", [0, 0])
        return Keypoints(xy, desc, (int(size[0]), int(size[1])), float(meta.get("scale", 1.0)),
                         self.method)


def _name(image: Any) -> str:
    return os.fspath(image) if isinstance(image, str | os.PathLike) else "<image>"
