"""Everything the explorer takes from the other stages, in one place.

The explorer reads the outputs of notebooks 01-06 through their public functions only; this
module names them, so that a stage that moves a function is followed by one edit here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lfhelpers.data import read_manifest
from lfhelpers.data.checks import CleanOptions
from lfhelpers.data.clean import QUARANTINE, REJECTS
from lfhelpers.errors import ConfigError, DataError, LFError
from lfhelpers.fsutil import atomic_write, sha256_file, write_json
from lfhelpers.images import MAX_PIXELS, open_image
from lfhelpers.metrics import read_metrics, record_metrics
from lfhelpers.paths import project_path, project_root

__all__ = [
    "CleanOptions", "ConfigError", "DataError", "LFError", "MAX_PIXELS", "QUARANTINE",
    "REJECTS", "atomic_write", "classifier_embedder", "dominant_colors", "embed_image",
    "gallery_index", "l2_normalize", "load_color_namer", "load_engine", "lost_found_matcher",
    "open_image", "plot_correspondences", "project_2d", "project_path", "project_root",
    "read_manifest", "read_metrics", "record_metrics", "sha256_file", "write_json",
]


def classifier_embedder(model_path: str | os.PathLike[str],
                        cache_dir: str | os.PathLike[str] | None, batch_size: int = 32) -> Any:
    """The fine-tuned classifier of notebook 03 as an embedder with its category head.

    ``extract(files, normalize=False)`` gives raw pooled vectors (cached on disk by file
    content, the same cache notebook 06 fills), ``predict_proba(raw)`` the class probabilities
    from them without a second pass, ``classes_`` the labels.
    """
    from lfhelpers.similarity.features.cnn import Embedder

    return Embedder("classifier", model_path=os.fspath(model_path), cache_dir=cache_dir,
                    batch_size=batch_size, progress=False).fit()


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity becomes a dot product)."""
    from lfhelpers.similarity.features.base import l2_normalize as _l2

    return _l2(features)


def gallery_index(vectors: np.ndarray, paths: Sequence[str], labels: Sequence[str],
                  embedder: Any = None) -> Any:
    """An exact nearest-neighbour index of the found items (notebook 06's ``GalleryIndex``)."""
    from lfhelpers.similarity.search.gallery import GalleryIndex

    return GalleryIndex(backend="exact", embedder=embedder).fit(vectors, list(paths),
                                                                list(labels))


def recipe_embedder(index_dir: str | os.PathLike[str],
                    cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The embedder of the recipe saved with notebook 06's engine (nothing else is loaded)."""
    from lfhelpers.similarity.search.recipe import Recipe

    return Recipe.load(index_dir).embedder(cache_dir)


def same_classifier(embedder: Any, model_path: str | os.PathLike[str]) -> bool:
    """Whether ``embedder`` is notebook 03's classifier at ``model_path`` (then it also gives
    the categories, without loading the model a second time)."""
    from lfhelpers.models.backbones import CLASSIFIER

    return (str(embedder.backbone).lower() == CLASSIFIER and bool(embedder.head_layers_)
            and os.path.realpath(embedder.model_path) == os.path.realpath(model_path))


def load_engine(index_dir: str | os.PathLike[str],
                cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """Notebook 06's saved :class:`~lfhelpers.similarity.search.engine.SearchEngine` (recipe,
    global index, local features, visual words); local features memory-mapped."""
    from lfhelpers.similarity.search.engine import SearchEngine

    return SearchEngine.load(index_dir, cache_dir=cache_dir)


def plot_correspondences(query: str | os.PathLike[str], found: str | os.PathLike[str],
                         verification: Any, ax: Any) -> Any:
    """The two photos side by side with the verified correspondences drawn as lines."""
    from lfhelpers.similarity.search.verify import plot_correspondences as _plot

    return _plot(query, found, verification, ax=ax)


def lost_found_matcher(index: Any, categories: Any, colors: Any, **weights: Any) -> Any:
    """Notebook 06's ``LostFoundMatcher`` over ``index`` (weights and modes as keywords)."""
    from lfhelpers.similarity.matcher import LostFoundMatcher

    return LostFoundMatcher(index, category_fn=categories, color_fn=colors, **weights)


def load_color_namer(path: str | os.PathLike[str] | None, color_source: str, seed: int) -> Any:
    """Notebook 04's color-name model (never saved from here)."""
    from lfhelpers import color

    return color.load_color_namer(path, color_source=color_source, seed=seed, save=False)


def dominant_colors(photo: Any, namer: Any, n_colors: int = 3, seed: int = 0) -> Any:
    """The main colors of a photo's item: a ``Palette`` with ``colors`` (name, share, hex)."""
    from lfhelpers import color

    return color.dominant_colors(photo, namer, n_colors=n_colors, seed=seed)


def palettes(files: Sequence[str], namer: Any, seed: int = 0,
             cache_dir: str | os.PathLike[str] | None = None) -> list[Any]:
    """:func:`dominant_colors` of many photos, kept in (and read from) the palette cache."""
    from lfhelpers import color

    return color.extract_palettes(files, namer, seed=seed, progress=False, cache_dir=cache_dir)


def project_2d(features: np.ndarray, method: str, seed: int) -> np.ndarray:
    """A 2-D map of the rows (t-SNE, UMAP or PCA, notebook 06's projection)."""
    from lfhelpers.similarity.cluster import project_2d as _project

    return _project(features, method, seed=seed)


def embed_image(embedder: Any, image: Any) -> np.ndarray:
    """Raw pooled vector of one in-memory photo; nothing is written to the embedding cache.

    Uses the fitted embedder's documented attributes ``model_``, ``preprocess_`` and
    ``image_size_`` and the one model-input resize, :func:`lfhelpers.images.load_rgb`.
    """
    from lfhelpers.images import load_rgb

    pixels = load_rgb(image, int(embedder.image_size_))[None].astype(np.float32)
    out = embedder.model_.predict_on_batch(embedder.preprocess_(pixels))
    return np.asarray(out, np.float32)[0]
