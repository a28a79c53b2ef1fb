"""The lost-to-found matcher: same item, similarity, category, color, and why each match.

:class:`LostFoundMatcher` takes candidates from the search engine
(:class:`~lfhelpers.similarity.search.engine.SearchEngine`, verified same items first) or a
plain :class:`~lfhelpers.similarity.search.gallery.GalleryIndex` and combines the embedding
similarity with the query's top-3 categories (the fine-tuned classifier's,
:func:`query_categories`, or a :class:`LinearCategories` stand-in fitted on the gallery) and
the color names of both photos (:func:`color_table`), as filters or as re-ranking terms with
weights, and says why it proposes each match.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from lfhelpers.errors import ConfigError
from lfhelpers.similarity.search.engine import SearchEngine
from lfhelpers.similarity.search.gallery import GalleryIndex

log = logging.getLogger(__name__)


def _lookup(source: Callable | Mapping | None) -> Callable[[str], Any] | None:
    """A memoised ``path -> value`` function from a callable or a precomputed table."""
    if source is None:
        return None
    memo: dict[str, Any] = {}
    if isinstance(source, Mapping):
        return lambda path: source.get(os.fspath(path), [])

    def get(path: str) -> Any:
        path = os.fspath(path)
        if path not in memo:
            memo[path] = source(path)
        return memo[path]

    return get


class LinearCategories:
    """Top-k categories from a logistic regression on gallery embeddings.

    A stand-in for the fine-tuned classifier (notebook 03) when it is not available: it is
    fitted on the gallery only, so query photos are never seen in training.

    Parameters
    ----------
    k : int
        Categories per photo.
    C : float
        Inverse regularisation strength.
    seed : int

    Attributes
    ----------
    model_ : sklearn.linear_model.LogisticRegression
    """

    def __init__(self, k: int = 3, C: float = 1.0, seed: int = 0):
        self.k = k
        self.C = C
        self.seed = seed

    def fit(self, vectors: np.ndarray, labels: Sequence[str]) -> LinearCategories:
        """Fit on gallery vectors and labels; returns ``self``."""
        self.model_ = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)
        self.model_.fit(np.asarray(vectors), np.asarray(labels, dtype=str))
        return self

    def table(self, paths: Sequence[str], vectors: np.ndarray) -> dict[str, list[tuple]]:
        """``{path: [(label, probability), ...]}`` for photos with known vectors."""
        proba = self.model_.predict_proba(np.asarray(vectors))
        classes = self.model_.classes_
        out = {}
        for path, p in zip(paths, proba, strict=True):
            order = np.argsort(-p, kind="stable")[:self.k]
            out[os.fspath(path)] = [(str(classes[j]), float(p[j])) for j in order]
        return out


def query_categories(
    files: Sequence[str],
    vectors: np.ndarray,
    gallery_vectors: np.ndarray,
    gallery_labels: Sequence[str],
    classifier: Any = None,
    k: int = 3,
    seed: int = 0,
) -> tuple[dict[str, list[tuple[str, float]]], str]:
    """Top-``k`` categories of query photos, for :class:`LostFoundMatcher`.

    Parameters
    ----------
    files : sequence of str
        Query photos.
    vectors : ndarray
        Their embeddings (used by the stand-in).
    gallery_vectors, gallery_labels
        The gallery, to fit the stand-in on.
    classifier : lfhelpers.similarity.features.cnn.Embedder, optional
        A fitted ``Embedder("classifier", ...)`` (notebook 03's model); its category head is
        used. ``None``: a :class:`LinearCategories` stand-in fitted on the gallery only.
    k : int
    seed : int

    Returns
    -------
    table : dict
        ``{path: [(label, probability), ...]}``.
    source : str
        Where the categories came from, for the reader.
    """
    files = [os.fspath(f) for f in files]
    if classifier is not None and getattr(classifier, "head_layers_", None):
        return classifier.top_k(files, k=k), "the fine-tuned classifier's top-3"
    table = LinearCategories(k=k, seed=seed).fit(gallery_vectors, gallery_labels).table(
        files, vectors)
    return table, "a logistic regression on the gallery embeddings (no fine-tuned classifier)"


def color_table(
    files: Sequence[str | os.PathLike[str]],
    color_source: str = "codingtrain_colors",
    min_share: float = 0.2,
    n_colors: int = 3,
    seed: int = 0,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, list[str]]:
    """Color names of each photo's item (notebook 04's :mod:`lfhelpers.color`), by path.

    Parameters
    ----------
    files : sequence of path-like
    color_source : str
        Training data of the color-name model when notebook 04 has not saved one
        (``models/color_names.joblib``): a data set name, a file, or ``"synthetic"`` (offline).
    min_share : float
        Colors covering less of the item are left out.
    n_colors : int
        Color clusters per photo.
    seed : int
    progress : bool
    cache_dir : path-like, optional
        Cache root: each photo's palette is kept there (shared with the explorer).

    Returns
    -------
    dict
        ``{path: [color name, ...]}``, largest share first; unreadable photos are left out
        (logged).
    """
    from lfhelpers import color

    namer = color.load_color_namer(color_source=color_source, seed=seed, save=False)
    files = [os.fspath(f) for f in files]
    palettes = color.extract_palettes(files, namer, n_colors=n_colors, seed=seed,
                                      progress=progress, cache_dir=cache_dir)
    return {f: [c.name for c in p.colors if c.share >= min_share] or [p.main.name]
            for f, p in zip(files, palettes, strict=True) if p is not None}


class LostFoundMatcher:
    """Rank found items for a lost item's photo: similarity, category and color, explained.

    The search engine (or a plain embedding index) proposes ``candidates`` gallery photos;
    each gets

    * ``similarity``: cosine similarity of the embeddings;
    * ``category``: how much the query's top-3 categories (``category_fn``) agree with the
      found item's category (its gallery label, or ``gallery_categories``): the sum over
      shared categories of the products of their probabilities (1.0: same single category);
    * ``color``: the overlap (Jaccard) of the color names (``color_fn``) of both photos;
    * with a :class:`~lfhelpers.similarity.search.engine.SearchEngine`: ``inliers`` and
      ``same_item`` from its geometric verification. A verified same item ranks above every
      other candidate whatever its category and colour terms: it is the owner's item.

    In ``"rerank"`` mode the score is ``w_embedding·similarity + w_category·category +
    w_color·color``; in ``"filter"`` mode a candidate with no shared category (or color)
    is dropped and the others keep that combined score.

    Parameters
    ----------
    index : SearchEngine or GalleryIndex
        The fitted found-items gallery (an engine adds same-item verification).
    category_fn : callable or mapping, optional
        ``path -> [(label, probability), ...]`` (e.g. the classifier's top 3), or a table of
        those by path. ``None``: no category term.
    color_fn : callable or mapping, optional
        ``path -> [color name, ...]``, or a table of those. ``None``: no color term.
    gallery_categories : callable or mapping, optional
        Categories of gallery photos; default: their labels, with probability 1.
    w_embedding, w_category, w_color : float
        Weights of the three terms.
    category_mode, color_mode : {"rerank", "filter"}
    candidates : int
        Gallery photos taken from the index before re-ranking.
    verify : bool
        Ask the engine for same-item verification (ignored for a plain index).
    """

    def __init__(self, index: GalleryIndex, category_fn: Callable | Mapping | None = None,
                 color_fn: Callable | Mapping | None = None,
                 gallery_categories: Callable | Mapping | None = None,
                 w_embedding: float = 1.0, w_category: float = 0.5, w_color: float = 0.25,
                 category_mode: str = "rerank", color_mode: str = "rerank",
                 candidates: int = 50, verify: bool = True):
        for name, mode in (("category_mode", category_mode), ("color_mode", color_mode)):
            if mode not in ("rerank", "filter"):
                raise ConfigError(f"{name} must be 'rerank' or 'filter', got {mode!r}.")
        self.engine = index if isinstance(index, SearchEngine) else None
        self.index = index.gallery_ if self.engine is not None else index
        self.verify = verify
        self._row = {p: i for i, p in enumerate(self.index.paths_)}
        self.category_fn = category_fn
        self.color_fn = color_fn
        self.gallery_categories = gallery_categories
        self.w_embedding = w_embedding
        self.w_category = w_category
        self.w_color = w_color
        self.category_mode = category_mode
        self.color_mode = color_mode
        self.candidates = candidates
        self._category = _lookup(category_fn)
        self._color = _lookup(color_fn)
        self._gallery_category = _lookup(gallery_categories)

    def _gallery_cats(self, row: int) -> list[tuple[str, float]]:
        if self._gallery_category is not None:
            return list(self._gallery_category(self.index.paths_[row]))
        return [(str(self.index.labels_[row]), 1.0)]

    def searched(self, queries: Sequence[str], vectors: np.ndarray | None = None,
                 k: int = 5) -> list[list[dict[str, Any]]]:
        """The engine's candidates for each lost photo, as :meth:`match` takes them.

        Matchers that differ only in their weights and filters rank the same candidates:
        search once with this and hand the result to each one's :meth:`match` or
        :meth:`evaluate` (``found``), instead of verifying the same pairs once per matcher.

        Parameters
        ----------
        queries : sequence of str
            Lost photos.
        vectors : ndarray, optional
            Their embeddings.
        k : int
            Matches each :meth:`match` will return.

        Returns
        -------
        list of list of dict
            :meth:`SearchEngine.search`'s answer.

        Raises
        ------
        ConfigError
            When the matcher has a plain index, not a search engine.
        """
        if self.engine is None:
            raise ConfigError("searched() needs a matcher built on a SearchEngine.")
        want = min(max(int(self.candidates), k), self.index.n_items_)
        return self.engine.search([os.fspath(q) for q in queries], want, verify=self.verify,
                                  vectors=vectors)

    def match(self, query: str | os.PathLike[str], k: int = 5,
              vector: np.ndarray | None = None, exclude: int = -1,
              found: list[dict[str, Any]] | None = None) -> pd.DataFrame:
        """The ``k`` best found items for one lost photo, with the reasons.

        Parameters
        ----------
        query : path-like
            The lost item's photo (embedded with the index's embedder unless ``vector`` is
            given; categories and colors are looked up by this path).
        k : int
            Matches returned.
        vector : ndarray, optional
            The query's embedding, when already known.
        exclude : int
            A gallery row to leave out (the query itself when it is in the gallery).
        found : list of dict, optional
            This query's candidates from :meth:`searched` of a matcher on the same engine
            (with the same ``candidates`` and ``verify``); searched here when not given.

        Returns
        -------
        pandas.DataFrame
            Columns ``rank, path, label, score, similarity, category, color, inliers,
            same_item, why``, verified same items first; fewer than ``k`` rows when filters
            leave fewer candidates.
        """
        query = os.fspath(query)
        n = self.index.n_items_ - (1 if exclude >= 0 else 0)
        want = min(max(int(self.candidates), k), n)
        checks: list[tuple[int | None, bool | None]] = []
        if self.engine is not None:
            if found is None:
                found = self.engine.search(
                    [query], want, verify=self.verify,
                    vectors=None if vector is None else np.atleast_2d(vector),
                    exclude=None if exclude < 0 else [exclude])[0]
            found = found[:want]
            sims = np.array([[n["score"] for n in found]])
            rows = np.array([[self._row[n["path"]] for n in found]], np.int64)
            checks = [(n["inliers"], n["same_item"]) for n in found]
        else:
            sims, rows = self.index.search(query if vector is None else vector, want,
                                           exclude=None if exclude < 0 else [exclude])
        q_cats = list(self._category(query)) if self._category else []
        q_cols = set(self._color(query)) if self._color else set()
        top_label = q_cats[0][0] if q_cats else None
        q_rank = {lab: r for r, (lab, _) in enumerate(q_cats, start=1)}
        out = []
        for pos, (sim, row) in enumerate(zip(sims[0], rows[0], strict=True)):
            if row < 0:
                continue
            inliers, same = checks[pos] if checks else (None, None)
            reasons = [f"same item ({inliers} matching points)"] if same else []
            reasons.append(f"similarity {sim:.2f}")
            cat = 0.0
            if self._category:
                g = dict(self._gallery_cats(row))
                shared = {lab: p * g[lab] for lab, p in q_cats if lab in g}
                cat = float(sum(shared.values()))
                if shared:
                    best = max(shared, key=shared.get)
                    reasons.append(f"category {best} (query's #{q_rank[best]}, "
                                   f"p={dict(q_cats)[best]:.2f})")
                else:
                    reasons.append(f"category not in the query's top {len(q_cats)}")
                if self.category_mode == "filter" and not shared and not same:
                    continue
            col = 0.0
            if self._color:
                g_cols = set(self._color(self.index.paths_[row]))
                union = q_cols | g_cols
                col = len(q_cols & g_cols) / len(union) if union else 0.0
                common = sorted(q_cols & g_cols)
                reasons.append(f"colors shared: {', '.join(common)}" if common
                               else "no shared color")
                if self.color_mode == "filter" and not common and not same:
                    continue
            score = (self.w_embedding * float(sim) + self.w_category * cat
                     + self.w_color * col)
            out.append({"path": self.index.paths_[row], "label": str(self.index.labels_[row]),
                        "score": score, "similarity": float(sim), "category": cat,
                        "color": col, "inliers": inliers, "same_item": bool(same),
                        "why": "; ".join(reasons)})
        table = pd.DataFrame(out, columns=["path", "label", "score", "similarity", "category",
                                           "color", "inliers", "same_item", "why"])
        table["inliers"] = table["inliers"].astype("Int64")  # <NA>: not verified
        table = table.sort_values(["same_item", "score"], ascending=False, kind="stable").head(k)
        table.insert(0, "rank", np.arange(1, len(table) + 1))
        if top_label is not None:
            table.attrs["query_top_category"] = top_label
        return table.reset_index(drop=True)

    def evaluate(self, queries: Sequence[str], labels: Sequence[str],
                 vectors: np.ndarray | None = None, k: int = 5,
                 found: list[list[dict[str, Any]]] | None = None) -> dict[str, float]:
        """Precision@k of the matcher's ranking by label (a short list counts missing as wrong).

        Parameters
        ----------
        queries : sequence of str
            Lost photos (not in the gallery).
        labels : sequence of str
            Their labels.
        vectors : ndarray, optional
            Their embeddings (else embedded with the index's embedder).
        k : int
        found : list, optional
            :meth:`searched` for these queries (one search shared by several matchers).

        Returns
        -------
        dict
            ``p_at_<k>`` and ``mean_returned`` (matches left after the filters).
        """
        precisions, returned = [], []
        for i, (query, label) in enumerate(zip(queries, labels, strict=True)):
            table = self.match(query, k, vector=None if vectors is None else vectors[i],
                               found=None if found is None else found[i])
            precisions.append(float((table["label"] == label).sum()) / k)
            returned.append(len(table))
        return {f"p_at_{k}": float(np.mean(precisions)),
                "mean_returned": float(np.mean(returned))}
