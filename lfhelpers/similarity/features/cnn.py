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

Images are decoded with Pillow (EXIF orientation applied, transparency over white, greyscale to
RGB), resized to a square of ``image_size`` pixels and sent through the network in fixed-size
batches with a progress bar. Unreadable images are skipped with a logged reason.

Each image's raw pooled vector is cached under ``cache_dir`` by the SHA-256 of the file's
bytes, in a sub-folder named after the model (backbone, weights file content, image size,
layer), so a rerun or another notebook with the same settings reads vectors instead of
computing them, and a changed file or a retrained model is never served a stale vector.

Weights (``weights``): ``"imagenet"`` (the Keras download), a weights file, ``"none"`` (random
initialisation, seeded by Keras' global seed: for tests), or ``""``/``"auto"``: the backbone's
environment variable (``LF_XCEPTION_WEIGHTS``, ``LF_MOBILENET_WEIGHTS``), else a local file
(``models/weights/<file>``, or ``$LF_DATA_MIRROR/../weights/<file>``), else ``"imagenet"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from tqdm import tqdm

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write, sha256_file
from lfhelpers.images import load_rgb
from lfhelpers.models.backbones import CLASSIFIER, backbone_spec, build_backbone, resolve_weights
from lfhelpers.similarity.features.base import Extraction, l2_normalize
from lfhelpers.similarity.features.pooling import POOLINGS, pool_maps

log = logging.getLogger(__name__)

_CACHE_VERSION = 1


def pooled_layer(model: Any, layer: str = "") -> Any:
    """The layer of a classifier whose output is the image embedding.

    Parameters
    ----------
    model : keras.Model
        A classifier such as notebook 03's (pixels in, class probabilities out).
    layer : str
        Layer name; default: ``avg_pool`` when present, else the last global pooling layer,
        else the last layer with a flat output before the final one.

    Returns
    -------
    keras.layers.Layer
    """
    import keras

    if layer:
        try:
            return model.get_layer(layer)
        except ValueError as exc:
            raise ConfigError(f"The model has no layer {layer!r}; its layers are "
                              f"{[lay.name for lay in model.layers]}.") from exc
    names = [lay.name for lay in model.layers]
    if "avg_pool" in names:
        return model.get_layer("avg_pool")
    pools = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)
    for lay in reversed(model.layers):
        if isinstance(lay, pools):
            return lay
    for lay in reversed(model.layers[:-1]):
        try:
            if len(lay.output.shape) == 2:
                return lay
        except (AttributeError, ValueError):  # a layer used more than once has no one output
            continue
    raise ConfigError("Could not find a pooled layer in the model; pass layer=<name>.")


