"""The explorer's data: everything is computed once at load, so the widgets only look things up.

:class:`Explorer` reads the clean data set (notebook 01), embeds every photo once with the
fine-tuned classifier (notebook 03; vectors come from the embedding cache notebook 06 fills),
takes the class probabilities from the same pass, names the main colors of every photo
(notebook 04's model; cached on disk) and builds the found-items index and matcher (notebook
06). A query or a slider then costs one matcher call on precomputed vectors.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfhelpers.explore import sources as src
from lfhelpers.explore.inputs import MissingInput, Upload

log = logging.getLogger(__name__)

#: Splits that form the found-items gallery; the test split plays the lost items.
GALLERY_SPLITS = ("train", "val")
QUERY_SPLIT = "test"
_COLOR_CACHE_VERSION = 1


@dataclass
class MatchSettings:
    """The matcher's knobs, as the sliders and toggles set them."""

    k: int = 6
    w_embedding: float = 1.0
    w_category: float = 0.5
    w_color: float = 0.25
    category_mode: str = "rerank"
    color_mode: str = "rerank"

    def weights(self) -> dict[str, Any]:
        """Keyword arguments of the matcher."""
        return {"w_embedding": float(self.w_embedding), "w_category": float(self.w_category),
                "w_color": float(self.w_color), "category_mode": self.category_mode,
                "color_mode": self.color_mode}


@dataclass
class Query:
    """A lost item's photo: a test photo of the data set or an upload."""

    key: str
    name: str
    label: str
    vector: np.ndarray
    top3: list[tuple[str, float]]
    palette: list[tuple[str, float, str]]
    source: Any  # a file path or a PIL image (uploads)


