"""The networks behind :class:`lfhelpers.similarity.features.cnn.Embedder`, and where to cut them.

An embedding network is cut in two where the workbook's trunk store begins (the input of Xception's
block 14): the *trunk* below, whose activations are computed once per photo and kept by
:mod:`lfhelpers.models.trunk`, and the *top* above (block 14 and the pooling, a tenth of the
network). ImageNet Xception and notebook 03's fine-tuned classifier share the same frozen trunk,
so the second reads the activations the first (or notebook 03) wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lfhelpers.errors import ConfigError
from lfhelpers.fsutil import sha256_file

#: Layers of notebook 03's classifier, in order, that :func:`classifier_split` cuts between.
CLASSIFIER_PARTS = ("xception_scale", "trunk", "top_blocks", "avg_pool")


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


def xception_split(model: Any) -> tuple[Any, Any] | None:
    """Cut a Keras Xception (no top) at the input of block 14.

    Returns
    -------
    (trunk, top) or None
        ``trunk``: the model's input to the activations entering block 14; ``top``: those
        activations to the model's output. ``None`` when the model has no block 14.
    """
    import keras

    first = next((lay for lay in model.layers if lay.name.startswith("block14_")), None)
    if first is None:
        return None
    cut = first.input
    return (keras.Model(model.inputs, cut, name="trunk"),
            keras.Model(cut, model.output, name="top"))


def classifier_split(model: Any, cut: Any) -> tuple[Any, Any] | None:
    """Cut notebook 03's classifier between its frozen trunk and its fine-tuned top blocks.

    Parameters
    ----------
    model : keras.Model
        The classifier (pixels 0-255 in): rescaling, ``trunk``, ``top_blocks``, ``avg_pool``,
        head, as :class:`lfhelpers.models.xception.XceptionClassifier` saves it.
    cut : keras.layers.Layer
        The embedding layer (:func:`pooled_layer`); only ``avg_pool`` can be reached from the
        trunk's activations.

    Returns
    -------
    (trunk, top) or None
        Pixels to trunk activations, and trunk activations to the pooled vector; ``None`` for a
        model of another shape.
    """
    import keras

    names = [lay.name for lay in model.layers]
    if cut.name != "avg_pool" or any(part not in names for part in CLASSIFIER_PARTS):
        return None
    pixels = keras.Input(model.input_shape[1:], name="pixels")
    x = model.get_layer("trunk")(model.get_layer("xception_scale")(pixels))
    trunk = keras.Model(pixels, x, name="classifier_trunk")
    acts = keras.Input(tuple(x.shape[1:]), name="trunk_activations")
    y = model.get_layer("avg_pool")(model.get_layer("top_blocks")(acts))
    return trunk, keras.Model(acts, y, name="classifier_top")


@dataclass
class ClassifierNet:
    """Notebook 03's classifier, loaded for embeddings (:func:`load_classifier`)."""

    model: Any  #: pixels 0-255 to the embedding layer's output
    image_size: int
    head_layers: list[Any]  #: the layers after the embedding (the category head)
    classes: list[str]
    ident: dict[str, Any]  #: what names its vectors (file digest, layer)
    trunk: Any = None  #: pixels to trunk activations (see :func:`classifier_split`)
    top: Any = None  #: trunk activations to the embedding


def load_classifier(model_path: str | os.PathLike[str], layer: str = "") -> ClassifierNet:
    """Load a ``.keras`` classifier of notebook 03 and cut it at its embedding layer.

    Parameters
    ----------
    model_path : path-like
        The model (its labels are read from ``<stem>.labels.json`` beside it when present).
    layer : str
        Embedding layer (default: the pooled layer, :func:`pooled_layer`).

    Returns
    -------
    ClassifierNet

    Raises
    ------
    ConfigError
        When the file is missing.
    """
    import keras

    path = Path(model_path) if model_path else None
    if path is None or not path.is_file():
        raise ConfigError(f"backbone='classifier' needs model_path pointing at the .keras "
                          f"file of notebook 03; got {model_path!r}.")
    model = keras.models.load_model(path, compile=False)
    # a model saved with flip test-time augmentation wraps the classifier: use the classifier
    inner = [lay for lay in model.layers if isinstance(lay, keras.Model)
             and "avg_pool" in [sub.name for sub in lay.layers]]
    if inner and "avg_pool" not in [lay.name for lay in model.layers]:
        model = inner[0]
    cut = pooled_layer(model, layer)
    position = [lay.name for lay in model.layers].index(cut.name)
    classes: list[str] = []
    labels_file = path.with_name(path.stem + ".labels.json")
    if labels_file.is_file():
        classes = [str(x) for x in json.loads(labels_file.read_text(encoding="utf-8"))["labels"]]
    trunk, top = classifier_split(model, cut) or (None, None)
    return ClassifierNet(model=keras.Model(model.inputs, cut.output, name="classifier_embedding"),
                         image_size=int(model.input_shape[1]),
                         head_layers=model.layers[position + 1:], classes=classes,
                         ident={"classifier": sha256_file(path), "layer": cut.name},
                         trunk=trunk, top=top)


class ClassifierCategories:
    """The classifier's categories from the vectors an embedder computed (a mixin of
    :class:`lfhelpers.similarity.features.cnn.Embedder`): the head runs on the pooled vectors,
    so a photo goes through the network once for both its embedding and its categories."""

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
