"""The search engine: one recipe, one gallery, and same-item verification on top.

:class:`SearchEngine` is what notebook 06, ``index``/``search``, the matcher and the explorer
rank through. It holds

* the :class:`~lfhelpers.similarity.search.recipe.Recipe` that made it (saved as
  ``recipe.json``);
* a :class:`~lfhelpers.similarity.search.gallery.GalleryIndex` of the global descriptors, with
  the recipe's post-processing fitted on the gallery;
* when ``recipe.same_item``: every gallery photo's local features
  (:class:`~lfhelpers.similarity.search.same_item.LocalStore`) and an inverted file of visual
  words (:class:`~lfhelpers.similarity.search.words.VisualWords`). With a ``cache_dir`` the
  visual words are kept in its ``words/`` folder, named by a digest of the gallery's
  descriptors, the settings and the code of the vocabulary (:func:`words_key`): they depend on
  nothing else, so a gallery indexed again (the notebook rerun, another model's embeddings of
  the same photos) reads them instead of training the vocabulary.

A query photo is embedded, searched in the global index (a shortlist of ``n_global``), its
local features are looked up in the inverted file (a second shortlist of ``n_local``, which
finds the same object when the global descriptor matched the way the photo was taken), and
the fused shortlist is verified geometrically. Each neighbour says ``inliers`` (the verified
correspondences; ``None`` when not verified) and ``same_item`` (the verifier's decision);
verified same items come first, then the global ranking.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.similarity.search.gallery import GalleryIndex
from lfhelpers.similarity.search.recipe import Recipe
from lfhelpers.similarity.search.same_item import LocalStore, find_same_item
from lfhelpers.similarity.search.words import VisualWords
from lfhelpers.store import code_digest

log = logging.getLogger(__name__)

#: Answers an engine remembers (a long-lived explorer kernel must not grow without bound).
MEMO_SIZE = 4096
LOCAL_DIR = "local"
WORDS_DIR = "words"
#: Bump when what a kept vocabulary holds changes in a way its code digest does not show.
WORDS_CACHE_VERSION = 1


def vocabulary_size(n_descriptors: int, most: int = 262_144) -> int:
    """Visual words for a gallery of ``n_descriptors`` local descriptors.

    About one word per 4 descriptors, between 64 and ``most``: 262,144 words measured best on
    the DVD dev set among 2,300 photos (960,000 descriptors; right cover in the shortlist of 20
    for 0.99 of the queries, against 0.95 with 65,536 words), and a small gallery gets a
    vocabulary it can fill.
    """
    return int(min(most, max(64, n_descriptors // 4)))


def words_key(keypoints: Sequence[Any], words: VisualWords) -> str:
    """The name of a gallery's kept visual words: a digest of what they are made of.

    The codebook and the inverted file are computed from the descriptors alone (in gallery
    order) and the :class:`VisualWords` settings, by the code of
    :mod:`~lfhelpers.similarity.search.words` and :mod:`~lfhelpers.similarity.search.vocabulary`
    (their source is part of the digest).

    Parameters
    ----------
    keypoints : sequence of Keypoints
        The gallery photos' local features, in gallery order.
    words : VisualWords
        Unfitted, with the settings to use.

    Returns
    -------
    str
        32 hex characters.
    """
    from lfhelpers.similarity.search import vocabulary
    from lfhelpers.similarity.search import words as words_module

    digest = hashlib.blake2b(digest_size=16)
    settings = {"version": WORDS_CACHE_VERSION, "n_words": int(words.n_words),
                "seed": int(words.seed), "sample_size": int(words.sample_size),
                "multiple_assignment": int(words.multiple_assignment),
                "niter": int(words.niter)}
    digest.update(repr(sorted(settings.items())).encode())
    digest.update(code_digest(words_module, vocabulary).encode())
    for kp in keypoints:
        d = np.ascontiguousarray(kp.descriptors)
        digest.update(f"{d.dtype.str}{d.shape}".encode())
        digest.update(d.tobytes())
    return digest.hexdigest()


class SearchEngine:
    """A found-items gallery searched by one recipe, with same-item verification.

    Parameters
    ----------
    recipe : Recipe, optional
        Default: :class:`Recipe` ``()``.
    cache_dir : path-like, optional
        Content-addressed caches of vectors (``embeddings/``) and local features (``local/``).
    progress : bool
        Progress bars while embedding.
    **index_params
        Other :class:`~lfhelpers.similarity.search.index.NeighbourIndex` parameters
        (``exact_below``, ``nlist``, ``nprobe``, ``encoding``).

    Attributes
    ----------
    gallery_ : GalleryIndex
    store_ : LocalStore or None
    words_ : VisualWords or None
    paths_ : list of str
    labels_ : ndarray of str
    """

    def __init__(self, recipe: Recipe | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, progress: bool = False,
                 **index_params: Any):
        self.recipe = recipe
        self.cache_dir = cache_dir
        self.progress = progress
        self.index_params = index_params

    # -- parts -----------------------------------------------------------------------------

    @property
    def recipe_(self) -> Recipe:
        """The recipe in use."""
        return self.recipe or Recipe()

    def _cache(self, name: str) -> Path | None:
        return Path(self.cache_dir) / name if self.cache_dir else None

    def embedder(self) -> Any:
        """The recipe's embedder (built once)."""
        if getattr(self, "_embedder", None) is None:
            self._embedder = self.recipe_.embedder(self.cache_dir, self.progress)
        return self._embedder

    def local_features(self) -> Any:
        """The recipe's local-feature extractor (records unreadable photos, never raises)."""
        extractor = self.recipe_.local_features(self._cache("local"))
        extractor.on_error = "record"
        return extractor

    def without_caches(self) -> SearchEngine:
        """A copy that shares the fitted gallery but writes no disk cache and remembers no
        answer of this one: photos it searches (e.g. uploads) are embedded and described in
        memory only."""
        private = copy.copy(self)
        private.cache_dir = None
        private._embedder = None
        private._memo = OrderedDict()
        return private

    # -- building --------------------------------------------------------------------------

    def fit(self, vectors: np.ndarray, paths: Sequence[str | os.PathLike[str]],
            labels: Sequence[str] | None = None) -> SearchEngine:
        """Index gallery photos whose global vectors are already made by the recipe.

        Parameters
        ----------
        vectors : ndarray of shape (n, d)
            The recipe's embeddings of ``paths`` (e.g. from ``embed`` shards).
        paths : sequence of path-like
            The gallery photos (read again for their local features when ``same_item``).
        labels : sequence of str, optional

        Returns
        -------
        SearchEngine
            ``self``.
        """
        r = self.recipe_
        paths = [os.fspath(p) for p in paths]
        self._memo, self._vectors = OrderedDict(), None
        self.gallery_ = GalleryIndex(backend=r.backend, postprocess=r.postprocess,
                                     **self.index_params).fit(vectors, paths, labels)
        self.paths_, self.labels_ = self.gallery_.paths_, self.gallery_.labels_
        self.store_ = self.words_ = None
        if r.same_item:
            start = time.perf_counter()
            extractor = self.local_features()
            kps = extractor.extract(paths)
            self.store_ = LocalStore()
            self.store_.add_keypoints(kps, paths)
            n_desc = int(sum(len(k) for k in kps))
            if n_desc == 0:
                log.warning("no local features in any gallery photo: same-item verification "
                            "is off for this gallery")
                self.store_ = None
            else:
                n_words = r.n_words or vocabulary_size(n_desc)
                self.words_ = self._visual_words(kps, VisualWords(n_words, seed=r.seed))
                log.info("local features of %d photos (%d descriptors, %d words) in %.1f s",
                         len(paths), n_desc, self.words_.n_words_, time.perf_counter() - start)
        return self

    def _visual_words(self, kps: Sequence[Any], words: VisualWords) -> VisualWords:
        """``words`` fitted on the gallery's keypoints and indexing them, or the same read
        from ``<cache_dir>/words/<words_key>`` (written there when computed)."""
        folder = self._cache(WORDS_DIR)
        if folder is not None:
            folder = folder / words_key(kps, words)
            if (folder / "words.json").is_file():
                try:
                    kept = VisualWords.load(folder)
                    if len(kept) == len(kps):
                        return kept
                    log.warning("kept visual words in %s index %d photos, not %d: recomputed",
                                folder, len(kept), len(kps))
                except DataError as exc:
                    log.warning("kept visual words in %s unreadable (%s): recomputed", folder,
                                exc)
        words.fit(kps)
        words.add(kps)
        if folder is not None:
            words.save(folder)  # words.json last: a folder without it is not read back
        return words

    def fit_files(self, paths: Sequence[str | os.PathLike[str]],
                  labels: Sequence[str] | None = None) -> SearchEngine:
        """Embed gallery photos with the recipe and index them (unreadable ones skipped)."""
        paths = [os.fspath(p) for p in paths]
        result = self.embedder().extract(paths)
        if not result.ok.any():
            raise DataError("None of the gallery photos could be read.")
        kept = [p for p, ok in zip(paths, result.ok, strict=True) if ok]
        kept_labels = None if labels is None else [
            lab for lab, ok in zip(labels, result.ok, strict=True) if ok]
        return self.fit(result.features, kept, kept_labels)

    # -- searching -------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "gallery_"):
            raise DataError("The search engine is empty: fit it or load a saved index.")

    def search(self, queries: Sequence[str | os.PathLike[str]], k: int = 10,
               verify: bool = True, vectors: np.ndarray | None = None,
               exclude: Sequence[int] | None = None) -> list[list[dict[str, Any]]]:
        """Ranked found photos for each query photo.

        Parameters
        ----------
        queries : sequence of path-like
            Lost-item photos.
        k : int
            Neighbours per query.
        verify : bool
            Verify a fused shortlist geometrically (the recipe's ``same_item``); ``False``:
            the global ranking alone.
        vectors : ndarray of shape (m, d), optional
            The queries' global vectors when already embedded by the recipe (else embedded
            here).
        exclude : sequence of int, optional
            One gallery row per query to leave out (-1: none), for leave-one-out.

        Returns
        -------
        list of list of dict
            Per query: ``{"path", "label", "score", "inliers", "same_item"}`` dicts, verified
            same items first. ``score`` is the global cosine similarity (after the recipe's
            post-processing); ``inliers``/``same_item`` are ``None`` when not verified.
        """
        self._check_fitted()
        queries = [os.fspath(q) for q in queries]
        if vectors is None:
            vectors = self.embedder().transform(queries)
        if getattr(self, "_memo", None) is None:
            self._memo = OrderedDict()
        keys = [(q, k, verify, None if exclude is None else int(exclude[i]),
                 hashlib.blake2b(np.asarray(vectors[i], np.float32).tobytes(),
                                 digest_size=16).digest())
                for i, q in enumerate(queries)]
        if all(key in self._memo for key in keys):  # the same questions again (matcher modes)
            return [self._memo[key] for key in keys]
        found = self._search(queries, k, verify, vectors, exclude)
        for key, answer in zip(keys, found, strict=True):  # the latest MEMO_SIZE answers
            self._memo[key] = answer
            self._memo.move_to_end(key)
        while len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)
        return found

    def _search(self, queries: list[str], k: int, verify: bool, vectors: np.ndarray,
                exclude: Sequence[int] | None) -> list[list[dict[str, Any]]]:
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if len(vectors) != len(queries):
            raise DataError(f"{len(queries)} queries but {len(vectors)} vectors.")
        r = self.recipe_
        n = self.gallery_.n_items_ - (1 if exclude is not None else 0)
        if n < 1:
            return [[] for _ in queries]
        k = max(1, min(k, n))
        depth = min(n, max(k, r.n_global))
        q = self.gallery_.scaler_.transform(vectors)
        dist, idx = self.gallery_.index_.search(q, depth, exclude)
        scores = self.gallery_.index_.similarity(dist)
        use_local = verify and r.same_item and self.store_ is not None
        kps = self.local_features().extract(queries) if use_local else None
        # the visual-word shortlists of every query at once
        local = self.words_.shortlists(kps, r.n_local) if kps is not None else None
        gallery_vectors = None
        out = []
        for row, path in enumerate(queries):
            ids = [int(i) for i in idx[row] if i >= 0]
            score_of = {i: float(s) for i, s in zip(idx[row], scores[row], strict=True) if i >= 0}
            if not use_local or kps is None or len(kps[row]) == 0:
                if use_local:
                    log.info("%s: no local features; ranked by the global descriptor alone", path)
                out.append([self._neighbour(i, score_of[i], None, None) for i in ids[:k]])
                continue
            ranked = find_same_item(kps[row], self.store_, self.words_, ids, n_local=r.n_local,
                                    n_global=r.n_global, max_verify=r.max_verify,
                                    local=local[row])
            if exclude is not None and exclude[row] >= 0:
                ranked = [x for x in ranked if x.id != int(exclude[row])]
            missing = [x.id for x in ranked if x.id not in score_of]
            if missing:  # found by the visual words only: their global score, for the order
                if gallery_vectors is None:
                    gallery_vectors = self._gallery_vectors()
                for i in missing:
                    score_of[i] = float(q[row] @ gallery_vectors[i])
            # verified same items first (by inliers), then every other candidate by its score
            same = [x for x in ranked if x.same_item]
            rest = sorted((x for x in ranked if not x.same_item), key=lambda x: -score_of[x.id])
            out.append([self._neighbour(x.id, score_of[x.id],
                                        x.inliers if x.verification is not None else None,
                                        bool(x.same_item) if x.verification is not None
                                        else None)
                        for x in (same + rest)[:k]])
        return out

    def _gallery_vectors(self) -> np.ndarray:
        """The gallery as searched (post-processed), read from the index once."""
        if getattr(self, "_vectors", None) is None:
            self._vectors = self.gallery_.index_.reconstruct()
        return self._vectors

    def _neighbour(self, i: int, score: float, inliers: int | None,
                   same: bool | None) -> dict[str, Any]:
        return {"path": self.paths_[i], "label": str(self.labels_[i]),
                "score": round(score, 6), "inliers": inliers, "same_item": same}

    def verification(self, query: str | os.PathLike[str], found: int) -> Any:
        """The geometric verification of one query photo against gallery photo ``found``
        (for drawing its correspondences); ``None`` without local features."""
        from lfhelpers.similarity.search.verify import verify

        self._check_fitted()
        if self.store_ is None:
            return None
        kp = self.local_features().extract([os.fspath(query)])[0]
        return verify(kp, self.store_[int(found)])

    # -- saving ----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str],
             embedding: dict[str, Any] | None = None) -> Path:
        """Write the index, its recipe and the local features into ``folder``."""
        self._check_fitted()
        folder = self.gallery_.save(folder, embedding=embedding)
        self.recipe_.save(folder)
        if self.store_ is not None and self.words_ is not None:
            self.store_.save(folder / LOCAL_DIR)
            self.words_.save(folder / WORDS_DIR)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str],
             cache_dir: str | os.PathLike[str] | None = None,
             progress: bool = False) -> SearchEngine:
        """An engine saved by :meth:`save` (its recipe is read from ``recipe.json``)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"No index folder at {folder}; build one with "
                              "`python -m lfhelpers index`.")
        self = cls(Recipe.load(folder), cache_dir=cache_dir, progress=progress)
        self.gallery_ = GalleryIndex.load(folder)
        self.paths_, self.labels_ = self.gallery_.paths_, self.gallery_.labels_
        self.store_ = self.words_ = None
        if self.recipe_.same_item and (folder / LOCAL_DIR).is_dir():
            self.store_ = LocalStore.load(folder / LOCAL_DIR)
            self.words_ = VisualWords.load(folder / WORDS_DIR)
            if len(self.store_) != self.gallery_.n_items_:
                raise DataError(f"{folder}: the local features cover {len(self.store_)} photos "
                                f"of {self.gallery_.n_items_}; rebuild the index.")
        return self