@dataclass
class Explorer:
    """Precomputed outputs of notebooks 01-06 for the interactive explorer.

    Build it with :meth:`load`. Attributes ending in ``_seconds`` say what loading cost.
    """

    clean_dir: Path
    manifest: pd.DataFrame
    gallery: pd.DataFrame = field(default_factory=pd.DataFrame)
    queries: pd.DataFrame = field(default_factory=pd.DataFrame)
    classes: list[str] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    proba: dict[str, np.ndarray] = field(default_factory=dict)
    top3: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    palettes: dict[str, list[tuple[str, float, str]]] = field(default_factory=dict)
    color_names: dict[str, list[str]] = field(default_factory=dict)
    index: Any = None
    embedder: Any = None
    namer: Any = None
    missing: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cache_dir: Path | None = None
    seed: int = 0
    _projection: dict[str, np.ndarray] = field(default_factory=dict)

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, data_dir: str | os.PathLike[str],
             classifier_model: str | os.PathLike[str] = "",
             color_model: str | os.PathLike[str] = "", color_source: str = "",
             cache_dir: str | os.PathLike[str] | None = "data/cache", seed: int = 0,
             batch_size: int = 32) -> Explorer:
        """Read and precompute everything the panels show.

        Parameters
        ----------
        data_dir : path-like
            The clean data set of notebook 01 (``manifest.csv``, ``rejects.csv``).
        classifier_model : path-like
            Notebook 03's ``.keras`` model. Missing: the matching, mistakes and map panels
            say that notebook 03 must run first (the cleanup review still works).
        color_model : path-like
            Notebook 04's color-name model. Missing: trained from ``color_source`` when that is
            set (not saved), else matching goes without colors.
        color_source : str
            Color data to train a namer on when ``color_model`` is missing (``""``: none).
        cache_dir : path-like, optional
            Embedding cache (shared with notebook 06) and the explorer's color cache.
        seed : int
        batch_size : int
            Photos per forward pass.

        Returns
        -------
        Explorer

        Raises
        ------
        MissingInput
            When there is no clean data set: notebook 01 must run first.
        """
        clean_dir = src.project_path(data_dir)
        try:
            manifest = src.read_manifest(clean_dir)
        except src.DataError:
            raise MissingInput(f"No clean data set at {data_dir}: run notebook 01 "
                               "(01_crawl_cleanup) first, or set data_dir.") from None
        cache = src.project_path(cache_dir) if cache_dir else None
        self = cls(clean_dir=clean_dir, manifest=manifest, cache_dir=cache, seed=int(seed))
        self.gallery = manifest[manifest["split"].isin(GALLERY_SPLITS)].reset_index(drop=True)
        self.queries = manifest[manifest["split"] == QUERY_SPLIT].reset_index(drop=True)
        if self.gallery.empty or self.queries.empty:
            self.missing["model"] = (f"The data set at {data_dir} has no train/test split: run "
                                     "notebook 01 with its split step first.")
            return self
        model = src.project_path(classifier_model) if classifier_model else None
        if model is None or not model.is_file():
            self.missing["model"] = (f"No classifier at {classifier_model or '(not set)'}: run "
                                     "notebook 03 (03_xception_finetune) first.")
            return self
        self._embed(model, batch_size)
        self._load_colors(color_model, color_source)
        start = time.perf_counter()
        self.index = src.gallery_index(np.stack([self.vectors[f] for f in self.gallery["file"]]),
                                       self.gallery["file"], self.gallery["label"])
        self.timings["index_seconds"] = time.perf_counter() - start
        return self

    def _embed(self, model: Path, batch_size: int) -> None:
        start = time.perf_counter()
        self.embedder = src.classifier_embedder(model, self.cache_dir, batch_size=batch_size)
        files = list(self.gallery["file"]) + list(self.queries["file"])
        result = self.embedder.extract(files, normalize=False)
        kept = [f for f, ok in zip(files, result.ok, strict=True) if ok]
        for path, reason in result.errors.items():
            self.notes.append(f"skipped {Path(path).name}: {reason}")
        proba = np.asarray(self.embedder.predict_proba(result.features), np.float32)
        unit = src.l2_normalize(result.features)
        n_classes = proba.shape[1]
        self.classes = list(self.embedder.classes_) or [str(i) for i in range(n_classes)]
        for path, vec, p in zip(kept, unit, proba, strict=True):
            self.vectors[path] = vec
            self.proba[path] = p
            order = np.argsort(-p, kind="stable")[:3]
            self.top3[path] = [(self.classes[j], float(p[j])) for j in order]
        self.gallery = self.gallery[self.gallery["file"].isin(self.vectors)].reset_index(
            drop=True)
        self.queries = self.queries[self.queries["file"].isin(self.vectors)].reset_index(
            drop=True)
        self.timings["embed_seconds"] = time.perf_counter() - start
        self.timings["n_cached"] = float(result.n_cached)
        if kept:  # trace the one-photo forward pass now, so that the first upload is quick
            start = time.perf_counter()
            raw = src.embed_image(self.embedder, src.open_image(kept[0]))
            self.embedder.predict_proba(raw[None])
            self.timings["warmup_seconds"] = time.perf_counter() - start

    def _load_colors(self, color_model: str | os.PathLike[str], color_source: str) -> None:
        start = time.perf_counter()
        path = src.project_path(color_model) if color_model else None
        if path is not None and path.is_file():
            ident = src.sha256_file(path)[:16]
        elif color_source:
            path, ident = None, f"source-{color_source}-{self.seed}"
            self.notes.append(f"no color model at {color_model or '(not set)'}; trained one "
                              f"on {color_source} (run notebook 04 to save one)")
        else:
            self.missing["colors"] = (f"No color model at {color_model or '(not set)'}: run "
                                      "notebook 04 (04_color_model) for color names.")
            return
        try:
            self.namer = src.load_color_namer(path, color_source or "synthetic", self.seed)
        except src.LFError as exc:
            self.missing["colors"] = f"Color names unavailable: {exc}"
            return
        files = list(self.gallery["file"]) + list(self.queries["file"])
        cached = self._read_color_cache(ident)
        fresh = 0
        for f in files:
            digest = self.manifest_sha(f)
            entry = cached.get(digest)
            if entry is None:
                try:
                    entry = palette_rows(src.dominant_colors(f, self.namer, seed=self.seed))
                except src.DataError as exc:
                    self.notes.append(f"no colors for {Path(f).name}: {exc}")
                    continue
                cached[digest] = entry
                fresh += 1
            self.palettes[f] = [tuple(e) for e in entry]
        if fresh:
            self._write_color_cache(ident, cached)
        self.color_names = {f: main_color_names(p) for f, p in self.palettes.items()}
        self.timings["color_seconds"] = time.perf_counter() - start

    def manifest_sha(self, path: str) -> str:
        """The SHA-256 of a data-set photo from the manifest (content key of the caches)."""
        if not hasattr(self, "_sha"):
            self._sha = dict(zip(self.manifest["file"], self.manifest["sha256"], strict=True))
        return self._sha.get(path) or src.sha256_file(path)

    def _color_cache_file(self, ident: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "explore" / f"colors-{ident}-v{_COLOR_CACHE_VERSION}.json"

    def _read_color_cache(self, ident: str) -> dict[str, list]:
        file = self._color_cache_file(ident)
        if file is None or not file.is_file():
            return {}
        import json

        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring the damaged color cache %s (%s)", file, exc)
            return {}

    def _write_color_cache(self, ident: str, table: dict[str, list]) -> None:
        file = self._color_cache_file(ident)
        if file is not None:
            src.write_json(file, table)

    # -- queries and matches -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when matching is possible (a classifier and its vectors are loaded)."""
        return self.index is not None

    def query_options(self) -> list[tuple[str, str]]:
        """``(label · file name, path)`` of each test photo, for a dropdown."""
        return [(f"{lab} · {Path(f).name}", f)
                for f, lab in zip(self.queries["file"], self.queries["label"], strict=True)]

    def query(self, path: str) -> Query:
        """A test photo as a query (everything precomputed)."""
        label = dict(zip(self.queries["file"], self.queries["label"], strict=True)).get(path, "")
        return Query(key=path, name=Path(path).name, label=label, vector=self.vectors[path],
                     top3=self.top3[path], palette=self.palettes.get(path, []), source=path)

    def upload_query(self, upload: Upload) -> Query:
        """An uploaded photo as a query: one forward pass and one palette, kept in memory."""
        raw = src.embed_image(self.embedder, upload.image)
        proba = np.asarray(self.embedder.predict_proba(raw[None]), np.float32)[0]
        order = np.argsort(-proba, kind="stable")[:3]
        top3 = [(self.classes[j], float(proba[j])) for j in order]
        palette = []
        if self.namer is not None:
            palette = palette_rows(src.dominant_colors(upload.image, self.namer, seed=self.seed))
        vector = src.l2_normalize(raw[None])[0]
        self.top3[upload.key] = top3
        if palette:
            self.palettes[upload.key] = palette
            self.color_names[upload.key] = main_color_names(palette)
        return Query(key=upload.key, name=upload.name, label="", vector=vector, top3=top3,
                     palette=palette, source=upload.image)

    def matcher(self, settings: MatchSettings) -> Any:
        """The lost-to-found matcher with these weights and modes."""
        colors = self.color_names if self.color_names else None
        return src.lost_found_matcher(self.index, self.top3, colors, **settings.weights())

    def match(self, query: Query, settings: MatchSettings) -> pd.DataFrame:
        """Ranked found items for ``query``: ``rank, path, label, score, similarity, category,
        color, why`` (fewer than ``k`` rows when a filter leaves fewer)."""
        return self.matcher(settings).match(query.key, k=int(settings.k), vector=query.vector)

    # -- classifier mistakes -------------------------------------------------------------------

    def confusion(self) -> pd.DataFrame:
        """The test confusion matrix: rows true label, columns predicted label (counts)."""
        from sklearn.metrics import confusion_matrix

        true, pred = self.test_predictions()
        matrix = confusion_matrix(true, pred, labels=self.classes)
        return pd.DataFrame(matrix, index=pd.Index(self.classes, name="true"),
                            columns=pd.Index(self.classes, name="predicted"))

    def test_predictions(self) -> tuple[list[str], list[str]]:
        """True and predicted (top-1) labels of the test photos."""
        true = [str(x) for x in self.queries["label"]]
        pred = [self.top3[f][0][0] for f in self.queries["file"]]
        return true, pred

    def accuracy(self) -> float:
        """Top-1 accuracy of the classifier on the test photos."""
        true, pred = self.test_predictions()
        return float(np.mean([t == p for t, p in zip(true, pred, strict=True)])) if true \
            else float("nan")

    def mistakes(self, true: str, predicted: str) -> pd.DataFrame:
        """Test photos of label ``true`` that the classifier calls ``predicted``, with top-3."""
        rows = [{"path": f, "label": lab, "top3": self.top3[f]}
                for f, lab in zip(self.queries["file"], self.queries["label"], strict=True)
                if lab == true and self.top3[f][0][0] == predicted]
        return pd.DataFrame(rows, columns=["path", "label", "top3"])

    def worst_pair(self) -> tuple[str, str] | None:
        """The most frequent mistake (true, predicted); ``None`` when there is none."""
        matrix = self.confusion()
        off = matrix.to_numpy().copy()
        np.fill_diagonal(off, 0)
        if off.max(initial=0) == 0:
            return None
        i, j = np.unravel_index(int(np.argmax(off)), off.shape)
        return str(matrix.index[i]), str(matrix.columns[j])

    # -- cleanup review ------------------------------------------------------------------------

    def rejects(self) -> pd.DataFrame:
        """Notebook 01's quarantine: ``source, label, reason, detail, quarantine, file``."""
        path = self.clean_dir / src.REJECTS
        if not path.is_file():
            return pd.DataFrame(columns=["source", "label", "reason", "detail", "quarantine",
                                         "file"])
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        table["file"] = [str(self.clean_dir / q) for q in table["quarantine"]]
        return table

    def duplicate_groups(self) -> list[pd.DataFrame]:
        """Near-duplicate groups of the clean set (manifest ``group`` with two or more photos),
        largest first."""
        if "group" not in self.manifest:
            return []
        sizes = self.manifest.groupby("group")["path"].transform("size")
        many = self.manifest[sizes > 1]
        groups = [g for _, g in many.groupby("group", sort=False)]
        return sorted(groups, key=len, reverse=True)

    # -- embedding map -------------------------------------------------------------------------

    def map_table(self, method: str = "tsne") -> pd.DataFrame:
        """2-D positions of every embedded photo: ``path, label, split, x, y`` (cached)."""
        files = list(self.gallery["file"]) + list(self.queries["file"])
        if method not in self._projection:
            start = time.perf_counter()
            x = np.stack([self.vectors[f] for f in files])
            self._projection[method] = src.project_2d(x, method, self.seed)
            self.timings[f"{method}_seconds"] = time.perf_counter() - start
        xy = self._projection[method]
        return pd.DataFrame({"path": files,
                             "label": list(self.gallery["label"]) + list(self.queries["label"]),
                             "split": ["gallery"] * len(self.gallery)
                             + ["query"] * len(self.queries),
                             "x": xy[:, 0], "y": xy[:, 1]})

    def neighbours(self, path: str, k: int = 5) -> pd.DataFrame:
        """The ``k`` nearest found items of a photo (the photo itself left out)."""
        exclude = None
        if path in set(self.index.paths_):
            exclude = [list(self.index.paths_).index(path)]
        sims, rows = self.index.search(self.vectors[path][None], k, exclude=exclude)
        out = [{"rank": r + 1, "path": self.index.paths_[i], "label": str(self.index.labels_[i]),
                "similarity": float(s)}
               for r, (s, i) in enumerate(zip(sims[0], rows[0], strict=True)) if i >= 0]
        return pd.DataFrame(out, columns=["rank", "path", "label", "similarity"])


def palette_rows(palette: Any) -> list[tuple[str, float, str]]:
    """``[(name, share, hex), ...]`` of a ``Palette`` (JSON-friendly)."""
    return [(str(c.name), round(float(c.share), 4), str(c.hex)) for c in palette.colors]


def main_color_names(rows: list[tuple[str, float, str]], min_share: float = 0.2) -> list[str]:
    """Color names covering at least ``min_share`` of the item (the largest one at least)."""
    if not rows:
        return []
    return [name for name, share, _ in rows if share >= min_share] or [rows[0][0]]

