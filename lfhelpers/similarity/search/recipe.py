"""The one retrieval recipe: how photos become vectors and how the gallery is searched.

A :class:`Recipe` names everything that changes a search result: the backbone, its weights,
image size and pooling (the embedding), the post-processing steps, the index backend, and the
same-item stage (local features, shortlist sizes, verifier). It is saved beside every index
(``recipe.json``), and notebook 06, ``embed``/``index``/``search``, the matcher and the explorer
all rank through it, so a figure notebook 06 reports is what the others serve. The defaults are
the measured best on categories no model here was trained on (``benchmarks/bench_retrieval.py``)
and on the same-item dev sets (``benchmarks/bench_same_item.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lfhelpers.errors import ConfigError
from lfhelpers.fsutil import atomic_write, sha256_file
from lfhelpers.paths import project_path
from lfhelpers.similarity.features.local import DEFAULT_MAX_SIDE, DEFAULT_N_FEATURES
from lfhelpers.similarity.features.registry import FINETUNED_NAMES, NOT_CNN

RECIPE_FILE = "recipe.json"


@dataclass(frozen=True)
class Recipe:
    """Everything that makes a search result, saved with the index.

    Parameters
    ----------
    backbone : str
        A name of :data:`lfhelpers.models.backbones.BACKBONES`, or ``finetuned:PATH``.
    weights : str
        ``auto`` | ``imagenet`` | ``none`` | a weights file.
    image_size : int
        Input side; 0: the backbone's own (Xception 299).
    pooling : {"gem", "avg", "max"}
    flip : bool
        Average each photo with its mirror image.
    postprocess : str
        Vector steps (``center+dba+aqe``): gallery-side ones fitted with the index, ``aqe`` per
        query.
    backend : str
        The nearest-neighbour backend (``exact``, ``auto``, ``ivf``, ``hnsw``, ...).
    same_item : bool
        Keep local features with the index and verify a shortlist geometrically.
    local_method, local_max_side, local_n_features
        The local features (:class:`~lfhelpers.similarity.features.local.LocalFeatures`).
    n_words : int
        Visual words; 0: chosen from the gallery's size
        (:func:`~lfhelpers.similarity.search.engine.vocabulary_size`).
    n_global, n_local, max_verify : int
        Candidates taken from the global and the visual-word shortlists, and verified at most
        (``benchmarks/bench_same_item.py``: 5 + 15, 20 verified, keep DVD recall@1 at 0.99
        among 2,300 photos for 1.9x the time of a global search).
    batch_size, seed : int
    engine, precision : str
        What runs the Xception trunk for photos whose activations are not stored yet
        (``keras`` float32, or ``openvino`` in ``float32``/``bfloat16``, as notebook 03 fills
        the store; see :class:`~lfhelpers.similarity.features.cnn.Embedder`).
    """

    backbone: str = "xception"
    weights: str = "auto"
    image_size: int = 0
    pooling: str = "gem"
    flip: bool = False
    postprocess: str = "center+dba+aqe"
    backend: str = "exact"
    same_item: bool = True
    local_method: str = "rootsift"
    local_max_side: int = DEFAULT_MAX_SIDE
    local_n_features: int = DEFAULT_N_FEATURES
    n_words: int = 0
    n_global: int = 5
    n_local: int = 15
    max_verify: int = 20
    batch_size: int = 32
    seed: int = 0
    engine: str = "keras"
    precision: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """A recipe from :meth:`to_dict` output (unknown keys are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"Unknown recipe setting(s) {unknown}; known: {sorted(names)}.")
        return cls(**data)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some settings changed (``None`` values are ignored)."""
        data = self.to_dict()
        data.update({k: v for k, v in changes.items() if v is not None})
        return Recipe.from_dict(data)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``recipe.json`` into ``folder``; returns its path."""
        path = Path(folder) / RECIPE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            json.dump(self.to_dict(), fh, indent=2)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Recipe:
        """The recipe saved in ``folder`` (:class:`ConfigError` when there is none)."""
        path = Path(folder) / RECIPE_FILE
        if not path.is_file():
            raise ConfigError(f"{folder} does not say how its index was made ({RECIPE_FILE}); "
                              "rebuild it with `python -m lfhelpers index`.")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def embedding_spec(self) -> dict[str, Any]:
        """The embedding part, resolved (weights file and its hash), as ``embed`` records it."""
        return embedding_spec(self.backbone, self.weights, self.image_size, self.pooling,
                              self.flip, self.batch_size, self.seed)

    def embedder(self, cache_dir: str | os.PathLike[str] | None = None,
                 progress: bool = False) -> Any:
        """A fitted :class:`~lfhelpers.similarity.features.cnn.Embedder` for this recipe."""
        return embedder_from_spec(self.embedding_spec(), cache_dir=cache_dir, progress=progress,
                                  engine=self.engine, precision=self.precision)

    def local_features(self, cache_dir: str | os.PathLike[str] | None = None) -> Any:
        """The :class:`~lfhelpers.similarity.features.local.LocalFeatures` of this recipe."""
        from lfhelpers.similarity.features.local import LocalFeatures

        return LocalFeatures(self.local_method, self.local_max_side, self.local_n_features,
                             cache_dir=cache_dir)


