"""Same-item search: verify a shortlist of found photos against a lost item's photo.

:class:`LocalStore` keeps the gallery's keypoints packed for fast reuse: one array of all
descriptors (``uint8``) and one of all positions, with per-photo offsets, saved as ``.npy``
files that :meth:`LocalStore.load` memory-maps, so a query reads only its candidates' rows.

:func:`fuse` merges two shortlists (the caller's global descriptors, the visual words of
:mod:`lfhelpers.similarity.search.words`) by reciprocal rank fusion; :func:`rerank` verifies
the candidates of a shortlist and puts the verified same items first, by inliers, then the
others in their incoming order. :func:`find_same_item` does the whole query: visual-word
shortlist, fusion with the caller's global shortlist, verification.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lfhelpers.errors import DataError
from lfhelpers.fsutil import atomic_write, write_json
from lfhelpers.images import thread_map
from lfhelpers.similarity.features.keypoints import METHODS, Keypoints
from lfhelpers.similarity.features.local import LocalFeatures
from lfhelpers.similarity.search.verify import (
    SAME_ITEM_MIN_INLIERS,
    SAME_ITEM_MIN_RATIO,
    Verification,
    is_same_item,
    verify,
)
from lfhelpers.similarity.search.words import VisualWords

_FORMAT = 1

#: Candidates verified per query at most (3-5 ms each with 1,000 keypoints a photo).
DEFAULT_MAX_VERIFY = 20


class Ranked(NamedTuple):
    """One row of :func:`rerank`: ``(id, inliers, same_item, verification)``."""

    id: int
    inliers: int
    same_item: bool
    verification: Verification | None


class LocalStore:
    """The gallery's keypoints, packed: concatenated descriptors and positions plus offsets.

    Parameters
    ----------
    mmap : bool
        :meth:`load` memory-maps the descriptor and position arrays (read on demand).

    Attributes
    ----------
    descriptors_ : ndarray of uint8, shape (n_keypoints, d)
        All descriptors, photo after photo.
    xy_ : ndarray of float32, shape (n_keypoints, 2)
        All keypoint positions (shrunk photos' pixels).
    offsets_ : ndarray of int64, shape (n_photos + 1,)
        Photo ``i`` owns rows ``offsets_[i]:offsets_[i + 1]``.
    sizes_ : ndarray of int32, shape (n_photos, 2)
        ``(width, height)`` of each shrunk photo.
    scales_ : ndarray of float32, shape (n_photos,)
        Factor from the shrunk photo to the original.
    paths_ : list of str
        Photo files (``""`` when added as bare keypoints).
    method_ : str
        Feature method of all keypoints.
    """

    def __init__(self, mmap: bool = True):
        self.mmap = mmap

    def _init(self, method: str) -> None:
        self.method_ = method
        width = METHODS[method]
        self.descriptors_ = np.zeros((0, width), np.uint8)
        self.xy_ = np.zeros((0, 2), np.float32)
        self.offsets_ = np.zeros(1, np.int64)
        self.sizes_ = np.zeros((0, 2), np.int32)
        self.scales_ = np.zeros(0, np.float32)
        self.paths_: list[str] = []

    def build(self, paths: Sequence[str | os.PathLike[str]],
              local_features: LocalFeatures) -> LocalStore:
        """Describe the gallery photos and pack their keypoints.

        Parameters
        ----------
        paths : sequence of path-like
            Gallery photos; their position is their id.
        local_features : LocalFeatures
            The extractor (its cache is used).

        Returns
        -------
        LocalStore
            ``self``.
        """
        self._init(local_features.method)
        self.add(paths, local_features)
        return self

    def add(self, paths: Sequence[str | os.PathLike[str]],
            local_features: LocalFeatures) -> np.ndarray:
        """Describe more photos and append them (ids continue after the last one).

        Returns
        -------
        ndarray of int64
            The new photos' ids.
        """
        if not hasattr(self, "method_"):
            self._init(local_features.method)
        kps = local_features.extract(paths)
        return self.add_keypoints(kps, [os.fspath(p) for p in paths])

    def add_keypoints(self, keypoints: Sequence[Keypoints],
                      paths: Sequence[str] | None = None) -> np.ndarray:
        """Append already extracted keypoints.

        Parameters
        ----------
        keypoints : sequence of Keypoints
            One per photo, all of this store's method.
        paths : sequence of str, optional
            Their files (for drawing).

        Returns
        -------
        ndarray of int64
            The new photos' ids.
        """
        if not hasattr(self, "method_"):
            self._init(keypoints[0].method if keypoints else "rootsift")
        bad = {kp.method for kp in keypoints} - {self.method_}
        if bad:
            raise DataError(f"The store holds {self.method_} keypoints, not {sorted(bad)}.")
        paths = list(paths) if paths is not None else [""] * len(keypoints)
        if len(paths) != len(keypoints):
            raise DataError(f"{len(keypoints)} keypoint sets but {len(paths)} paths.")
        start = len(self)
        counts = np.array([len(kp) for kp in keypoints], np.int64)
        width = METHODS[self.method_]
        self.descriptors_ = np.concatenate(
            [np.asarray(self.descriptors_)] + [kp.descriptors.reshape(-1, width)
                                               for kp in keypoints]).astype(np.uint8, copy=False)
        self.xy_ = np.concatenate([np.asarray(self.xy_)] + [kp.xy.reshape(-1, 2)
                                                            for kp in keypoints]).astype(
            np.float32, copy=False)
        self.offsets_ = np.concatenate([self.offsets_, self.offsets_[-1] + np.cumsum(counts)])
        self.sizes_ = np.concatenate([self.sizes_, np.array(
            [kp.image_size for kp in keypoints], np.int32).reshape(-1, 2)])
        self.scales_ = np.concatenate([self.scales_, np.array(
            [kp.scale for kp in keypoints], np.float32)])
        self.paths_ += [os.fspath(p) for p in paths]
        return np.arange(start, len(self), dtype=np.int64)

    def __len__(self) -> int:
        return int(len(self.offsets_) - 1) if hasattr(self, "offsets_") else 0

    def __getitem__(self, i: int) -> Keypoints:
        """Keypoints of photo ``i`` (copied out of the packed arrays)."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"photo {i} is not in the store of {len(self)}")
        a, b = int(self.offsets_[i]), int(self.offsets_[i + 1])
        return Keypoints(np.array(self.xy_[a:b]), np.array(self.descriptors_[a:b]),
                         (int(self.sizes_[i, 0]), int(self.sizes_[i, 1])),
                         float(self.scales_[i]), self.method_)

    def keypoints(self) -> list[Keypoints]:
        """All photos' keypoints (for :meth:`VisualWords.fit` / ``add``)."""
        return [self[i] for i in range(len(self))]

    @property
    def nbytes(self) -> int:
        """Bytes of the packed arrays."""
        return int(self.descriptors_.nbytes + self.xy_.nbytes + self.offsets_.nbytes
                   + self.sizes_.nbytes + self.scales_.nbytes)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the packed arrays (``.npy``, each atomically) and ``store.json``.

        Returns
        -------
        Path
            The folder.
        """
        folder = Path(folder)
        for name in ("descriptors", "xy", "offsets", "sizes", "scales"):
            with atomic_write(folder / f"{name}.npy", "wb") as fh:
                np.save(fh, np.asarray(getattr(self, f"{name}_")))
        write_json(folder / "store.json", {"format": _FORMAT, "method": self.method_,
                                           "n_photos": len(self), "paths": self.paths_})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], mmap: bool = True) -> LocalStore:
        """Read a saved store; descriptors and positions are memory-mapped with ``mmap``.

        Raises
        ------
        DataError
            When a file is missing, damaged or inconsistent.
        """
        folder = Path(folder)
        self = cls(mmap=mmap)
        mode = "r" if mmap else None
        try:
            meta = json.loads((folder / "store.json").read_text(encoding="utf-8"))
            self.descriptors_ = np.load(folder / "descriptors.npy", mmap_mode=mode)
            self.xy_ = np.load(folder / "xy.npy", mmap_mode=mode)
            self.offsets_ = np.load(folder / "offsets.npy")
            self.sizes_ = np.load(folder / "sizes.npy")
            self.scales_ = np.load(folder / "scales.npy")
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read the keypoint store in {folder}: {exc}") from exc
        if meta.get("format") != _FORMAT or meta.get("method") not in METHODS:
            raise DataError(f"{folder} holds a keypoint store of another format; rebuild it.")
        self.method_ = meta["method"]
        self.paths_ = list(meta.get("paths", []))
        n = len(self.offsets_) - 1
        if (self.offsets_[-1] != len(self.descriptors_) or len(self.xy_) != len(
                self.descriptors_) or len(self.sizes_) != n or len(self.paths_) != n):
            raise DataError(f"The keypoint store in {folder} is inconsistent; rebuild it.")
        return self


def fuse(global_ids: Sequence[int], local_ids: Sequence[int], k: int | None = None,
         rank_constant: float = 1.0) -> np.ndarray:
    """Merge two shortlists by reciprocal rank fusion, so either one's candidates get verified.

    Each id scores ``1 / (rank_constant + rank)`` in each list it is in (rank from 1), and
    the union is sorted by the sum. With a small ``rank_constant`` the two lists interleave
    (global first at equal rank) and an id in both rises.

    Parameters
    ----------
    global_ids, local_ids : sequence of int
        Shortlists, best first (either may be empty).
    k : int, optional
        Length of the result; default: the whole union.
    rank_constant : float
        The constant of reciprocal rank fusion.

    Returns
    -------
    ndarray of int64
        Fused ids, best first, without duplicates.
    """
    score: dict[int, float] = {}
    first: dict[int, int] = {}
    for offset, ids in enumerate((global_ids, local_ids)):
        for rank, i in enumerate(np.asarray(ids, np.int64).tolist(), start=1):
            score[i] = score.get(i, 0.0) + 1.0 / (rank_constant + rank)
            first.setdefault(i, 2 * rank + offset)
    order = sorted(score, key=lambda i: (-score[i], first[i]))
    return np.asarray(order[:k] if k is not None else order, np.int64)


def rerank(query_kp: Keypoints, candidates: Sequence[int], store: LocalStore,
           min_inliers: int = SAME_ITEM_MIN_INLIERS, min_ratio: float = SAME_ITEM_MIN_RATIO,
           max_verify: int = DEFAULT_MAX_VERIFY, n_jobs: int = -1,
           **verify_kwargs: Any) -> list[Ranked]:
    """Verify the first candidates and put the same items first.

    Parameters
    ----------
    query_kp : Keypoints
        The lost item's photo.
    candidates : sequence of int
        Store ids, best first (a fused shortlist).
    store : LocalStore
        The gallery's keypoints.
    min_inliers, min_ratio : int, float
        The same-item decision (see :func:`~lfhelpers.similarity.search.verify.is_same_item`).
    max_verify : int
        Verify only the first ``max_verify`` candidates; the others follow unverified.
    n_jobs : int
        Candidates verified at once (threads: OpenCV and faiss release the GIL; ``-1``: one
        per core). The answer does not depend on it.
    **verify_kwargs
        Passed to :func:`~lfhelpers.similarity.search.verify.verify`.

    Returns
    -------
    list of Ranked
        ``(id, inliers, same_item, verification)``: verified same items by decreasing
        inliers, then every other candidate in its incoming order (``verification`` is
        ``None`` for those not verified).
    """
    verify_kwargs.setdefault("min_matches", min_inliers)  # fewer matches cannot pass: no fit
    ids = [int(c) for c in candidates]
    checked = thread_map(lambda cid: verify(query_kp, store[cid], **verify_kwargs),
                         ids[:max_verify], n_jobs)
    rows = [Ranked(cid, v.inliers, is_same_item(v, min_inliers, min_ratio), v)
            for cid, v in zip(ids, checked, strict=False)]
    rows += [Ranked(cid, 0, False, None) for cid in ids[len(checked):]]
    same = sorted((r for r in rows if r.same_item), key=lambda r: -r.inliers)
    return same + [r for r in rows if not r.same_item]


def find_same_item(query_kp: Keypoints, store: LocalStore, words: VisualWords,
                   global_ids: Sequence[int] = (), n_local: int = 15, n_global: int = 5,
                   max_verify: int = DEFAULT_MAX_VERIFY,
                   local: tuple[np.ndarray, np.ndarray] | None = None,
                   **rerank_kwargs: Any) -> list[Ranked]:
    """The whole same-item query: visual-word shortlist, fusion, verification.

    Parameters
    ----------
    query_kp : Keypoints
        The lost item's photo.
    store : LocalStore
        The gallery's keypoints (ids = store positions).
    words : VisualWords
        Inverted file of the same gallery (ids = store positions).
    global_ids : sequence of int
        The global-descriptor shortlist, best first (may be empty).
    n_local, n_global : int
        Candidates taken from each shortlist.
    max_verify : int
        Candidates verified at most.
    local : (ids, scores), optional
        ``words.shortlist(query_kp, n_local)`` when the caller has it (several queries'
        shortlists are cheaper together: :meth:`VisualWords.shortlists`).
    **rerank_kwargs
        Passed to :func:`rerank`.

    Returns
    -------
    list of Ranked
        The verified same items by decreasing inliers, then the other candidates in the
        global shortlist's order, then those only in the visual-word shortlist, then the rest
        of ``global_ids`` unverified.
    """
    local_ids, _ = words.shortlist(query_kp, n_local) if local is None else local
    head = [int(i) for i in np.asarray(global_ids, np.int64)[:n_global]]
    fused = fuse(head, local_ids)
    ranked = rerank(query_kp, fused, store, max_verify=max_verify, **rerank_kwargs)
    # not the same item: the global shortlist's order first, then the visual words' order
    where = {i: (0, r) for r, i in enumerate(head)}
    for r, i in enumerate(local_ids.tolist()):
        where.setdefault(int(i), (1, r))
    ranked = [r for r in ranked if r.same_item] + sorted(
        (r for r in ranked if not r.same_item), key=lambda r: where[r.id])
    seen = {r.id for r in ranked}
    tail = [Ranked(int(i), 0, False, None) for i in np.asarray(global_ids, np.int64)[n_global:]
            if int(i) not in seen]
    return ranked + tail
