"""Visual words: a shortlist of gallery photos that share many local features with a query.

Each RootSIFT descriptor is quantised to its nearest "visual word" of a codebook learned with
k-means (faiss). The codebook is two-level (a vocabulary tree of depth 2, Nistér & Stewénius
2006, in :mod:`lfhelpers.similarity.search.vocabulary`): ``n_top`` coarse words, each split
into ``n_top`` fine words, so that 65,536 words cost two small nearest-neighbour searches per
descriptor instead of one large one, and train in seconds. A photo becomes a sparse vector of
word counts with burstiness damped (square root of the counts, Jégou et al. 2009) and
inverse-document-frequency weights; the shortlist ranks the gallery by cosine similarity
through an inverted file (a sparse matrix). Query descriptors are assigned to several nearest
words (multiple assignment), which recovers matches that fell on a neighbouring word.

:func:`lfhelpers.similarity.search.same_item.fuse` merges this shortlist with the
global-descriptor shortlist of the caller (reciprocal rank fusion), so that a candidate from
either is verified.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write, write_json
from lfhelpers.similarity.features.keypoints import Keypoints, rootsift
from lfhelpers.similarity.search.vocabulary import assign_words, train_tree

_FORMAT = 1
#: Photos whose descriptors :meth:`VisualWords.assign_each` assigns together (about 64 MB of
#: RootSIFT descriptors at 2,000 per photo).
ASSIGN_BATCH = 64


class VisualWords:
    """Vocabulary of visual words and an inverted file of gallery photos.

    Parameters
    ----------
    n_words : int
        Size of the vocabulary (rounded up to a square: ``n_top**2`` words). 262,144 by
        default: for the 200 DVD camera photos among 2,312 gallery photos, the right cover is
        in the first 20 of 65,536 words for 95 % of the queries and of 262,144 words for 99 %
        (recall@1 0.78 and 0.87; one-level 4,096 words: 0.65 and 85 % in the first 20).
    seed : int
        k-means seed and descriptor sample.
    sample_size : int
        Descriptors drawn to train the codebook (bounds the training time: about 15 s for
        1,000,000 descriptors and 262,144 words on one core).
    multiple_assignment : int
        Words each query descriptor votes for (its nearest fine words in its coarse cell).
        1 by default: plain tf-idf scoring loses with more (DVD recall@20 0.95 with 1, 0.925
        with 3, 0.90 with 5 at 65,536 words).
    niter : int
        k-means iterations per level.

    Attributes
    ----------
    coarse_ : ndarray of float32, shape (n_top, 128)
        First-level centroids.
    fine_ : ndarray of float32, shape (n_top, n_top, 128)
        Second-level centroids per coarse cell (unused slots are far away).
    n_words_ : int
        ``n_top**2``.
    ids_ : ndarray of int64
        Gallery id of each indexed photo (row of the inverted file).
    counts_ : scipy.sparse.csr_matrix, shape (n_photos, n_words_)
        Burstiness-damped word counts (square roots) of the gallery photos.
    df_ : ndarray of int64, shape (n_words_,)
        Gallery photos in which each word occurs.
    fit_seconds_ : float
        Training time.
    """

    def __init__(self, n_words: int = 262_144, seed: int = 0, sample_size: int = 1_000_000,
                 multiple_assignment: int = 1, niter: int = 15):
        self.n_words = n_words
        self.seed = seed
        self.sample_size = sample_size
        self.multiple_assignment = multiple_assignment
        self.niter = niter

    # -- codebook --------------------------------------------------------------------------

    def fit(self, descriptors: Sequence[np.ndarray | Keypoints]) -> VisualWords:
        """Learn the codebook from a sample of descriptors.

        Parameters
        ----------
        descriptors : sequence of ndarray or Keypoints
            Per-photo descriptors: raw SIFT ``uint8`` / RootSIFT ``float32`` arrays of shape
            ``(n, 128)``, or :class:`Keypoints` of method ``"rootsift"``.

        Returns
        -------
        VisualWords
            ``self``, with an empty inverted file.
        """
        if int(self.n_words) < 4:
            raise ConfigError(f"n_words must be at least 4, got {self.n_words!r}.")
        start = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        raw = [d.descriptors if isinstance(d, Keypoints) else np.asarray(d)
               for d in descriptors]
        sizes = np.array([len(a) for a in raw], np.int64)
        total = int(sizes.sum())
        if total == 0:
            raise DataError("No descriptors to learn visual words from (photos without "
                            "keypoints only).")
        take = min(total, int(self.sample_size))
        pick = np.sort(rng.choice(total, size=take, replace=False))
        owner = np.searchsorted(np.cumsum(sizes), pick, side="right")
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        x = np.concatenate([self._as_rootsift(raw[i][pick[owner == i] - offsets[i]])
                            for i in np.unique(owner)])
        coarse, fine, n_top = train_tree(x, int(self.n_words), self.seed, self.niter)
        self.coarse_ = coarse
        self.fine_ = fine
        self.n_top_ = n_top
        self.n_words_ = len(coarse) * n_top
        self.fit_seconds_ = time.perf_counter() - start
        self._reset_index()
        return self

    def _reset_index(self) -> None:
        self.ids_ = np.zeros(0, np.int64)
        self.counts_ = sp.csr_matrix((0, self.n_words_), dtype=np.float32)
        self.df_ = np.zeros(self.n_words_, np.int64)
        self._cache: tuple[np.ndarray, np.ndarray, sp.csr_matrix] | None = None

    @staticmethod
    def _as_rootsift(d: np.ndarray | Keypoints) -> np.ndarray:
        if isinstance(d, Keypoints):
            if d.method != "rootsift":
                raise ConfigError(f"Visual words need rootsift keypoints, got {d.method!r}.")
            d = d.descriptors
        d = np.asarray(d)
        if d.ndim != 2 or (len(d) and d.shape[1] != 128):
            raise DataError(f"Descriptors must be (n, 128) arrays, got {d.shape}.")
        return rootsift(d) if d.dtype == np.uint8 else d.astype(np.float32, copy=False)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coarse_"):
            raise ConfigError("VisualWords is not fitted: call fit() or load() first.")

    def assign(self, descriptors: np.ndarray | Keypoints, k: int = 1) -> np.ndarray:
        """The ``k`` nearest visual words of each descriptor (within its coarse cell).

        Parameters
        ----------
        descriptors : ndarray or Keypoints
            ``(n, 128)`` raw SIFT or RootSIFT, or Keypoints.
        k : int
            Words per descriptor.

        Returns
        -------
        ndarray of int64, shape (n, k)
        """
        return self.assign_each([descriptors], k)[0]

    def assign_each(self, photos: Sequence[np.ndarray | Keypoints], k: int = 1
                    ) -> list[np.ndarray]:
        """:meth:`assign` for several photos at once: one array of words per photo.

        The descriptors of :data:`ASSIGN_BATCH` photos at a time are assigned together, so
        that each coarse cell costs one nearest-neighbour search per batch instead of one per
        photo (a photo's descriptors fall in a hundred cells or more: that many small searches
        per photo cost more than the distances themselves).

        Parameters
        ----------
        photos : sequence of ndarray or Keypoints
            One descriptor array (or Keypoints) per photo.
        k : int
            Words per descriptor.

        Returns
        -------
        list of ndarray of int64, shape (n_i, k)
        """
        self._check_fitted()
        k = max(1, min(int(k), self.n_top_))
        out: list[np.ndarray] = []
        for start in range(0, len(photos), ASSIGN_BATCH):
            xs = [self._as_rootsift(d) for d in photos[start:start + ASSIGN_BATCH]]
            words = assign_words(np.concatenate(xs) if xs else np.zeros((0, 128), np.float32),
                                 self.coarse_, self.fine_, self.n_top_, k)
            out += np.split(words, np.cumsum([len(x) for x in xs])[:-1])
        return out

    def _vector(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, c = np.unique(words.ravel(), return_counts=True)
        return w.astype(np.int64), np.sqrt(c).astype(np.float32)

    # -- inverted file ---------------------------------------------------------------------

    def add(self, keypoints: Sequence[Keypoints | np.ndarray],
            ids: Sequence[int] | None = None) -> np.ndarray:
        """Index gallery photos (after :meth:`fit` or :meth:`load`; may be called again).

        Parameters
        ----------
        keypoints : sequence of Keypoints or descriptor arrays
            One per photo (an empty one is indexed and never shortlisted).
        ids : sequence of int, optional
            Gallery ids of the photos; default: the next consecutive integers.

        Returns
        -------
        ndarray of int64
            The ids given to the photos.
        """
        self._check_fitted()
        return self.add_words([w[:, 0] for w in self.assign_each(list(keypoints), 1)], ids)

    def add_words(self, words: Sequence[np.ndarray], ids: Sequence[int] | None = None
                  ) -> np.ndarray:
        """Index photos given as their descriptors' visual words (from :meth:`assign`).

        Parameters
        ----------
        words : sequence of ndarray of int
            One array of word ids per photo.
        ids : sequence of int, optional
            Gallery ids of the photos; default: the next consecutive integers.

        Returns
        -------
        ndarray of int64
            The ids given to the photos.
        """
        self._check_fitted()
        start = int(self.ids_.max()) + 1 if len(self.ids_) else 0
        new_ids = (np.arange(start, start + len(words), dtype=np.int64) if ids is None
                   else np.asarray(ids, np.int64))
        if len(new_ids) != len(words):
            raise DataError(f"{len(words)} photos but {len(new_ids)} ids.")
        if np.isin(new_ids, self.ids_).any() or len(np.unique(new_ids)) != len(new_ids):
            raise DataError("Gallery ids must be unique; some are already indexed.")
        indptr, indices, data = [0], [], []
        for photo_words in words:
            w, v = self._vector(np.asarray(photo_words, np.int64))
            indices.append(w)
            data.append(v)
            indptr.append(indptr[-1] + len(w))
        block = sp.csr_matrix(
            (np.concatenate(data) if data else np.zeros(0, np.float32),
             np.concatenate(indices) if indices else np.zeros(0, np.int64),
             np.asarray(indptr, np.int64)), shape=(len(words), self.n_words_),
            dtype=np.float32)
        self.counts_ = sp.vstack([self.counts_, block], format="csr")
        self.df_ = self.df_ + np.bincount(block.indices, minlength=self.n_words_)
        self.ids_ = np.concatenate([self.ids_, new_ids])
        self._cache = None
        return new_ids

    def __len__(self) -> int:
        return int(len(getattr(self, "ids_", ())))

    def empty_copy(self) -> VisualWords:
        """The same codebook (shared, not copied) with an empty inverted file.

        Returns
        -------
        VisualWords
        """
        self._check_fitted()
        new = copy.copy(self)
        new._reset_index()
        return new

    def _weights(self) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
        """idf, gallery norms and the word -> photo inverted file (recomputed after adds)."""
        if self._cache is None:
            n = max(len(self.ids_), 1)
            idf = np.log((n + 1) / np.maximum(self.df_, 1)).astype(np.float32)
            weighted = self.counts_ @ sp.diags(idf)
            norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
            inverted = self.counts_.T.tocsr()
            self._cache = (idf, norms.astype(np.float32), inverted)
        return self._cache

    def scores(self, query: Keypoints | np.ndarray) -> np.ndarray:
        """Cosine similarity of the query's tf-idf vector with every indexed photo.

        Parameters
        ----------
        query : Keypoints or ndarray
            The query photo's keypoints (or descriptors).

        Returns
        -------
        ndarray of float32, shape (n_photos,)
            In the order of ``ids_``.
        """
        self._check_fitted()
        if not len(self.ids_):
            return np.zeros(0, np.float32)
        return self._scores(self.assign(query, self.multiple_assignment))

    def _scores(self, words: np.ndarray) -> np.ndarray:
        """:meth:`scores` of a query given as its descriptors' words."""
        idf, norms, inverted = self._weights()
        w, v = self._vector(words)
        if not len(w):
            return np.zeros(len(self.ids_), np.float32)
        qv = v * idf[w]
        qn = float(np.sqrt((qv * qv).sum())) or 1.0
        s = inverted[w].T @ (qv * idf[w])
        return (np.asarray(s).ravel() / (np.maximum(norms, 1e-9) * qn)).astype(np.float32)

    def shortlist(self, query: Keypoints | np.ndarray, k: int = 20
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` gallery photos most similar to the query by visual words.

        Parameters
        ----------
        query : Keypoints or ndarray
            The query photo's keypoints.
        k : int
            Length of the shortlist.

        Returns
        -------
        ids : ndarray of int64
            Gallery ids, best first (photos sharing no word are left out).
        scores : ndarray of float32
            Their cosine similarities.
        """
        return self.shortlists([query], k)[0]

    def shortlists(self, queries: Sequence[Keypoints | np.ndarray], k: int = 20
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`shortlist` of several queries, their words assigned together
        (:meth:`assign_each`).

        Returns
        -------
        list of (ids, scores)
            One pair per query, as :meth:`shortlist` returns it.
        """
        self._check_fitted()
        if not len(self.ids_):
            return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in queries]
        out = []
        for words in self.assign_each(list(queries), self.multiple_assignment):
            s = self._scores(words)
            n = min(int(k), len(s))
            if n <= 0:
                out.append((np.zeros(0, np.int64), np.zeros(0, np.float32)))
                continue
            top = np.argpartition(-s, n - 1)[:n] if n < len(s) else np.arange(len(s))
            top = top[np.argsort(-s[top], kind="stable")]
            top = top[s[top] > 0]
            out.append((self.ids_[top], s[top]))
        return out

    # -- persistence -----------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the codebook and the inverted file as NumPy files (each atomically).

        Parameters
        ----------
        folder : path-like
            Created if needed.

        Returns
        -------
        Path
            The folder.
        """
        self._check_fitted()
        folder = Path(folder)
        arrays = {"coarse": self.coarse_, "fine": self.fine_, "ids": self.ids_,
                  "data": self.counts_.data.astype(np.float32),
                  "indices": self.counts_.indices.astype(np.int64),
                  "indptr": self.counts_.indptr.astype(np.int64), "df": self.df_}
        for name, arr in arrays.items():
            with atomic_write(folder / f"{name}.npy", "wb") as fh:
                np.save(fh, arr)
        write_json(folder / "words.json", {
            "format": _FORMAT, "n_words": int(self.n_words), "seed": int(self.seed),
            "sample_size": int(self.sample_size), "niter": int(self.niter),
            "multiple_assignment": int(self.multiple_assignment), "n_top": int(self.n_top_),
            "n_photos": len(self)})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> VisualWords:
        """Read what :meth:`save` wrote; :meth:`add` may then index more photos.

        Parameters
        ----------
        folder : path-like
            Folder written by :meth:`save`.

        Returns
        -------
        VisualWords

        Raises
        ------
        DataError
            When a file is missing or damaged.
        """
        folder = Path(folder)
        try:
            meta = json.loads((folder / "words.json").read_text(encoding="utf-8"))
            arr = {n: np.load(folder / f"{n}.npy", allow_pickle=False) for n in
                   ("coarse", "fine", "ids", "data", "indices", "indptr", "df")}
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read the visual words in {folder}: {exc}") from exc
        if meta.get("format") != _FORMAT:
            raise DataError(f"{folder} holds visual words of format {meta.get('format')}, "
                            f"this version reads {_FORMAT}; rebuild them.")
        self = cls(n_words=meta["n_words"], seed=meta["seed"], sample_size=meta["sample_size"],
                   multiple_assignment=meta["multiple_assignment"], niter=meta["niter"])
        self.coarse_, self.fine_ = arr["coarse"], arr["fine"]
        self.n_top_ = int(meta["n_top"])
        self.n_words_ = len(self.coarse_) * self.n_top_
        self.fit_seconds_ = 0.0
        self._reset_index()
        self.ids_ = arr["ids"].astype(np.int64)
        self.counts_ = sp.csr_matrix((arr["data"], arr["indices"], arr["indptr"]),
                                     shape=(len(self.ids_), self.n_words_), dtype=np.float32)
        self.df_ = arr["df"].astype(np.int64)
        return self