def recipe_for(name: str, classifier_model: str | os.PathLike[str] = "", **settings: object
               ) -> object:
    """The :class:`~lfhelpers.similarity.search.recipe.Recipe` that makes extractor ``name``'s
    vectors, for a search engine that serves what a notebook measured.

    Parameters
    ----------
    name : str
        A Keras backbone of :func:`feature_sets` or ``finetuned`` (``haralick`` has no
        recipe: it is not searched through the engine).
    classifier_model : path-like
        Notebook 03's model, for ``finetuned``.
    **settings
        Other :class:`Recipe` fields (``weights``, ``image_size``, ``pooling``, ``flip``,
        ``postprocess``, ``backend``, ``same_item``, ``seed``, ...); ``None`` values keep the
        recipe's default.

    Returns
    -------
    Recipe
    """
    key = name.lower()
    if key in NOT_CNN:
        raise ConfigError("haralick features are compared in the table but not searched "
                          "through the engine; choose a CNN extractor.")
    settings = {k: v for k, v in settings.items() if v is not None}
    if key in FINETUNED_NAMES:
        # as the notebook was given it: a relative path means the project folder (contract of
        # every notebook parameter), so the recorded recipe names no folder of this machine
        settings.update(backbone=f"finetuned:{os.fspath(classifier_model)}", pooling="avg",
                        image_size=0)
        settings.pop("weights", None)
    else:
        settings["backbone"] = key
    return Recipe().replace(**settings)


def embedding_spec(backbone: str = Recipe.backbone, weights: str = Recipe.weights,
                   image_size: int | None = None, pooling: str = Recipe.pooling,
                   flip: bool = Recipe.flip,
                   batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Everything that changes a vector, as recorded in ``embedding.json``.

    ``backbone``: a name of :data:`~lfhelpers.models.backbones.BACKBONES` or
    ``finetuned:PATH`` (notebook 03's ``.keras`` classifier; a relative ``PATH`` is relative to
    the project folder, like the notebooks' parameters).
    """
    from lfhelpers.models.backbones import backbone_spec, resolve_weights

    spec: dict[str, Any] = {"pooling": pooling, "flip": bool(flip), "postprocess": "none",
                            "normalize": True, "batch_size": int(batch_size), "seed": int(seed)}
    if str(backbone).lower().startswith(("finetuned:", "classifier:")):
        path = project_path(str(backbone).split(":", 1)[1])
        if not path.is_file():
            raise ConfigError(f"--backbone {backbone}: no model file at {path}.")
        spec.update(backbone="classifier", model_path=str(path.resolve()),
                    weights_sha256=sha256_file(path), pooling="avg")
        return spec
    w = resolve_weights(backbone, weights)
    size = int(image_size or backbone_spec(backbone).default_size)
    spec.update(backbone=str(backbone).lower(), weights=w, image_size=size,
                weights_sha256=sha256_file(w) if w not in (None, "imagenet") else w)
    return spec


def embedder_from_spec(spec: dict[str, Any], cache_dir: str | os.PathLike[str] | None = None,
                       progress: bool = False, engine: str = "keras",
                       precision: str = "float32") -> Any:
    """A fitted :class:`~lfhelpers.similarity.features.cnn.Embedder` for a recorded spec.

    Parameters
    ----------
    spec : dict
        From :func:`embedding_spec` (``embedding.json`` of ``embed``).
    cache_dir : path-like, optional
        The embedder's content-addressed vector cache.
    progress : bool
        Show a progress bar.
    engine, precision : str
        What runs the trunk for photos not in the trunk store (see :class:`Recipe`).

    Returns
    -------
    Embedder
    """
    from lfhelpers.models.backbones import CLASSIFIER, set_seed
    from lfhelpers.similarity.features.cnn import Embedder

    set_seed(int(spec.get("seed", 0)))  # random weights ("none") are the same in every process
    if spec["backbone"] == CLASSIFIER:
        return Embedder(CLASSIFIER, model_path=spec["model_path"], cache_dir=cache_dir,
                        batch_size=spec["batch_size"], progress=progress, engine=engine,
                        precision=precision).fit()
    return Embedder(spec["backbone"], weights=spec["weights"] or "none",
                    image_size=spec["image_size"], batch_size=spec["batch_size"],
                    pooling=spec["pooling"], flip=spec["flip"], progress=progress,
                    cache_dir=cache_dir, engine=engine, precision=precision).fit()
