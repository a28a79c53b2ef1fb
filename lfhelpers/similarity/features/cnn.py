"""CNN embeddings of photos: one L2-normalised vector per image, cached on disk.

The CNN tutorials this follows take the pooled output of an ImageNet network (a 2048-number
vector for Inception v3) as an image's description, then search and cluster those vectors.
:class:`Embedder` does the same for any of these backbones:

* a Keras application by name (:data:`BACKBONES`: ``xception``, ``mobilenet`` (alpha 0.25, whose
  weights file is small enough for tests), ``mobilenet_v2``, ``inception_v3``,
  ``inception_resnet_v2``, ``resnet50``, ``resnet152_v2``, ``efficientnet_b0``, or any other
  ``keras.applications`` class name such as ``"DenseNet121"``), without its top, with global
  average pooling;
* ``"classifier"``: the fine-tuned Xception of notebook 03 (a ``.keras`` file, ``model_path``),
  cut at its pooled layer (``avg_pool``), so the vector is what the category head sees. The same
  pass gives the classifier's top-k categories (:meth:`Embedder.top_k`), without running the
  network again.

Images are decoded by :func:`lfhelpers.images.load_rgb` to a square of ``image_size`` pixels and
sent through the network in fixed-size batches; unreadable ones are skipped with a reason.

Each image's raw pooled vector is cached in the workbook's content-addressed store
(:class:`lfhelpers.store.ContentStore`) under ``<cache_dir>/embeddings``, by the SHA-256 of
the file's bytes, in a folder named after the model (backbone, weights file content, image
size, layer), so a rerun or another notebook with the same settings reads vectors instead of
computing them, and a changed file or a retrained model is never served a stale vector. For
Xception (ImageNet, or notebook 03's fine-tuned classifier) a missing vector is computed from
the photo's trunk activations in ``<cache_dir>/trunk`` (:mod:`lfhelpers.models.trunk`)
through block 14 and the pooling only, and a photo seen for the first time leaves its
activations there: the whole workbook runs the Xception trunk once per photo and size.

Weights (``weights``): see :func:`lfhelpers.models.backbones.resolve_weights`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from tqdm import tqdm

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import sha256_file
from lfhelpers.images import load_rgb
from lfhelpers.models.backbones import CLASSIFIER, backbone_spec, build_backbone, resolve_weights
from lfhelpers.models.trunk import (
    check_engine,
    openvino_runner,
    stored_activations,
    trunk_store,
)
from lfhelpers.similarity.features.base import Extraction, l2_normalize
from lfhelpers.similarity.features.network import (
    ClassifierCategories,
    load_classifier,
    xception_split,
)
from lfhelpers.similarity.features.pooling import POOLINGS, pool_maps
from lfhelpers.store import ContentStore

log = logging.getLogger(__name__)

#: Photos to compute in one call from which ``engine="openvino"`` converts the network.
OPENVINO_MIN_PHOTOS = 32
_CACHE_VERSION = 2  # 2: Xception vectors come from float16 trunk activations
#: Sub-folder of ``cache_dir`` with the vectors (the trunk activations are in ``trunk/``).
VECTOR_FOLDER = "embeddings"
#: Trunk activations per pass through the top of the network.
TOP_BATCH = 64


# --------------------------------------------------------------------------- images


@dataclass
class Embeddings(Extraction):
    """Result of :meth:`Embedder.extract`.

    Attributes
    ----------
    features : ndarray of shape (n_ok, dim)
        Rows of the images that could be read, in input order (L2-normalised unless asked
        otherwise).
    ok : ndarray of bool, shape (n,)
        Which inputs have a row in ``features``.
    errors : dict
        Input path -> reason, for each skipped image.
    seconds : float
        Wall-clock time.
    n_cached : int
        Rows read from the disk cache.
    n_from_trunk : int
        Rows computed from trunk activations already in the trunk store (the top of the
        network only).
    """

    n_from_trunk: int = 0


class Embedder(ClassifierCategories, TransformerMixin, BaseEstimator):
    """Image files to CNN embeddings, as a scikit-learn transformer.

    Parameters
    ----------
    backbone : str
        A name of :data:`BACKBONES`, a ``keras.applications`` class name, or ``"classifier"``
        for the fine-tuned model at ``model_path``.
    weights : str
        ``"auto"`` (default), ``"imagenet"``, ``"none"`` or a weights file; see
        :func:`resolve_weights`. Ignored for ``"classifier"``.
    image_size : int, optional
        Input side; default: the backbone's ImageNet size (the classifier's own size for
        ``"classifier"``).
    model_path : path-like
        The ``.keras`` classifier (``backbone="classifier"``). It must take RGB pixels 0-255.
    layer : str
        Classifier layer to cut at (default: its pooled layer, see :func:`pooled_layer`).
    batch_size : int
        Images per forward pass.
    cache_dir : path-like, optional
        The cache root (``data/cache``): vectors in its ``embeddings/``, Xception trunk
        activations in its ``trunk/``; ``None`` disables both. Not used with
        ``weights="none"``.
    normalize : bool
        L2-normalise the vectors (cosine similarity becomes a dot product).
    pooling : {"avg", "gem", "max"}
        How the last feature map becomes a vector (ImageNet backbones): global average
        pooling (the Keras default), generalised-mean pooling with exponent ``gem_p``
        (:func:`lfhelpers.similarity.features.pooling.gem_pool`) or max pooling. The fine-tuned
        classifier always uses its own pooled layer.
    gem_p : float
        GeM exponent (1 is average pooling, large values approach max pooling).
    flip : bool
        Average each photo's vector with that of its mirror image (two passes per photo).
    progress : bool
        Show a tqdm progress bar.
    engine : {"keras", "openvino"}
        What runs the network on pixels (with a trunk store: the trunk, for photos whose
        activations are not stored yet; the rest of the network is Keras): ``"openvino"`` is
        the engine notebook 03 fills the store with, converted the first time a call has at
        least :data:`OPENVINO_MIN_PHOTOS` photos to compute (fewer, such as one lost photo's
        search, stay on Keras: the conversion takes seconds). Without the ``openvino``
        package, Keras.
    precision : {"float32", "bfloat16"}
        The OpenVINO trunk's arithmetic (``"bfloat16"`` where the CPU has it; see
        :func:`lfhelpers.models.trunk.openvino_runner`). The store keeps float16 activations
        whichever engine made them, and a vector is named by the photo and the network, not
        by the engine: vectors from either differ by rounding only.

    Attributes
    ----------
    model_ : keras.Model
        Pixels (after ``preprocess_``) to pooled features.
    preprocess_ : callable
        Pixels 0-255 to the network's input.
    image_size_ : int
        Input side used.
    dim_ : int
        Length of a vector.
    weights_ : str or None
        Resolved weights (``"imagenet"``, a file, ``None``; the model file for a classifier).
    cache_key_ : str or None
        Name of this model's folder of vectors (``None`` when not cached).
    vector_store_, trunk_store_ : ContentStore or None
        Where vectors and trunk activations are kept (``None``: not kept).
    trunk_, top_ : keras.Model or None
        The network cut at the trunk store's layer (``None`` for networks without one).
    classes_ : list of str
        The classifier's labels (``backbone="classifier"`` only; else empty).
    """

    def __init__(
        self,
        backbone: str = "xception",
        weights: str = "auto",
        image_size: int | None = None,
        model_path: str | os.PathLike[str] = "",
        layer: str = "",
        batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        normalize: bool = True,
        progress: bool = True,
        pooling: str = "avg",
        gem_p: float = 3.0,
        flip: bool = False,
        engine: str = "keras",
        precision: str = "float32",
    ):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.model_path = model_path
        self.layer = layer
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.normalize = normalize
        self.pooling = pooling
        self.gem_p = gem_p
        self.flip = flip
        self.progress = progress
        self.engine = engine
        self.precision = precision

    # -- building --------------------------------------------------------------------------

    def fit(self, X: Any = None, y: Any = None) -> Embedder:
        """Build (or load) the network; nothing is learned from ``X``. Returns ``self``."""
        import keras

        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        check_engine(self.engine, self.precision)
        self._run_ov = None  # the OpenVINO network, converted when a call first needs it
        self._many = False
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size!r}.")
        self.classes_: list[str] = []
        self.head_layers_: list[Any] = []
        self.trunk_ = self.top_ = None
        if str(self.backbone).lower() == CLASSIFIER:
            self._fit_classifier()
        else:
            self.weights_ = resolve_weights(self.backbone, self.weights)
            self.model_, self.preprocess_, self.image_size_ = build_backbone(
                self.backbone, self.image_size, self.weights_)
            ident = {"backbone": backbone_spec(self.backbone).keras_name,
                     "kwargs": backbone_spec(self.backbone).kwargs,
                     "weights": self.weights_ if self.weights_ in (None, "imagenet")
                     else sha256_file(self.weights_)}
            if self.pooling != "avg":
                # the feature map under the backbone's global average pooling layer
                self.model_ = keras.Model(self.model_.inputs, self.model_.layers[-2].output)
            if self.weights_ is not None:
                self.trunk_, self.top_ = xception_split(self.model_) or (None, None)
            self._set_cache_key(ident, cacheable=self.weights_ is not None)
        self.dim_ = int(self.model_.output_shape[-1])
        return self

    def _fit_classifier(self) -> None:
        net = load_classifier(self.model_path, self.layer)
        self.model_, self.head_layers_, self.classes_ = net.model, net.head_layers, net.classes
        self.trunk_, self.top_ = net.trunk, net.top
        self.preprocess_ = lambda x: x
        self.image_size_ = net.image_size
        if self.image_size and int(self.image_size) != self.image_size_:
            log.warning("The classifier takes %d px images; image_size=%s ignored.",
                        self.image_size_, self.image_size)
        self.weights_ = str(Path(self.model_path).resolve())
        self._set_cache_key(net.ident, True)

    def _set_cache_key(self, ident: dict, cacheable: bool) -> None:
        import keras

        cacheable = bool(cacheable and self.cache_dir)
        self.trunk_store_ = None
        if cacheable and self.trunk_ is not None and not self.flip:
            self.trunk_store_ = trunk_store(self.cache_dir, self.trunk_, int(self.image_size_))
        spec = {**ident, "image_size": int(self.image_size_), "keras": keras.__version__,
                "version": _CACHE_VERSION, **self.vector_spec()}
        self.cache_spec_ = spec
        self.vector_store_ = (ContentStore.under(Path(self.cache_dir) / VECTOR_FOLDER, spec)
                              if cacheable else None)
        self.cache_key_ = self.vector_store_.key if self.vector_store_ is not None else None
        if self.cache_dir and not cacheable:
            log.info("Embedding cache not used: random weights differ between runs.")

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            self.fit()

    # -- scikit-learn API ------------------------------------------------------------------

    def transform(self, X: Sequence[str | os.PathLike[str]]) -> np.ndarray:
        """One embedding per input image (the network is built on first use if needed).

        Raises
        ------
        DataError
            When an image cannot be read (a transformer must return a row per input); use
            :meth:`extract`, which skips such images and says which ones.
        """
        result = self.extract(X)
        if result.errors:
            first, reason = next(iter(result.errors.items()))
            raise DataError(f"{len(result.errors)} of {len(result.ok)} images could not be read "
                            f"(first: {first}: {reason}). Clean the data set first (notebook "
                            "01), or use Embedder.extract(), which skips them.")
        return result.features

    def extract(self, X: Sequence[str | os.PathLike[str]],
                normalize: bool | None = None) -> Embeddings:
        """Embeddings of the readable images; unreadable ones are skipped with a logged reason.

        A photo's vector comes from the vector cache, else from its trunk activations in the
        trunk store (through the top of the network only), else from its pixels (and then its
        trunk activations are kept for next time).

        Parameters
        ----------
        X : sequence of path-like
            Image files.
        normalize : bool, optional
            Override the ``normalize`` parameter (``False`` gives the raw pooled vectors, as
            :meth:`top_k` needs).

        Returns
        -------
        Embeddings
        """
        self._check_fitted()
        files = [os.fspath(x) for x in X]
        start = time.perf_counter()
        rows: list[np.ndarray | None] = [None] * len(files)
        digests: list[str] = [""] * len(files)
        errors: dict[str, str] = {}
        todo: list[int] = []
        bar = tqdm(total=len(files), desc=f"embeddings ({self._name()})", unit="img",
                   disable=not self.progress or not files)
        for i, path in enumerate(files):
            try:
                digests[i] = sha256_file(path)
            except OSError as exc:
                errors[path] = f"{type(exc).__name__}: {exc}"
                continue
            if self.vector_store_ is not None:
                rows[i] = self.vector_store_.get(digests[i])
            if rows[i] is None:
                todo.append(i)
        n_cached = len(files) - len(todo) - len(errors)
        bar.update(len(files) - len(todo))
        self._lone = len(files) == 1  # a lone photo (a query) is not padded to a full batch
        self._many = len(todo) >= OPENVINO_MIN_PHOTOS  # a few queries: Keras, no conversion
        n_from_trunk = 0
        if self.trunk_store_ is not None:
            acts, bad, n_from_trunk = stored_activations(
                [files[i] for i in todo], self.trunk_store_, self._run_trunk,
                int(self.image_size_), int(self.batch_size), [digests[i] for i in todo])
            errors.update(bad)
            done = [(i, a) for i, a in zip(todo, acts, strict=True) if a is not None]
            for lo in range(0, len(done), TOP_BATCH):
                chunk = done[lo:lo + TOP_BATCH]
                out = self._run_top(np.stack([a for _, a in chunk]))
                self._keep(chunk, out, rows, digests)
                bar.update(len(chunk))
        else:
            self._embed_pixels(files, todo, rows, digests, errors, bar)
        bar.close()
        for path, reason in errors.items():
            log.warning("Skipped %s: %s", path, reason)
        ok = np.array([r is not None for r in rows], dtype=bool)
        kept = [r for r in rows if r is not None]
        features = (np.vstack(kept).astype(np.float32) if kept
                    else np.empty((0, self.dim_), np.float32))
        if self.normalize if normalize is None else normalize:
            features = l2_normalize(features)
        return Embeddings(features=features, ok=ok, errors=errors,
                          seconds=time.perf_counter() - start, n_cached=n_cached,
                          n_from_trunk=n_from_trunk)

    def _embed_pixels(self, files: list[str], todo: list[int], rows: list[np.ndarray | None],
                      digests: list[str], errors: dict[str, str], bar: Any) -> None:
        """The whole network on the decoded photos, in fixed-size batches."""
        pending: list[tuple[int, np.ndarray]] = []
        for i in todo:
            try:
                pending.append((i, load_rgb(files[i], int(self.image_size_))))
            except Exception as exc:  # noqa: BLE001 - any unreadable image is skipped
                errors[files[i]] = f"{type(exc).__name__}: {exc}"
                bar.update()
            if len(pending) == int(self.batch_size) or (pending and i == todo[-1]):
                images = self._padded(np.stack([img for _, img in pending]), int(self.batch_size))
                out = self._forward(images)
                if self.flip:
                    out = (out + self._forward(images[:, :, ::-1])) / 2
                self._keep(pending, out, rows, digests)
                bar.update(len(pending))
                pending = []

    def _keep(self, done: Sequence[tuple[int, Any]], out: np.ndarray,
              rows: list[np.ndarray | None], digests: list[str]) -> None:
        for (i, _), row in zip(done, out, strict=False):
            rows[i] = row
            if self.vector_store_ is not None:
                self.vector_store_.put(digests[i], row)

    def _padded(self, images: np.ndarray, batch: int) -> np.ndarray:
        """Pad a batch to ``batch`` rows so the compiled graph is reused (not a lone photo:
        padding it to a full batch cost 20x the time)."""
        x = np.asarray(images, np.float32)
        batch = 1 if getattr(self, "_lone", False) else batch
        if len(x) < batch:
            x = np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), np.float32)])
        return x

    def _openvino(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The network this embedder runs on pixels (the trunk when activations are stored,
        else the whole model) on OpenVINO, when ``engine`` says so and this call has enough
        photos to repay the conversion (done once; ``None``: Keras)."""
        if self.engine != "openvino" or not self._many:
            return None
        if self._run_ov is None:
            model = self.trunk_ if self.trunk_store_ is not None else self.model_
            started = openvino_runner(model, int(self.image_size_), self.precision)
            self._run_ov = started[0] if started else False  # False: Keras from now on
        return self._run_ov or None

    def _run_trunk(self, pixels: np.ndarray) -> np.ndarray:
        """Trunk activations of a batch of pixels (0-255), on ``engine``."""
        x = self.preprocess_(np.array(self._padded(pixels, int(self.batch_size)), copy=True))
        run = self._openvino()
        if run is not None:
            return run(x)[:len(pixels)]
        return np.asarray(self.trunk_.predict_on_batch(x), np.float32)[:len(pixels)]

    def _run_top(self, activations: np.ndarray) -> np.ndarray:
        """Vectors of a batch of trunk activations (the top of the network and the pooling)."""
        out = self.top_.predict_on_batch(self._padded(activations, TOP_BATCH))
        out = np.asarray(out, np.float32)[:len(activations)]
        return pool_maps(out, self.pooling, self.gem_p) if out.ndim == 4 else out

    def _forward(self, images: np.ndarray) -> np.ndarray:
        # a copy: Keras' preprocess_input works in place on NumPy arrays
        x = self.preprocess_(np.array(images, dtype=np.float32, copy=True))
        run = self._openvino()
        out = run(x) if run is not None else np.asarray(self.model_.predict_on_batch(x),
                                                        np.float32)
        if out.ndim == 4:
            out = pool_maps(out, self.pooling, self.gem_p)
        return out

    def vector_spec(self) -> dict[str, Any]:
        """What besides the network changes a vector: pooling, GeM exponent, flip averaging."""
        classifier = str(self.backbone).lower() == CLASSIFIER
        pooling = "avg" if classifier else self.pooling
        spec: dict[str, Any] = {"pooling": pooling, "flip": bool(self.flip)}
        if pooling == "gem":
            spec["gem_p"] = float(self.gem_p)
        return spec

    def _name(self) -> str:
        if str(self.backbone).lower() == CLASSIFIER:
            return f"classifier {Path(self.model_path).name}"
        return f"{self.backbone} {self.image_size_}px"
