"""The explorer's data: the search engine of notebook 06 and a shared, read-only state.

:class:`Explorer` reads the clean data set (notebook 01) and loads the search engine that
notebook 06 saved at ``index_dir`` (recipe, global index, local features, visual words): the
lost photo is searched through it, so the explorer serves the ranking notebook 06 reports,
with same-item verification. Everything else that is the same for every visitor (the lost
photos' vectors, the classifier's probabilities, the colour names, the thumbnails, the map)
is prepared once per run in a separate process and memory-mapped
(:mod:`lfhelpers.explore.shared`), so a visitor's kernel stays small and imports TensorFlow
only when the visitor uploads a photo. A query or a slider then costs one matcher call.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfhelpers.explore import sources as src
from lfhelpers.explore.inputs import UPLOAD_DIR, MissingInput, Upload
from lfhelpers.explore.shared import SharedSpec, SharedState, open_shared, palette_rows

log = logging.getLogger(__name__)

#: Splits that form the found-items gallery; the test split plays the lost items.
GALLERY_SPLITS = ("train", "val")
QUERY_SPLIT = "test"
#: Sub-folder of ``data/uploads`` holding each visitor's current upload while it is searched
#: (one random folder per kernel, removed when the kernel ends).
SESSIONS = ".sessions"


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
    """A lost item's photo: a test photo of the data set or an upload (its session file)."""

    key: str
    name: str
    label: str
    vector: np.ndarray
    top3: list[tuple[str, float]]
    palette: list[tuple[str, float, str]]
    source: Any  # the photo file
    uploaded: bool = False