# --------------------------------------------------------------------------- images


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
    """


class Embedder(TransformerMixin, BaseEstimator):
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
        Disk cache folder; ``None`` disables it. Not used with ``weights="none"``.
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
        Name of this model's cache sub-folder (``None`` when not cached).
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

    # -- building --------------------------------------------------------------------------

    def fit(self, X: Any = None, y: Any = None) -> Embedder:
        """Build (or load) the network; nothing is learned from ``X``. Returns ``self``."""
        import keras

        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size!r}.")
        self.classes_: list[str] = []
        self.head_layers_: list[Any] = []
        if str(self.backbone).lower() == CLASSIFIER:
            self._fit_classifier(keras)
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
            self._set_cache_key(ident, cacheable=self.weights_ is not None)
        self.dim_ = int(self.model_.output_shape[-1])
        return self

    def _fit_classifier(self, keras: Any) -> None:
        path = Path(self.model_path) if self.model_path else None
        if path is None or not path.is_file():
            raise ConfigError(f"backbone='classifier' needs model_path pointing at the .keras "
                              f"file of notebook 03; got {self.model_path!r}.")
        model = keras.models.load_model(path, compile=False)
        # a model saved with flip test-time augmentation wraps the classifier: use the classifier
        inner = [lay for lay in model.layers if isinstance(lay, keras.Model)
                 and "avg_pool" in [sub.name for sub in lay.layers]]
        if inner and "avg_pool" not in [lay.name for lay in model.layers]:
            model = inner[0]
        cut = pooled_layer(model, self.layer)
        self.model_ = keras.Model(model.inputs, cut.output, name="classifier_embedding")
        self.preprocess_ = lambda x: x
        self.image_size_ = int(model.input_shape[1])
        if self.image_size and int(self.image_size) != self.image_size_:
            log.warning("The classifier takes %d px images; image_size=%s ignored.",
                        self.image_size_, self.image_size)
        position = [lay.name for lay in model.layers].index(cut.name)
        self.head_layers_ = model.layers[position + 1:]
        labels_file = path.with_name(path.stem + ".labels.json")
        if labels_file.is_file():
            self.classes_ = [str(x) for x in
                             json.loads(labels_file.read_text(encoding="utf-8"))["labels"]]
        self.weights_ = str(path.resolve())
        self._set_cache_key({"classifier": sha256_file(path), "layer": cut.name}, True)

    def _set_cache_key(self, ident: dict, cacheable: bool) -> None:
        import keras

        spec = {**ident, "image_size": int(self.image_size_), "keras": keras.__version__,
                "version": _CACHE_VERSION, **self.vector_spec()}
        self.cache_spec_ = spec
        self.cache_key_ = (hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
                           .hexdigest()[:16] if cacheable and self.cache_dir else None)
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
        folder = None
        if self.cache_key_ is not None:
            folder = Path(self.cache_dir) / self.cache_key_
            spec_file = folder / "model.json"
            if not spec_file.exists():
                with atomic_write(spec_file) as fh:
                    json.dump(self.cache_spec_, fh, indent=2)
        rows: list[np.ndarray | None] = [None] * len(files)
        errors: dict[str, str] = {}
        pending: list[tuple[int, np.ndarray, Path | None]] = []
        n_cached = 0
        size, batch = int(self.image_size_), int(self.batch_size)
        bar = tqdm(total=len(files), desc=f"embeddings ({self._name()})", unit="img",
                   disable=not self.progress or not files)
        for i, path in enumerate(files):
            try:
                data = Path(path).read_bytes()
                entry = None
                if folder is not None:
                    key = hashlib.sha256(data).hexdigest()
                    entry = folder / key[:2] / f"{key}.npy"
                    if entry.exists():
                        try:
                            rows[i] = np.load(entry)
                            n_cached += 1
                            bar.update()
                            continue
                        except (OSError, ValueError) as exc:
                            log.warning("Ignoring damaged cache entry %s (%s)", entry, exc)
                pending.append((i, load_rgb(data, size), entry))
            except Exception as exc:  # noqa: BLE001 - any unreadable image is skipped
                errors[path] = f"{type(exc).__name__}: {exc}"
                log.warning("Skipped %s: %s", path, errors[path])
                bar.update()
                continue
            if len(pending) == batch:
                self._run(pending, rows, batch)
                bar.update(len(pending))
                pending = []
        if pending:
            # a lone photo (a query searched by itself) goes through alone: padding it to a
            # full batch cost 20x the time; bulk calls keep the fixed batch shape
            self._run(pending, rows, 1 if len(files) == 1 else batch)
            bar.update(len(pending))
        bar.close()
        ok = np.array([r is not None for r in rows], dtype=bool)
        kept = [r for r in rows if r is not None]
        features = (np.vstack(kept).astype(np.float32) if kept
                    else np.empty((0, self.dim_), np.float32))
        if self.normalize if normalize is None else normalize:
            features = l2_normalize(features)
        return Embeddings(features=features, ok=ok, errors=errors,
                          seconds=time.perf_counter() - start, n_cached=n_cached)

    def _run(self, pending: list[tuple[int, np.ndarray, Path | None]],
             rows: list[np.ndarray | None], batch: int) -> None:
        """Embed one batch (padded to ``batch`` so the compiled graph is reused)."""
        images = np.stack([img for _, img, _ in pending]).astype(np.float32)
        if len(images) < batch:
            pad = np.zeros((batch - len(images), *images.shape[1:]), np.float32)
            images = np.concatenate([images, pad])
        out = self._forward(images)
        if self.flip:
            out = (out + self._forward(images[:, :, ::-1])) / 2
        for (i, _, entry), row in zip(pending, out, strict=False):
            rows[i] = row
            if entry is not None:
                with atomic_write(entry, "wb") as fh:
                    np.save(fh, row)

    def _forward(self, images: np.ndarray) -> np.ndarray:
        # a copy: Keras' preprocess_input works in place on NumPy arrays
        x = np.array(images, dtype=np.float32, copy=True)
        out = np.asarray(self.model_.predict_on_batch(self.preprocess_(x)), np.float32)
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

    # -- the classifier's categories ---------------------------------------------------------

    def predict_proba(self, raw_features: np.ndarray) -> np.ndarray:
        """Class probabilities from raw (un-normalised) pooled features of a classifier.

        Runs only the layers after the pooled one (dropout is inactive), so the images do not
        go through the network a second time.

        Parameters
        ----------
        raw_features : ndarray of shape (n, dim)
            From ``extract(files, normalize=False)``.

        Returns
        -------
        ndarray of shape (n, n_classes)
        """
        self._check_fitted()
        if not self.head_layers_:
            raise ConfigError("predict_proba needs backbone='classifier' (a fine-tuned model "
                              "with a category head).")
        x = np.asarray(raw_features, np.float32)
        for lay in self.head_layers_:
            x = lay(x, training=False)
        return np.asarray(x, dtype=np.float32)

    def top_k(self, files: Sequence[str | os.PathLike[str]],
              k: int = 3) -> dict[str, list[tuple[str, float]]]:
        """The classifier's ``k`` most probable categories of each readable file.

        Parameters
        ----------
        files : sequence of path-like
            Images (embedded once; cached vectors are reused).
        k : int
            Categories per image.

        Returns
        -------
        dict
            ``{path: [(label, probability), ...]}``, most probable first.
        """
        files = [os.fspath(f) for f in files]
        result = self.extract(files, normalize=False)
        proba = self.predict_proba(result.features)
        labels = self.classes_ or [str(i) for i in range(proba.shape[1])]
        kept = [f for f, ok in zip(files, result.ok, strict=True) if ok]
        table = {}
        for path, p in zip(kept, proba, strict=True):
            order = np.argsort(-p, kind="stable")[:k]
            table[path] = [(labels[j], float(p[j])) for j in order]
        return table