@dataclass
class Explorer:
    """The search engine of notebook 06 and the prepared outputs of notebooks 01-06.

    Build it with :meth:`load`. ``timings`` says what loading cost.
    """

    clean_dir: Path
    manifest: pd.DataFrame
    gallery: pd.DataFrame = field(default_factory=pd.DataFrame)
    queries: pd.DataFrame = field(default_factory=pd.DataFrame)
    classes: list[str] = field(default_factory=list)
    engine: Any = None
    shared: SharedState | None = None
    missing: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cache_dir: Path | None = None
    seed: int = 0
    classifier_model: Path | None = None
    color_model: Path | None = None
    color_source: str = ""
    upload_dir: Path = field(default_factory=lambda: src.project_path(UPLOAD_DIR))
    _uploads: dict[str, Query] = field(default_factory=dict)
    _resolved: dict[str, str] = field(default_factory=dict)
    _engine_row: dict[str, int] = field(default_factory=dict)
    _projection: dict[str, np.ndarray] = field(default_factory=dict)
    _session: Path | None = None
    _heavy: dict[str, Any] = field(default_factory=dict)

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, data_dir: str | os.PathLike[str],
             index_dir: str | os.PathLike[str] = "models/search/lostnet",
             classifier_model: str | os.PathLike[str] = "",
             color_model: str | os.PathLike[str] = "", color_source: str = "",
             cache_dir: str | os.PathLike[str] | None = "data/cache", seed: int = 0,
             projection: str = "tsne") -> Explorer:
        """Load the search engine and open (or prepare once) the shared state.

        Parameters
        ----------
        data_dir : path-like
            The clean data set of notebook 01 (``manifest.csv``, ``rejects.csv``).
        index_dir : path-like
            The search engine notebook 06 saved. Missing: the matching and map panels say
            that notebook 06 must run first (the cleanup review still works).
        classifier_model : path-like
            Notebook 03's ``.keras`` model (top-3 categories, the mistakes panel). Missing:
            matching goes without the category term.
        color_model : path-like
            Notebook 04's color-name model. Missing: trained from ``color_source`` when that is
            set (not saved), else matching goes without colors.
        color_source : str
            Color data to train a namer on when ``color_model`` is missing (``""``: none).
        cache_dir : path-like, optional
            The engine's vector and local-feature caches (shared with notebook 06) and the
            explorer's shared state.
        seed : int
        projection : str
            The map prepared with the shared state.

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
        self = cls(clean_dir=clean_dir, manifest=manifest, cache_dir=cache, seed=int(seed),
                   color_source=color_source)
        self.gallery = manifest[manifest["split"].isin(GALLERY_SPLITS)].reset_index(drop=True)
        self.queries = manifest[manifest["split"] == QUERY_SPLIT].reset_index(drop=True)
        if self.gallery.empty or self.queries.empty:
            self.missing["model"] = (f"The data set at {data_dir} has no train/test split: run "
                                     "notebook 01 with its split step first.")
            return self
        index = src.project_path(index_dir) if index_dir else None
        if index is None or not (index / "recipe.json").is_file():
            self.missing["model"] = (f"No search engine at {index_dir or '(not set)'}: run "
                                     "notebook 06 (06_cnn_search_clustering) first, with the "
                                     "same index_dir.")
            return self
        model = src.project_path(classifier_model) if classifier_model else None
        self.classifier_model = model if model is not None and model.is_file() else None
        if self.classifier_model is None:
            self.missing["classifier"] = (f"No classifier at {classifier_model or '(not set)'}:"
                                          " run notebook 03 (03_xception_finetune) for the "
                                          "top-3 categories and the mistakes panel.")
        colors = src.project_path(color_model) if color_model else None
        self.color_model = colors if colors is not None and colors.is_file() else None
        if self.color_model is None and not color_source:
            self.missing["colors"] = (f"No color model at {color_model or '(not set)'}: run "
                                      "notebook 04 (04_color_model) for color names.")
        start = time.perf_counter()
        self.engine = src.load_engine(index, cache)
        self._engine_row = {self.resolve(p): i for i, p in enumerate(self.engine.paths_)}
        self.timings["engine_seconds"] = time.perf_counter() - start
        self._set_gallery()
        start = time.perf_counter()
        spec = SharedSpec(clean_dir=str(clean_dir), index_dir=str(index),
                          gallery=list(self.gallery["file"]), queries=list(self.queries["file"]),
                          classifier_model=str(self.classifier_model or ""),
                          color_model=str(self.color_model or ""), color_source=color_source,
                          cache_dir=str(cache or ""), seed=int(seed), projection=projection)
        self.shared = open_shared(spec)
        self.timings["shared_seconds"] = time.perf_counter() - start
        self.notes += self.shared.info.get("notes", [])
        self.classes = list(self.shared.classes)
        kept = set(self.shared.files)
        self.queries = self.queries[self.queries["file"].isin(kept)].reset_index(drop=True)
        release_memory()
        return self

    def _set_gallery(self) -> None:
        """The found items are the engine's gallery; the lost photos the test photos not in it."""
        by_file = self.manifest.set_index("file")
        files = [self.resolve(p) for p in self.engine.paths_]
        self.gallery = pd.DataFrame({
            "file": files, "label": [str(x) for x in self.engine.labels_],
            "split": [by_file["split"].get(f, "") if f in by_file.index else "" for f in files]})
        inside = set(files)
        self.queries = self.queries[~self.queries["file"].isin(inside)].reset_index(drop=True)

    def resolve(self, path: str) -> str:
        """An engine path as the explorer's absolute photo path (cached)."""
        got = self._resolved.get(path)
        if got is None:
            got = self._resolved[path] = str(src.project_path(path))
        return got

    # -- queries and matches -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when matching is possible (notebook 06's engine is loaded)."""
        return self.engine is not None and self.shared is not None

    @property
    def has_classifier(self) -> bool:
        """True when the classifier's probabilities are available."""
        return self.shared is not None and self.shared.proba is not None

    @property
    def color_names(self) -> bool:
        """True when the photos have color names."""
        return bool(self.shared is not None and self.shared.palettes)

    def query_options(self) -> list[tuple[str, str]]:
        """``(label · file name, path)`` of each test photo, for a dropdown."""
        return [(f"{lab} · {Path(f).name}", f)
                for f, lab in zip(self.queries["file"], self.queries["label"], strict=True)]

    def query(self, path: str) -> Query:
        """A test photo as a query (its vector, categories and colors are precomputed)."""
        label = dict(zip(self.queries["file"], self.queries["label"], strict=True)).get(path, "")
        row = self.shared.row[path]
        return Query(key=path, name=Path(path).name, label=label,
                     vector=np.array(self.shared.vectors[row], np.float32),
                     top3=self.shared.top3(path), palette=self.shared.palettes.get(path, []),
                     source=path)

    def top3(self, path: str) -> list[tuple[str, float]]:
        """The classifier's top-3 of a photo of the data set or of the current upload."""
        if path in self._uploads:
            return self._uploads[path].top3
        return self.shared.top3(self.resolve(path)) if self.shared is not None else []

    def colors(self, path: str) -> list[str]:
        """Main color names of a photo of the data set or of the current upload."""
        if path in self._uploads:
            return main_color_names(self._uploads[path].palette)
        if self.shared is None:
            return []
        return main_color_names(self.shared.palettes.get(self.resolve(path), []))

    def session_dir(self) -> Path:
        """This kernel's private upload folder (random name; removed when the kernel ends)."""
        if self._session is None:
            self._session = self.upload_dir / SESSIONS / secrets.token_hex(12)
            self._session.mkdir(parents=True, exist_ok=True)
            atexit.register(shutil.rmtree, self._session, True)
        return self._session

    def end_session(self) -> None:
        """Forget the uploads and remove this kernel's upload folder."""
        self._uploads.clear()
        if self._session is not None:
            shutil.rmtree(self._session, ignore_errors=True)
            self._session = None

    def _upload_engine(self) -> Any:
        """The engine without its disk caches: an upload's vectors and local features are
        computed in memory and never written to the shared cache."""
        if "engine" not in self._heavy:
            self._heavy["engine"] = self.engine.without_caches()
        return self._heavy["engine"]

    def upload_query(self, upload: Upload) -> Query:
        """An uploaded photo as a query.

        The photo is written to this kernel's private folder under ``data/uploads/.sessions``
        (the search engine's local features read a file) and replaces the visitor's previous
        upload; the engine's recipe embeds it (TensorFlow is imported here, on the first
        upload), the classifier gives its top-3 and the color model its palette.
        """
        for old in list(self._uploads):
            Path(old).unlink(missing_ok=True)
        self._uploads.clear()
        suffix = Path(upload.name).suffix.lower() or ".img"
        file = self.session_dir() / f"{upload.key.split(':', 1)[1]}{suffix}"
        with open(file, "wb") as fh:
            fh.write(upload.content)
        start = time.perf_counter()
        vector = np.asarray(self._upload_engine().embedder().transform([str(file)]),
                            np.float32)[0]
        top3: list[tuple[str, float]] = []
        if self.classifier_model is not None:
            if "classifier" not in self._heavy:
                self._heavy["classifier"] = src.classifier_embedder(self.classifier_model, None)
            emb = self._heavy["classifier"]
            raw = src.embed_image(emb, upload.image)
            proba = np.asarray(emb.predict_proba(raw[None]), np.float32)[0]
            classes = self.classes or list(emb.classes_)
            top3 = [(classes[j], float(proba[j])) for j in np.argsort(-proba, kind="stable")[:3]]
        palette: list[tuple[str, float, str]] = []
        if self.color_model is not None or self.color_source:
            if "namer" not in self._heavy:
                self._heavy["namer"] = src.load_color_namer(
                    self.color_model, self.color_source or "synthetic", self.seed)
            palette = palette_rows(src.dominant_colors(upload.image, self._heavy["namer"],
                                                       seed=self.seed))
        self.timings["upload_seconds"] = time.perf_counter() - start
        query = Query(key=str(file), name=upload.name, label="", vector=vector, top3=top3,
                      palette=palette, source=str(file), uploaded=True)
        self._uploads[str(file)] = query
        return query

    def matcher(self, settings: MatchSettings, uploaded: bool = False) -> Any:
        """The lost-to-found matcher over the search engine, with these weights and modes."""
        engine = self._upload_engine() if uploaded else self.engine
        categories = self.top3 if self.has_classifier else None
        colors = self.colors if self.color_names else None
        return src.lost_found_matcher(engine, categories, colors, **settings.weights())

    def match(self, query: Query, settings: MatchSettings) -> pd.DataFrame:
        """Ranked found items for ``query`` through the search engine: ``rank, path, label,
        score, similarity, category, color, inliers, same_item, why``; verified same items
        first (fewer than ``k`` rows when a filter leaves fewer)."""
        table = self.matcher(settings, query.uploaded).match(query.key, k=int(settings.k),
                                                              vector=query.vector)
        table["path"] = [self.resolve(p) for p in table["path"]]
        release_memory()
        return table

    def search(self, query: Query, k: int) -> list[dict[str, Any]]:
        """The engine's own answer for ``query`` (``engine.search``), paths as shown."""
        engine = self._upload_engine() if query.uploaded else self.engine
        found = engine.search([query.key], k, vectors=query.vector[None])[0]
        return [{**n, "path": self.resolve(n["path"])} for n in found]

    def verification(self, query: Query, found: str) -> Any:
        """The engine's geometric verification of ``query`` against a found photo."""
        engine = self._upload_engine() if query.uploaded else self.engine
        return engine.verification(query.key, self._engine_row[found])

    def correspondences_png(self, query: Query, found: str, width: float = 9.0) -> bytes:
        """PNG of the lost and the found photo side by side, verified correspondences as lines
        (the engine's verification; an empty picture title says when there is none)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        v = self.verification(query, found)
        fig = Figure(figsize=(width, width * 0.45), dpi=90)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if v is None:
            ax.set_axis_off()
            ax.set_title("no local features in this gallery: nothing to verify")
        else:
            src.plot_correspondences(query.key, found, v, ax=ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        release_memory()
        return buf.getvalue()

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
        pred = [self.top3(f)[0][0] for f in self.queries["file"]]
        return true, pred

    def accuracy(self) -> float:
        """Top-1 accuracy of the classifier on the test photos."""
        true, pred = self.test_predictions()
        return float(np.mean([t == p for t, p in zip(true, pred, strict=True)])) if true \
            else float("nan")

    def mistakes(self, true: str, predicted: str) -> pd.DataFrame:
        """Test photos of label ``true`` that the classifier calls ``predicted``, with top-3."""
        rows = [{"path": f, "label": lab, "top3": self.top3(f)}
                for f, lab in zip(self.queries["file"], self.queries["label"], strict=True)
                if lab == true and self.top3(f)[0][0] == predicted]
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
        """2-D positions of every photo: ``path, label, split, x, y`` (prepared once per run
        for the configured projection; another one is computed here and kept)."""
        files = self.shared.files
        if method not in self._projection:
            xy = self.shared.map_xy(method)
            if xy is None:
                start = time.perf_counter()
                xy = src.project_2d(np.asarray(self.shared.vectors), method, self.seed)
                self.timings[f"{method}_seconds"] = time.perf_counter() - start
            self._projection[method] = xy
        xy = self._projection[method]
        label = dict(zip(self.gallery["file"], self.gallery["label"], strict=True))
        label.update(zip(self.queries["file"], self.queries["label"], strict=True))
        split = ["gallery" if f in self._engine_row else "query" for f in files]
        return pd.DataFrame({"path": files, "label": [label.get(f, "") for f in files],
                             "split": split, "x": xy[:, 0], "y": xy[:, 1]})

    def neighbours(self, path: str, k: int = 5) -> pd.DataFrame:
        """The ``k`` nearest found items of a photo by the engine's global descriptor (the
        photo itself left out)."""
        row = self._engine_row.get(path, -1)
        vector = np.array(self.shared.vectors[self.shared.row[path]], np.float32)[None]
        found = self.engine.search([path], k, verify=False, vectors=vector,
                                   exclude=None if row < 0 else [row])[0]
        out = [{"rank": r + 1, "path": self.resolve(n["path"]), "label": n["label"],
                "similarity": float(n["score"])} for r, n in enumerate(found)]
        return pd.DataFrame(out, columns=["rank", "path", "label", "similarity"])


def release_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; no-op elsewhere).

    A search allocates and frees tens of MB (shortlists, verification, the picture); without
    this a visitor's kernel keeps them as free heap (measured: 25-40 MB of RSS on lostnet).
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def main_color_names(rows: list[tuple[str, float, str]], min_share: float = 0.2) -> list[str]:
    """Color names covering at least ``min_share`` of the item (the largest one at least)."""
    if not rows:
        return []
    return [name for name, share, _ in rows if share >= min_share] or [rows[0][0]]

