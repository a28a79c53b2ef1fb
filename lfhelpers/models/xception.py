"""Xception fine-tuning for item categories: top-1 and top-3 recommendations.

The model is ImageNet Xception without its top, then global average pooling, dropout and a
softmax layer (the tutorial's head). Training has two phases, as in the Keras "Transfer learning
& fine-tuning" guide:

1. the backbone is frozen and only the head is trained (Adam, ``learning_rate``);
2. the top ``unfreeze_blocks`` Xception blocks are unfrozen and trained together with the head at
   a low learning rate (``fine_tune_learning_rate``); BatchNorm layers stay frozen and in
   inference mode.

The part of the backbone below the unfrozen blocks (the *trunk*) never changes, so its output
for an image is computed once and kept in a :class:`FeatureCache` (float16, in memory). Phase 1
then trains on pooled features and costs next to nothing, and phase 2 trains the top blocks on
the cached trunk activations (``cache_trunk=True``, the CPU setting) instead of running every
image through the whole network each epoch. ``cache_trunk=False`` (a GPU setting) runs phase 2 on
the images themselves, with fresh online augmentation every epoch.

Weights (``weights`` or the ``LF_XCEPTION_WEIGHTS`` environment variable): ``"imagenet"`` (the
Keras download, cached in ``~/.keras/models``), the path of a weights file, or ``"none"``
(random initialisation, for tests). See :func:`resolve_weights`.

The saved model (``.keras``) takes raw RGB pixels (0-255) at ``image_size`` and outputs class
probabilities; its label list is saved next to it as ``<stem>.labels.json``. ``python -m
lfhelpers predict --model PATH IMAGE...`` (:func:`predict_main`) prints the top 3 per image.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageOps
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
from tqdm import tqdm

from lfhelpers.errors import ConfigError, DataError, LFError, NetworkUnavailableError
from lfhelpers.fsutil import write_json

log = logging.getLogger(__name__)

#: Environment variable that chooses the backbone weights when ``weights`` is not given.
WEIGHTS_ENV = "LF_XCEPTION_WEIGHTS"
#: Where the project keeps a local ImageNet weights file (relative to the project folder).
DEFAULT_WEIGHTS_FILE = Path("models/weights/xception_imagenet_notop.weights.h5")
#: Smallest input side Xception accepts.
MIN_IMAGE_SIZE = 71
#: Fixed, deterministic views of an image (used by the augmentation-leak demonstration).
FIXED_VIEWS = ("orig", "fliplr", "flipud", "rot90", "rot180", "rot270")
#: Xception blocks that may be unfrozen: 14 (exit flow) down to 5 (middle flow).
MAX_UNFREEZE_BLOCKS = 10
LABELS_SUFFIX = ".labels.json"


# --------------------------------------------------------------------------- set-up


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and Keras, and make TensorFlow ops deterministic.

    Parameters
    ----------
    seed : int
        The run's seed.
    deterministic : bool
        Also call :func:`tf.config.experimental.enable_op_determinism` (same seed, same
        numbers on one machine; some ops get slower).
    """
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def resolve_weights(weights: str | os.PathLike[str] | None = None) -> str | None:
    """Turn the ``weights`` parameter into what :func:`keras.applications.Xception` takes.

    Parameters
    ----------
    weights : str or path-like, optional
        ``"imagenet"``, ``"none"``, or a weights file (``.h5`` / ``.weights.h5``). Empty or
        ``None`` means: the ``LF_XCEPTION_WEIGHTS`` environment variable; when that is unset, the
        project's local file ``models/weights/xception_imagenet_notop.weights.h5`` if it exists
        (in the working folder or the project folder), otherwise ``"imagenet"``.

    Returns
    -------
    str or None
        ``"imagenet"``, an absolute file path, or ``None`` (random initialisation).

    Raises
    ------
    ConfigError
        When a weights file is named but does not exist.
    """
    value = "" if weights is None else os.fspath(weights).strip()
    if not value:
        value = os.environ.get(WEIGHTS_ENV, "").strip()
    if not value:
        for base in (Path.cwd(), _project_root()):
            if (base / DEFAULT_WEIGHTS_FILE).is_file():
                return str((base / DEFAULT_WEIGHTS_FILE).resolve())
        return "imagenet"
    if value.lower() == "none":
        return None
    if value.lower() == "imagenet":
        return "imagenet"
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"Xception weights file {path} does not exist. Set weights (or {WEIGHTS_ENV}) to "
            "'imagenet', 'none' or an existing .weights.h5 file; on a machine without internet, "
            "write the ImageNet file once with the project's xception_imagenet_weights.py tool."
        )
    return str(path.resolve())


def build_backbone(image_size: int, weights: str | None) -> keras.Model:
    """Xception without its top, for square RGB inputs of side ``image_size``.

    Parameters
    ----------
    image_size : int
        Input side in pixels (at least 71).
    weights : str or None
        As returned by :func:`resolve_weights`.

    Returns
    -------
    keras.Model
        Input: images scaled to [-1, 1]; output: the last feature map.

    Raises
    ------
    ConfigError
        When ``image_size`` is below 71.
    NetworkUnavailableError
        When the ImageNet weights cannot be downloaded.
    """
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size {image_size} is too small: Xception needs at least "
                          f"{MIN_IMAGE_SIZE} px.")
    shape = (int(image_size), int(image_size), 3)
    if weights == "imagenet":
        try:
            return keras.applications.Xception(include_top=False, weights="imagenet",
                                               input_shape=shape)
        except Exception as exc:  # noqa: BLE001 - any download failure gets the same advice
            raise NetworkUnavailableError(
                f"Could not get the ImageNet Xception weights ({type(exc).__name__}: {exc}). "
                f"Connect to the internet once (Keras caches the file), or set {WEIGHTS_ENV} "
                "(or the weights parameter) to a local .weights.h5 file, or to 'none' for a "
                "random initialisation."
            ) from exc
    model = keras.applications.Xception(include_top=False, weights=None, input_shape=shape)
    if weights is not None:
        model.load_weights(weights)
    return model


def split_backbone(
    backbone: keras.Model, unfreeze_blocks: int
) -> tuple[keras.Model, keras.Model | None]:
    """Cut Xception into the frozen trunk and the top blocks that phase 2 trains.

    Parameters
    ----------
    backbone : keras.Model
        From :func:`build_backbone`.
    unfreeze_blocks : int
        How many of the last Xception blocks to put on top (0-10); block 14 is the last.

    Returns
    -------
    trunk : keras.Model
        Backbone input to the input of the first unfrozen block.
    top : keras.Model or None
        From there to the backbone output (``None`` when ``unfreeze_blocks`` is 0). Its layers
        are those of ``backbone`` (shared, not copies).
    """
    k = int(unfreeze_blocks)
    if not 0 <= k <= MAX_UNFREEZE_BLOCKS:
        raise ConfigError(f"unfreeze_blocks must be between 0 and {MAX_UNFREEZE_BLOCKS}, "
                          f"not {unfreeze_blocks}.")
    if k == 0:
        return keras.Model(backbone.input, backbone.output, name="trunk"), None
    first = f"block{15 - k}_"
    layer = next(lay for lay in backbone.layers if lay.name.startswith(first))
    cut = layer.input
    trunk = keras.Model(backbone.input, cut, name="trunk")
    top = keras.Model(cut, backbone.output, name="top_blocks")
    return trunk, top


# --------------------------------------------------------------------------- images


def resize_image(img: tf.Tensor, image_size: int) -> tf.Tensor:
    """Resize an ``(h, w, 3)`` image to ``image_size`` square pixels, as in training.

    Bilinear; with an anti-aliasing filter only when the image is more than twice the target
    size (large photos), where plain bilinear sampling would alias and the filter is worth its
    cost.

    Parameters
    ----------
    img : tf.Tensor
        Pixels in [0, 255], any numeric dtype.
    image_size : int
        Output side.

    Returns
    -------
    tf.Tensor
        ``(image_size, image_size, 3)`` float32 in [0, 255].
    """
    img = tf.cast(img, tf.float32)
    size = (int(image_size), int(image_size))

    def filtered() -> tf.Tensor:
        return tf.image.resize(img, size, antialias=True)

    def plain() -> tf.Tensor:
        return tf.image.resize(img, size)

    large = tf.reduce_max(tf.shape(img)[:2]) > 2 * int(image_size)
    return tf.clip_by_value(tf.cond(large, filtered, plain), 0.0, 255.0)


def decode_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read, decode (JPEG, PNG, GIF, BMP, WebP) and resize one image file inside ``tf.data``.

    Parameters
    ----------
    path : tf.Tensor
        Scalar string tensor.
    image_size : int
        Output side.

    Returns
    -------
    tf.Tensor
        ``(image_size, image_size, 3)`` float32 pixels in [0, 255].
    """
    raw = tf.io.read_file(path)
    img = tf.io.decode_image(raw, channels=3, expand_animations=False)
    return resize_image(img, image_size)


def load_image(path: str | os.PathLike[str], image_size: int) -> np.ndarray:
    """Load one image file for prediction: EXIF orientation, RGB, resized like in training.

    Parameters
    ----------
    path : path-like
        Any image Pillow can read.
    image_size : int
        Output side.

    Returns
    -------
    numpy.ndarray
        ``(image_size, image_size, 3)`` float32 pixels in [0, 255].

    Raises
    ------
    DataError
        When the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                canvas = Image.new("RGB", rgba.size, (255, 255, 255))
                canvas.paste(rgba, mask=rgba.getchannel("A"))
                im = canvas
            elif im.mode == "I;16" or im.mode.startswith("I"):
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file.") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc}).") from exc
    return resize_image(tf.convert_to_tensor(arr), image_size).numpy()


def _view_op(view: str):
    """Return a function image -> image for a fixed view name."""
    ops = {
        "orig": tf.identity,
        "fliplr": tf.image.flip_left_right,
        "flipud": tf.image.flip_up_down,
        "rot90": functools.partial(tf.image.rot90, k=1),
        "rot180": functools.partial(tf.image.rot90, k=2),
        "rot270": functools.partial(tf.image.rot90, k=3),
    }
    if view not in ops:
        raise ConfigError(f"Unknown image view {view!r}: use one of {FIXED_VIEWS} or 'aug<k>'.")
    return ops[view]


def make_dataset(
    files: Sequence[str],
    labels: np.ndarray | None = None,
    image_size: int = 299,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    augment: keras.Model | None = None,
    cache: bool | str = True,
) -> tf.data.Dataset:
    """The ``tf.data`` input pipeline: decode, resize, cache, shuffle, batch, augment, prefetch.

    Parameters
    ----------
    files : sequence of str
        Image paths.
    labels : numpy.ndarray, optional
        One-hot labels ``(n, classes)``; the dataset then yields ``(images, labels)``.
    image_size : int
        Output side in pixels.
    batch_size : int
        Batch size.
    shuffle : bool
        Shuffle every epoch (seeded).
    seed : int
        Shuffle seed.
    augment : keras.Model, optional
        Random preprocessing layers applied to each batch (e.g.
        :func:`lfhelpers.augment.keras_augmentation`).
    cache : bool or str
        Cache decoded images in memory (``True``) or in a file prefix (``str``).

    Returns
    -------
    tf.data.Dataset
        Batches of float32 pixels in [0, 255] (and labels).
    """
    paths = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    ds = paths.map(functools.partial(decode_resize, image_size=image_size),
                   num_parallel_calls=tf.data.AUTOTUNE,
                   deterministic=True)
    if labels is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(
            np.asarray(labels, np.float32)))
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if shuffle:
        ds = ds.shuffle(max(len(files), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        def augment_batch(x, *y):
            return (augment(x, training=True), *y) if y else augment(x, training=True)

        ds = ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _find_unreadable(files: Iterable[str]) -> dict[str, str]:
    """Return ``{file: reason}`` for files that TensorFlow cannot decode."""
    bad = {}
    for f in files:
        try:
            tf.io.decode_image(tf.io.read_file(f), channels=3, expand_animations=False)
        except Exception as exc:  # noqa: BLE001 - report whatever TensorFlow says
            bad[f] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return bad


# --------------------------------------------------------------------------- feature cache


class FeatureCache:
    """Trunk activations of images, computed once and shared by every model that needs them.

    The trunk is the frozen part of Xception below the ``unfreeze_blocks`` top blocks. Several
    :class:`XceptionClassifier` objects with the same ``image_size``, ``weights`` and
    ``unfreeze_blocks`` can share one cache (pass it as ``feature_cache``): each image is then
    run through the trunk only once in a notebook.

    Parameters
    ----------
    image_size : int
        Input side in pixels.
    weights : str, optional
        See :func:`resolve_weights`.
    unfreeze_blocks : int
        See :func:`split_backbone`.
    batch_size : int
        Images per trunk batch.
    seed : int
        Seed of the random augmentation views (``"aug1"``, ``"aug2"``, ...).
    augmentation : keras.Model, optional
        Random layers for the ``aug<k>`` views (default:
        :func:`lfhelpers.augment.keras_augmentation` with the tutorial's ranges).
    progress : bool
        Show a progress bar while computing.

    Notes
    -----
    Activations are kept as float16 in memory: about ``(image_size/32)**2 * 1024 * 2`` bytes per
    image and view for one unfrozen block (7 KB at 96 px, 100 KB at 224 px).
    """

    def __init__(
        self,
        image_size: int = 299,
        weights: str | None = None,
        unfreeze_blocks: int = 1,
        batch_size: int = 32,
        seed: int = 0,
        augmentation: keras.Model | None = None,
        progress: bool = True,
    ) -> None:
        self.image_size = int(image_size)
        self.weights = resolve_weights(weights)
        self.unfreeze_blocks = int(unfreeze_blocks)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.progress = progress
        self.backbone = build_backbone(self.image_size, self.weights)
        trunk, _ = split_backbone(self.backbone, self.unfreeze_blocks)
        inp = keras.Input((self.image_size, self.image_size, 3), name="pixels")
        scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="xception_scale")(inp)
        self.trunk = keras.Model(inp, trunk(scaled, training=False), name="pixels_to_trunk")
        self._run_trunk = tf.function(functools.partial(self.trunk, training=False),
                                      reduce_retracing=True)
        self._augmentation = augmentation
        self._store: dict[tuple[str, str], np.ndarray] = {}
        self.unreadable: dict[str, str] = {}
        self.seconds = 0.0

    @property
    def config(self) -> tuple[int, str | None, int]:
        """``(image_size, weights, unfreeze_blocks)``: what a classifier must match to share it."""
        return self.image_size, self.weights, self.unfreeze_blocks

    def __len__(self) -> int:
        return len(self._store)

    def new_backbone(self) -> keras.Model:
        """A fresh Xception backbone with exactly the cache's weights (also for ``"none"``)."""
        model = keras.applications.Xception(include_top=False, weights=None,
                                            input_shape=(self.image_size, self.image_size, 3))
        for target, source in zip(model.weights, self.backbone.weights, strict=True):
            target.assign(source)
        return model

    def _augmenter(self, view: str) -> keras.Model:
        from lfhelpers.augment import keras_augmentation

        k = int(view[3:])
        if self._augmentation is not None:
            return self._augmentation
        return keras_augmentation(seed=self.seed * 1000 + k, name=f"augmentation_{k}")

    def _compute(self, files: list[str], view: str) -> None:
        if view.startswith("aug") and view[3:].isdigit():
            aug, op = self._augmenter(view), None
        else:
            aug, op = None, _view_op(view)
        todo = list(dict.fromkeys(files))
        if not todo:
            return
        ds = tf.data.Dataset.from_tensor_slices(todo).map(
            functools.partial(decode_resize, image_size=self.image_size),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True)
        if op is not None and view != "orig":
            ds = ds.map(op)
        ds = ds.batch(self.batch_size).prefetch(2)
        start = time.perf_counter()
        outputs = []
        with tqdm(total=len(todo), desc=f"Xception trunk ({view})", unit="img",
                  disable=not self.progress) as bar:
            for batch in ds:
                if aug is not None:
                    batch = aug(batch, training=True)
                outputs.append(self._run_trunk(batch).numpy().astype(np.float16))
                bar.update(int(batch.shape[0]))
        self.seconds += time.perf_counter() - start
        feats = np.concatenate(outputs) if outputs else np.zeros((0,), np.float16)
        for f, x in zip(todo, feats, strict=True):
            self._store[(f, view)] = x

    @staticmethod
    def _pairs(files: Sequence[str], views: Sequence[str] | str) -> list[tuple[str, str]]:
        files = [str(f) for f in files]
        views = [views] * len(files) if isinstance(views, str) else [str(v) for v in views]
        if len(views) != len(files):
            raise ConfigError("Give one view for all files, or one view per file.")
        return list(zip(files, views, strict=True))

    def compute(self, files: Sequence[str], views: Sequence[str] | str = "orig") -> None:
        """Compute and keep the missing trunk activations of ``files``.

        A file that cannot be decoded is logged with the reason, remembered in
        :attr:`unreadable` and left out; the others are computed.

        Parameters
        ----------
        files : sequence of str
            Image paths.
        views : str or sequence of str
            One view for all files, or one per file: ``"orig"``, a fixed view of
            :data:`FIXED_VIEWS`, or ``"aug<k>"`` (the k-th random augmentation of the file).
        """
        missing: dict[str, list[str]] = {}
        for f, v in self._pairs(files, views):
            if (f, v) not in self._store and f not in self.unreadable:
                missing.setdefault(v, []).append(f)
        for view, todo in missing.items():
            try:
                self._compute(todo, view)
            except tf.errors.OpError:
                for f, reason in _find_unreadable(todo).items():
                    log.warning("Skipping unreadable image %s: %s", f, reason)
                    self.unreadable[f] = reason
                rest = [f for f in todo if f not in self.unreadable]
                if len(rest) == len(todo):
                    raise
                self._compute(rest, view)

    def features(self, files: Sequence[str], views: Sequence[str] | str = "orig") -> np.ndarray:
        """Trunk activations of ``files`` (computing the missing ones).

        Parameters
        ----------
        files : sequence of str
            Image paths.
        views : str or sequence of str
            As in :meth:`compute`.

        Returns
        -------
        numpy.ndarray
            ``(len(files), h, w, c)`` float16.

        Raises
        ------
        DataError
            When a file cannot be decoded (the message names it); :meth:`readable` drops such
            rows from a frame first.
        """
        pairs = self._pairs(files, views)
        self.compute([f for f, _ in pairs], [v for _, v in pairs])
        bad = [f for f, _ in pairs if f in self.unreadable]
        if bad:
            raise DataError(f"Could not decode image(s): {', '.join(bad[:5])}. Run the cleanup "
                            "step (notebook 01) on the data, or drop these files.")
        if not pairs:
            return np.zeros((0, *self.trunk.output.shape[1:]), np.float16)
        return np.stack([self._store[p] for p in pairs])

    def readable(self, df: pd.DataFrame) -> pd.DataFrame:
        """Compute the activations of ``df``'s images; drop (and log) the unreadable ones.

        Parameters
        ----------
        df : pandas.DataFrame
            Rows with a ``file`` column (and optionally ``view``).

        Returns
        -------
        pandas.DataFrame
            The readable rows (index reset).
        """
        self.compute(list(df["file"]), list(df["view"]) if "view" in df.columns else "orig")
        return df[~df["file"].isin(list(self.unreadable))].reset_index(drop=True)


# --------------------------------------------------------------------------- classifier


def _tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed to write TensorBoard logs) is installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        return True
    log.warning("TensorBoard logs skipped: the tensorboard package is not installed "
                "(pip install tensorboard).")
    return False


def _as_float32(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(x, tf.float32), y


def _one_hot(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"Labels {unknown} are not among the trained classes {list(classes)}.")
    out = np.zeros((len(labels), len(classes)), np.float32)
    out[np.arange(len(labels)), [index[label] for label in labels]] = 1.0
    return out


def _as_frame(data: pd.DataFrame | Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        if "file" not in data.columns:
            raise DataError("Expected a manifest frame with a 'file' column "
                            "(lfhelpers.dataset.read_manifest(..., absolute=True)).")
        return data
    return pd.DataFrame({"file": [os.fspath(p) for p in data]})


class XceptionClassifier:
    """Xception fine-tuned on a manifest: scikit-learn style ``fit`` / ``predict_proba``.

    Parameters
    ----------
    image_size : int
        Input side in pixels (at least 71; the tutorial used 299).
    weights : str, optional
        ``"imagenet"``, ``"none"`` or a weights file; see :func:`resolve_weights`.
    unfreeze_blocks : int
        Xception blocks trained in phase 2 (0 = head only).
    dropout : float
        Dropout rate before the softmax layer.
    batch_size : int
        Batch size of both phases.
    epochs : int
        Maximum epochs of phase 1 (head on cached features).
    learning_rate : float
        Adam learning rate of phase 1.
    fine_tune_epochs : int
        Maximum epochs of phase 2 (0 skips it).
    fine_tune_learning_rate : float
        Adam learning rate of phase 2 (low, so that pretrained filters are only adjusted).
    class_weight : {"balanced", None}
        Weight classes inversely to their training counts.
    patience : int
        Early stopping: epochs without a better validation loss before stopping; the best
        epoch's weights are restored at the end of each phase. Needs validation data.
    augment_views : int
        Random augmented copies per training image (Keras preprocessing layers, see
        :func:`lfhelpers.augment.keras_augmentation`). With ``cache_trunk=True`` they are fixed
        copies computed once; with ``False`` phase 2 augments online every epoch.
    cache_trunk : bool
        Phase 2 trains on cached trunk activations (fast on CPU) instead of the images.
    flip_tta : bool
        Test-time augmentation: predict the average of the image and its left-right mirror
        (the saved model does the same); costs one more trunk pass per predicted image.
    feature_cache : FeatureCache, optional
        A cache to share with other classifiers (same ``image_size``, ``weights`` and
        ``unfreeze_blocks``); a private one is made when omitted.
    log_dir : str, optional
        TensorBoard log folder (``phase1`` and ``phase2`` runs inside).
    seed : int
        Seeds Python, NumPy and Keras at the start of :meth:`fit`.
    verbose : int
        Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).

    Attributes
    ----------
    classes_ : list of str
        Class labels, sorted; the order of the probability columns.
    model_ : keras.Model
        The whole network: raw pixels in, probabilities out.
    history_ : pandas.DataFrame
        One row per epoch: ``phase``, ``epoch``, ``loss``, ``accuracy``, ``top3`` and ``val_*``.
    feature_cache_ : FeatureCache or None
        The cache used by :meth:`fit` (``None`` after :meth:`load`).
    train_seconds_ : float
        Wall time of :meth:`fit`, trunk features included.
    n_train_ : int
        Training examples seen per epoch (augmented views included).
    """

    def __init__(
        self,
        image_size: int = 299,
        weights: str | None = None,
        unfreeze_blocks: int = 2,
        dropout: float = 0.2,
        batch_size: int = 32,
        epochs: int = 10,
        learning_rate: float = 1e-4,
        fine_tune_epochs: int = 0,
        fine_tune_learning_rate: float = 1e-5,
        class_weight: str | None = None,
        patience: int = 3,
        augment_views: int = 0,
        cache_trunk: bool = True,
        flip_tta: bool = False,
        feature_cache: FeatureCache | None = None,
        log_dir: str | None = None,
        seed: int = 0,
        verbose: int = 2,
    ) -> None:
        self.image_size = image_size
        self.weights = weights
        self.unfreeze_blocks = unfreeze_blocks
        self.dropout = dropout
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.fine_tune_epochs = fine_tune_epochs
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.class_weight = class_weight
        self.patience = patience
        self.augment_views = augment_views
        self.cache_trunk = cache_trunk
        self.flip_tta = flip_tta
        self.feature_cache = feature_cache
        self.log_dir = log_dir
        self.seed = seed
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers

    def _cache(self) -> FeatureCache:
        wanted = (int(self.image_size), resolve_weights(self.weights), int(self.unfreeze_blocks))
        cache = self.feature_cache
        if cache is None:
            return FeatureCache(self.image_size, self.weights, self.unfreeze_blocks,
                                batch_size=self.batch_size, seed=self.seed)
        if cache.config != wanted:
            raise ConfigError(f"feature_cache was made for (image_size, weights, "
                              f"unfreeze_blocks) = {cache.config}, this classifier wants "
                              f"{wanted}. Make the cache with the classifier's settings.")
        return cache

    def _callbacks(self, phase: str, has_val: bool) -> list[keras.callbacks.Callback]:
        callbacks: list[keras.callbacks.Callback] = []
        if has_val and self.patience is not None and self.patience > 0:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(self.patience), restore_best_weights=True))
        if self.log_dir and _tensorboard_available():
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(Path(self.log_dir) / phase),
                                                         histogram_freq=0, write_graph=False))
        return callbacks

    def _compile(self, model: keras.Model, lr: float) -> None:
        model.compile(optimizer=keras.optimizers.Adam(float(lr)),
                      loss="categorical_crossentropy",
                      metrics=["accuracy",
                               keras.metrics.TopKCategoricalAccuracy(k=3, name="top3")])

    def _class_weights(self, y: np.ndarray) -> dict[int, float] | None:
        if self.class_weight in (None, "", "none"):
            return None
        if self.class_weight != "balanced":
            raise ConfigError(f"class_weight must be 'balanced' or None, not "
                              f"{self.class_weight!r}.")
        counts = y.sum(axis=0)
        n, k = y.shape[0], int((counts > 0).sum())
        return {i: float(n / (k * c)) if c else 0.0 for i, c in enumerate(counts)}

    def _train_views(self, train: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
        base_views = (list(train["view"]) if "view" in train.columns
                      else ["orig"] * len(train))
        files, views, labels = list(train["file"]), base_views, list(train["label"])
        if self.cache_trunk or not self.fine_tune_epochs:
            for k in range(1, int(self.augment_views) + 1):
                files = files + list(train["file"])
                views = views + [f"aug{k}"] * len(train)
                labels = labels + list(train["label"])
        return files, views, labels

    def _record(self, history: keras.callbacks.History, phase: str, start: int) -> int:
        frame = pd.DataFrame(history.history)
        frame.insert(0, "epoch", np.arange(start + 1, start + 1 + len(frame)))
        frame.insert(0, "phase", phase)
        self.history_ = pd.concat([self.history_, frame], ignore_index=True)
        return start + len(frame)

    # ------------------------------------------------------------------ fit

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> XceptionClassifier:
        """Train on the ``train`` rows; early-stop and restore the best epoch on ``val``.

        Parameters
        ----------
        train : pandas.DataFrame
            Columns ``file`` (absolute path) and ``label``; optional ``view`` (a fixed view of
            :data:`FIXED_VIEWS` per row, used by :func:`augmentation_leak_demo`).
        val : pandas.DataFrame, optional
            Same columns; without it, every epoch is trained and the last one is kept.

        Returns
        -------
        XceptionClassifier
            ``self``.
        """
        start_time = time.perf_counter()
        set_seed(self.seed)
        if len(train) == 0:
            raise DataError("The training set is empty. Check the manifest's train split.")
        cache = self._cache()
        train = cache.readable(_as_frame(train))
        val = cache.readable(_as_frame(val)) if val is not None and len(val) else None
        self.feature_cache_ = cache
        self.classes_ = sorted({str(c) for c in train["label"]})
        if len(self.classes_) < 2:
            raise DataError(f"Need at least two classes to train, found {self.classes_}.")
        n_classes = len(self.classes_)

        files, views, labels = self._train_views(train)
        y_train = _one_hot(labels, self.classes_)
        x_train = cache.features(files, views)
        x_val = y_val = None
        if val is not None:
            y_val = _one_hot(list(val["label"]), self.classes_)
            x_val = cache.features(list(val["file"]), list(val["view"]) if "view" in val
                                   else "orig")
        self.n_train_ = len(files)

        backbone = cache.new_backbone()
        backbone.trainable = False
        _, top = split_backbone(backbone, int(self.unfreeze_blocks))
        cut_in = keras.Input(x_train.shape[1:], name="trunk_features")
        pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")
        features = pooled(top(cut_in, training=False) if top is not None else cut_in)
        pool_model = keras.Model(cut_in, features, name="trunk_to_pooled")
        head = keras.Sequential([keras.Input((features.shape[-1],)),
                                 keras.layers.Dropout(float(self.dropout), seed=self.seed),
                                 keras.layers.Dense(n_classes, activation="softmax",
                                                    name="predictions")], name="head")

        # Phase 1: the head alone, on pooled features computed once.
        p_train = pool_model.predict(x_train.astype(np.float32), batch_size=128, verbose=0)
        p_val = (pool_model.predict(x_val.astype(np.float32), batch_size=128, verbose=0)
                 if x_val is not None else None)
        self._compile(head, self.learning_rate)
        self.history_ = pd.DataFrame()
        weights = self._class_weights(y_train)
        hist = head.fit(p_train, y_train, batch_size=int(self.batch_size),
                        epochs=int(self.epochs), shuffle=True,
                        validation_data=(p_val, y_val) if p_val is not None else None,
                        class_weight=weights, verbose=self.verbose,
                        callbacks=self._callbacks("phase1", x_val is not None))
        done = self._record(hist, "1 head", 0)

        # Phase 2: the top blocks and the head, BatchNorm frozen and in inference mode.
        cut_model = keras.Model(cut_in, head(features), name="trunk_to_probabilities")
        if top is not None and int(self.fine_tune_epochs) > 0:
            # Each layer is set on its own: on a functional sub-model of a frozen backbone,
            # Keras does not pass ``top.trainable = True`` down to the layers.
            top.trainable = True
            for layer in top.layers:
                layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
            if self.cache_trunk:
                done = self._fine_tune_cached(cut_model, x_train, y_train, x_val, y_val,
                                              weights, done)
            else:
                done = self._fine_tune_images(backbone, top, head, train, val, weights, done)
            for layer in top.layers:
                layer.trainable = False
            top.trainable = False
        self.cut_model_ = cut_model
        self.model_ = self._assemble(backbone, top, head, tta=bool(self.flip_tta))
        self.train_seconds_ = time.perf_counter() - start_time
        return self

    def _fine_tune_cached(self, cut_model, x_train, y_train, x_val, y_val, weights, done):
        def dataset(x, y, shuffle):
            ds = tf.data.Dataset.from_tensor_slices((x, y))
            if shuffle:
                ds = ds.shuffle(len(x), seed=self.seed, reshuffle_each_iteration=True)
            return (ds.batch(int(self.batch_size))
                    .map(_as_float32).prefetch(2))

        self._compile(cut_model, self.fine_tune_learning_rate)
        hist = cut_model.fit(
            dataset(x_train, y_train, True), epochs=int(self.fine_tune_epochs), shuffle=False,
            validation_data=dataset(x_val, y_val, False) if x_val is not None else None,
            class_weight=weights, callbacks=self._callbacks("phase2", x_val is not None),
            verbose=self.verbose)
        return self._record(hist, "2 fine-tune", done)

    def _fine_tune_images(self, backbone, top, head, train, val, weights, done):
        from lfhelpers.augment import keras_augmentation

        model = self._assemble(backbone, top, head)
        aug = keras_augmentation(seed=self.seed) if int(self.augment_views) > 0 else None
        y_train = _one_hot(list(train["label"]), self.classes_)
        ds_train = make_dataset(list(train["file"]), y_train, int(self.image_size),
                                int(self.batch_size), shuffle=True, seed=self.seed, augment=aug)
        ds_val = None
        if val is not None:
            ds_val = make_dataset(list(val["file"]), _one_hot(list(val["label"]), self.classes_),
                                  int(self.image_size), int(self.batch_size))
        self._compile(model, self.fine_tune_learning_rate)
        hist = model.fit(ds_train, epochs=int(self.fine_tune_epochs), validation_data=ds_val,
                         shuffle=False,
                         class_weight=weights,
                         callbacks=self._callbacks("phase2", ds_val is not None),
                         verbose=self.verbose)
        return self._record(hist, "2 fine-tune", done)

    def _assemble(self, backbone, top, head, tta: bool = False) -> keras.Model:
        trunk, _ = split_backbone(backbone, int(self.unfreeze_blocks))
        trunk.trainable = False
        size = int(self.image_size)
        inp = keras.Input((size, size, 3), name="pixels")
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="xception_scale")(inp)
        x = trunk(x, training=False)
        if top is not None:
            x = top(x, training=False)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        model = keras.Model(inp, head(x), name="xception_classifier")
        if not tta:
            return model
        pixels = keras.Input((size, size, 3), name="pixels")
        mirrored = keras.ops.flip(pixels, axis=2)  # left-right
        both = keras.layers.Average(name="flip_average")([model(pixels), model(mirrored)])
        return keras.Model(pixels, both, name="xception_classifier_flip_tta")

    # ------------------------------------------------------------------ predict

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise LFError("This XceptionClassifier is not fitted yet: call fit() or load().")

    def predict_proba(self, data: pd.DataFrame | Sequence[str | os.PathLike[str]]) -> np.ndarray:
        """Class probabilities, one row per image, columns in the order of ``classes_``.

        Parameters
        ----------
        data : pandas.DataFrame or sequence of paths
            A frame with a ``file`` column (optional ``view``), or image paths.

        Returns
        -------
        numpy.ndarray
            ``(n, len(classes_))`` float32.
        """
        self._check_fitted()
        frame = _as_frame(data)
        cache = getattr(self, "feature_cache_", None)
        if len(frame) == 0:
            return np.zeros((0, len(self.classes_)), np.float32)
        if cache is not None:
            files = list(frame["file"])
            views = list(frame["view"]) if "view" in frame.columns else ["orig"] * len(files)
            x = cache.features(files, views).astype(np.float32)
            proba = self.cut_model_.predict(x, batch_size=64, verbose=0)
            if self.flip_tta:
                if set(views) != {"orig"}:
                    raise ConfigError("flip_tta works on original images only (no 'view').")
                x = cache.features(files, "fliplr").astype(np.float32)
                proba = (proba + self.cut_model_.predict(x, batch_size=64, verbose=0)) / 2
            return proba
        ds = make_dataset(list(frame["file"]), None, int(self.image_size), int(self.batch_size),
                          cache=False)
        return self.model_.predict(ds, verbose=0)

    def predict(self, data: pd.DataFrame | Sequence[str | os.PathLike[str]]) -> np.ndarray:
        """Most probable label per image (array of str)."""
        proba = self.predict_proba(data)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(axis=1)]

    def evaluate(self, df: pd.DataFrame) -> dict[str, Any]:
        """Loss, top-1, top-3, macro-F1, per-class table and confusion matrix on ``df``.

        Parameters
        ----------
        df : pandas.DataFrame
            Rows with ``file`` and ``label`` (e.g. the test split).

        Returns
        -------
        dict
            See :func:`evaluate_predictions`; plus ``proba``.
        """
        self._check_fitted()
        cache = getattr(self, "feature_cache_", None)
        if cache is not None:
            df = cache.readable(df)
        proba = self.predict_proba(df)
        result = evaluate_predictions(list(df["label"]), proba, self.classes_)
        result["proba"] = proba
        return result

    # ------------------------------------------------------------------ save / load

    def save(self, path: str | os.PathLike[str]) -> list[Path]:
        """Save the model (``.keras``) and its labels (``<stem>.labels.json``) atomically.

        Parameters
        ----------
        path : path-like
            Destination ending in ``.keras``; parent folders are created.

        Returns
        -------
        list of pathlib.Path
            The two files written.
        """
        self._check_fitted()
        path = Path(path)
        if path.suffix != ".keras":
            raise ConfigError(f"Model path {path} must end in .keras.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.part.keras")
        self.model_.save(tmp)
        os.replace(tmp, path)
        labels = labels_path(path)
        write_json(labels, {"labels": list(self.classes_), "image_size": int(self.image_size),
                            "unfreeze_blocks": int(self.unfreeze_blocks),
                            "flip_tta": bool(self.flip_tta),
                            "input": "RGB pixels 0-255, resized to image_size x image_size"})
        return [path, labels]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> XceptionClassifier:
        """Load a model saved by :meth:`save` (predicts through the whole network).

        Parameters
        ----------
        path : path-like
            The ``.keras`` file; its ``<stem>.labels.json`` must be next to it.

        Returns
        -------
        XceptionClassifier
            Fitted: ``model_``, ``classes_`` and ``image_size`` set.
        """
        model, labels, meta = load_model(path)
        clf = cls(image_size=int(meta.get("image_size", model.input_shape[1])),
                  unfreeze_blocks=int(meta.get("unfreeze_blocks", 0)),
                  flip_tta=bool(meta.get("flip_tta", False)))
        clf.model_, clf.classes_, clf.feature_cache_ = model, labels, None
        return clf


def labels_path(model_path: str | os.PathLike[str]) -> Path:
    """``<folder>/<stem>.labels.json`` next to a ``.keras`` model file."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + LABELS_SUFFIX)


def load_model(path: str | os.PathLike[str]) -> tuple[keras.Model, list[str], dict]:
    """Load a ``.keras`` classifier and its label list.

    Parameters
    ----------
    path : path-like
        Model file written by :meth:`XceptionClassifier.save`.

    Returns
    -------
    model : keras.Model
    labels : list of str
    meta : dict
        The whole labels file.

    Raises
    ------
    ConfigError
        When the model or its labels file is missing or does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Model file {path} not found. Train one with notebook 03 (it saves "
                          "models/<name>.keras) or pass the right --model path.")
    lpath = labels_path(path)
    if not lpath.is_file():
        raise ConfigError(f"Labels file {lpath} not found next to the model; it is written by "
                          "XceptionClassifier.save together with the model.")
    meta = json.loads(lpath.read_text(encoding="utf-8"))
    model = keras.models.load_model(path, compile=False)
    labels = [str(x) for x in meta["labels"]]
    if model.output_shape[-1] != len(labels):
        raise ConfigError(f"{lpath} lists {len(labels)} labels but the model has "
                          f"{model.output_shape[-1]} outputs; save them again together.")
    return model, labels, meta


# --------------------------------------------------------------------------- evaluation


def top_k_accuracy(y_true: np.ndarray, proba: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class index is among the ``k`` most probable."""
    if len(y_true) == 0:
        return float("nan")
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return float(np.mean([t in row for t, row in zip(y_true, top, strict=True)]))


def evaluate_predictions(
    labels: Sequence[str], proba: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Scores of predicted probabilities against true labels.

    Parameters
    ----------
    labels : sequence of str
        True labels.
    proba : numpy.ndarray
        ``(n, len(classes))`` probabilities.
    classes : sequence of str
        Column order of ``proba``.

    Returns
    -------
    dict
        ``loss`` (categorical cross-entropy), ``top1``, ``top3``, ``macro_f1``, ``n``;
        ``per_class`` (DataFrame: precision, recall, f1, support per label) and ``confusion``
        (DataFrame, rows true label, columns predicted label).
    """
    classes = list(classes)
    y = np.array([classes.index(str(label)) for label in labels], dtype=int)
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(axis=1) if len(proba) else np.zeros(0, int)
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], eps, 1.0)))) if len(y) \
        else float("nan")
    idx = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=idx, zero_division=0)
    per_class = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1,
                              "support": support}, index=pd.Index(classes, name="label"))
    cm = pd.DataFrame(confusion_matrix(y, pred, labels=idx),
                      index=pd.Index(classes, name="true"),
                      columns=pd.Index(classes, name="predicted"))
    return {
        "n": len(y),
        "loss": loss,
        "top1": float(np.mean(pred == y)) if len(y) else float("nan"),
        "top3": top_k_accuracy(y, proba, 3),
        "macro_f1": float(f1_score(y, pred, labels=idx, average="macro", zero_division=0)),
        "per_class": per_class,
        "confusion": cm,
    }


def top_k_table(
    proba: np.ndarray, classes: Sequence[str], k: int = 3, files: Sequence[str] | None = None
) -> pd.DataFrame:
    """The clerk's view: the ``k`` best labels with their probabilities, one row per image.

    Parameters
    ----------
    proba : numpy.ndarray
        ``(n, len(classes))`` probabilities.
    classes : sequence of str
        Column order of ``proba``.
    k : int
        How many labels per image.
    files : sequence of str, optional
        Image paths; shown as the file name in a first column.

    Returns
    -------
    pandas.DataFrame
        Columns ``top1``, ``p1``, ``top2``, ``p2``, ... (and ``file``).
    """
    k = min(k, len(classes))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    data: dict[str, list] = {}
    if files is not None:
        data["file"] = [Path(f).name for f in files]
    for j in range(k):
        data[f"top{j + 1}"] = [classes[i] for i in order[:, j]]
        data[f"p{j + 1}"] = np.round(proba[np.arange(len(proba)), order[:, j]], 3)
    return pd.DataFrame(data)


def comparison_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Side-by-side test scores of several runs (the tutorial's before/after augmentation table).

    Parameters
    ----------
    results : mapping
        Run name -> ``(classifier, evaluation)`` (a fitted :class:`XceptionClassifier` and its
        :meth:`~XceptionClassifier.evaluate` result), or a dict with ``loss``, ``top1``,
        ``top3``, ``macro_f1`` and optionally ``n_train`` and ``train_seconds``.

    Returns
    -------
    pandas.DataFrame
        One row per run: training examples, test loss, top-1, top-3, macro-F1 and training
        seconds, rounded to 4 decimals.
    """
    cols = ["n_train", "loss", "top1", "top3", "macro_f1", "train_seconds"]
    rows = {}
    for name, value in results.items():
        if isinstance(value, tuple):
            clf, evaluation = value
            value = {**evaluation, "n_train": clf.n_train_, "train_seconds": clf.train_seconds_}
        rows[name] = {c: value.get(c, np.nan) for c in cols}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "run"
    table = table.rename(columns={"loss": "test_loss", "top1": "test_top1",
                                  "top3": "test_top3"})
    return table.round(4)


# --------------------------------------------------------------------------- plots


def plot_learning_curves(history: pd.DataFrame, title: str = "Learning curves") -> plt.Figure:
    """Loss and top-1 accuracy per epoch, train and validation, phases marked.

    Parameters
    ----------
    history : pandas.DataFrame
        ``XceptionClassifier.history_``.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, name in ((axes[0], "loss", "cross-entropy loss"),
                             (axes[1], "accuracy", "top-1 accuracy")):
        for col, style, label in ((metric, "-o", "train"), (f"val_{metric}", "--s", "validation")):
            if col in history:
                ax.plot(history["epoch"], history[col], style, ms=3, label=label)
        for phase, part in history.groupby("phase", sort=False):
            if phase != history["phase"].iloc[0]:
                ax.axvline(part["epoch"].min() - 0.5, color="grey", lw=1, ls=":")
                ax.text(part["epoch"].min() - 0.4, ax.get_ylim()[1], f" phase {phase}",
                        va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(confusion: pd.DataFrame, title: str = "Confusion matrix") -> plt.Figure:
    """Confusion matrix as a heat map (color = row share, text = count).

    Parameters
    ----------
    confusion : pandas.DataFrame
        Rows true label, columns predicted label (``evaluate_predictions(...)["confusion"]``).
    title : str
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    counts = confusion.to_numpy()
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(confusion)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * n + 2.5), max(4.0, 0.6 * n + 2)))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(c) for c in confusion.columns], rotation=40, ha="right")
    ax.set_yticks(range(n), [str(c) for c in confusion.index])
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return fig


def mistake_gallery(
    df: pd.DataFrame,
    proba: np.ndarray,
    classes: Sequence[str],
    n: int = 12,
    ncols: int = 4,
    title: str = "Mistakes on the test split",
) -> plt.Figure:
    """Misclassified images with their true label and the top 3 with probabilities.

    Parameters
    ----------
    df : pandas.DataFrame
        The evaluated rows (``file``, ``label``), in the order of ``proba``.
    proba : numpy.ndarray
        Predicted probabilities.
    classes : sequence of str
        Column order of ``proba``.
    n : int
        At most this many mistakes, the most confident ones first.
    ncols : int
        Columns of the grid.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        With a note instead of images when there is no mistake.
    """
    from lfhelpers.plots import image_grid

    classes = list(classes)
    pred = proba.argmax(axis=1)
    truth = np.array([classes.index(str(x)) for x in df["label"]])
    wrong = np.flatnonzero(pred != truth)
    wrong = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:n]
    if len(wrong) == 0:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "No mistakes on these images.", ha="center", va="center")
        ax.set_title(title)
        return fig
    top = top_k_table(proba[wrong], classes, k=3)
    titles = []
    for row, i in zip(top.itertuples(index=False), wrong, strict=True):
        lines = [f"true: {df['label'].iloc[i]}"]
        for j in range(1, min(3, len(classes)) + 1):
            lines.append(f"{j}. {getattr(row, f'top{j}')} {getattr(row, f'p{j}'):.2f}")
        titles.append("\n".join(lines))
    fig = image_grid(list(df["file"].iloc[wrong]), titles, ncols=ncols, size=2.4,
                     suptitle=title)
    nrows = int(np.ceil(len(wrong) / min(ncols, len(wrong))))
    fig.set_size_inches(fig.get_size_inches()[0], nrows * 3.3 + 0.6)  # room for 4-line titles
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- data helpers


def augmented_training_set(
    clean_dir: str | os.PathLike[str],
    train: pd.DataFrame,
    aug_dir: str | os.PathLike[str] | None = "",
    online_views: int = 0,
) -> tuple[pd.DataFrame | None, int, str]:
    """The training rows of the "with augmentation" run, and a sentence saying what they are.

    Parameters
    ----------
    clean_dir : path-like
        The clean data set (its manifest).
    train : pandas.DataFrame
        The plain training rows (possibly capped per class).
    aug_dir : path-like, optional
        Output folder of notebook 02 (:func:`lfhelpers.augment.balance_train`). Empty: its
        default place (:func:`lfhelpers.augment.default_aug_dir`); ``"none"``: do not look.
    online_views : int
        When there is no augmented folder: random augmented copies per training image made
        with Keras preprocessing layers (``XceptionClassifier(augment_views=...)``); 0 skips
        the comparison.

    Returns
    -------
    rows : pandas.DataFrame or None
        ``train`` plus the augmented images made from its rows, or ``train`` itself when
        augmenting online, or ``None`` when there is nothing to compare.
    augment_views : int
        The ``augment_views`` to give the classifier.
    note : str
        What was done, for the notebook to print.

    Raises
    ------
    DataError
        When the augmented folder holds copies of validation or test images.
    """
    from lfhelpers.augment import default_aug_dir, train_with_augmented
    from lfhelpers.data import manifest_path

    value = "" if aug_dir is None else os.fspath(aug_dir).strip()
    folder = None if value.lower() == "none" else Path(value) if value \
        else default_aug_dir(clean_dir)
    if folder is not None and manifest_path(folder).is_file():
        both = train_with_augmented(clean_dir, folder)
        extra = both[both["augmented"].astype(bool) & both["origin"].isin(set(train["path"]))]
        rows = pd.concat([train, extra], ignore_index=True)
        return rows, 0, (f"Using {len(extra)} augmented train images from {folder} "
                         f"({len(rows)} training images in all).")
    where = "no augmented folder asked for" if folder is None \
        else f"no augmented images at {folder} (run notebook 02 first)"
    if online_views > 0:
        return train, int(online_views), (
            f"{where}: augmenting online instead with Keras preprocessing layers, "
            f"{online_views} random cop{'y' if online_views == 1 else 'ies'} per training image.")
    return None, 0, f"{where}, and online_views is 0: the with-augmentation run is skipped."


# --------------------------------------------------------------------------- leak demo


def augmentation_leak_demo(
    df: pd.DataFrame,
    views: Sequence[str] = ("orig", "fliplr", "rot90", "rot270"),
    test_size: float = 0.2,
    feature_cache: FeatureCache | None = None,
    **params: Any,
) -> pd.DataFrame:
    """Show that augmenting before the train/test split inflates the test score.

    Two protocols, the same model (``params`` for :class:`XceptionClassifier`), the same
    augmented copies (fixed rotations and flips, ``views``):

    - *augment, then split* (the CNN tutorial's): every image and its copies go into one pool,
      which is split at random; copies of a test image usually land in the training set;
    - *split, then augment* (this project's): the manifest's train/val/test split, which keeps
      near-duplicates together; only training images get copies, the test images are originals.

    Parameters
    ----------
    df : pandas.DataFrame
        A manifest with ``file``, ``label``, ``split`` and ``group``.
    views : sequence of str
        Views of :data:`FIXED_VIEWS` (``"orig"`` first).
    test_size : float
        Test share of the *augment, then split* pool.
    feature_cache : FeatureCache, optional
        Shared trunk cache (must match ``params``).
    **params
        Passed to :class:`XceptionClassifier` (``flip_tta`` is turned off); its ``seed`` also
        seeds the random split.

    Returns
    -------
    pandas.DataFrame
        One row per protocol: training and test images, the share of test images whose
        original (or a copy of it) was trained on, and the test top-1.
    """
    from sklearn.model_selection import train_test_split

    views = list(views)
    seed = int(params.get("seed", 0))
    params = {**params, "flip_tta": False}  # test images are copies here: no test-time flips
    usable = df[df["split"].isin(["train", "val", "test"])].reset_index(drop=True)

    def expand(rows: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([rows.assign(view=v) for v in views], ignore_index=True)

    pool = expand(usable)
    train_pool, test_leak = train_test_split(pool, test_size=test_size, random_state=seed,
                                             stratify=pool["label"])
    train_leak, val_leak = train_test_split(train_pool, test_size=0.1, random_state=seed,
                                            stratify=train_pool["label"])
    honest_train = expand(usable[usable["split"] == "train"])
    honest_val = usable[usable["split"] == "val"].assign(view="orig")
    honest_test = usable[usable["split"] == "test"].assign(view="orig")

    if feature_cache is None:
        feature_cache = FeatureCache(params.get("image_size", 299), params.get("weights"),
                                     params.get("unfreeze_blocks", 2),
                                     batch_size=params.get("batch_size", 32), seed=seed)
    rows = []
    for name, tr, va, te in (("augment, then split (tutorial)", train_leak, val_leak, test_leak),
                             ("split, then augment (this project)", honest_train, honest_val,
                              honest_test)):
        clf = XceptionClassifier(feature_cache=feature_cache, **params).fit(tr, va)
        score = clf.evaluate(te)
        seen = set(tr["file"])
        rows.append({"protocol": name, "train_images": len(tr), "test_images": len(te),
                     "test_with_copy_in_train": round(float(te["file"].isin(seen).mean()), 3),
                     "test_top1": round(score["top1"], 4), "test_top3": round(score["top3"], 4)})
    return pd.DataFrame(rows).set_index("protocol")


# --------------------------------------------------------------------------- CLI


def predict_files(
    model: keras.Model, labels: Sequence[str], files: Sequence[str | os.PathLike[str]],
    k: int = 3, batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Top-``k`` labels for each image file; a bad file gets an ``error`` entry instead.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`load_model`.
    labels : sequence of str
        Its labels.
    files : sequence of path-like
        Images.
    k : int
        Labels per image.
    batch_size : int
        Images per prediction batch.

    Returns
    -------
    list of dict
        ``{"path": ..., "top3": [{"label": ..., "prob": ...}, ...]}`` or
        ``{"path": ..., "error": ...}``, in the order of ``files``.
    """
    size = int(model.input_shape[1])
    key = f"top{k}"
    results: list[dict[str, Any]] = []
    for start in range(0, len(files), batch_size):
        chunk = [os.fspath(f) for f in files[start:start + batch_size]]
        images, entries = [], []
        for path in chunk:
            entry: dict[str, Any] = {"path": path}
            try:
                images.append(load_image(path, size))
            except DataError as exc:
                entry["error"] = str(exc)
            entries.append(entry)
        if images:
            proba = model.predict(np.stack(images), verbose=0)
            it = iter(proba)
            for entry in entries:
                if "error" in entry:
                    continue
                p = next(it)
                order = np.argsort(-p, kind="stable")[:k]
                entry[key] = [{"label": labels[i], "prob": round(float(p[i]), 4)}
                              for i in order]
        results.extend(entries)
    return results


def predictions_frame(entries: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The entries of :func:`predict_files` as a table: file name, then label and probability
    columns (``top1``, ``p1``, ...), or ``error``.

    Parameters
    ----------
    entries : iterable of dict
        From :func:`predict_files`.

    Returns
    -------
    pandas.DataFrame
        One row per image.
    """
    rows = []
    for entry in entries:
        row: dict[str, Any] = {"file": Path(entry["path"]).name}
        key = next((k for k in entry if k.startswith("top")), None)
        for j, item in enumerate(entry.get(key) or [], start=1):
            row[f"top{j}"], row[f"p{j}"] = item["label"], item["prob"]
        if "error" in entry:
            row["error"] = entry["error"]
        rows.append(row)
    return pd.DataFrame(rows)


def predict_command(args: argparse.Namespace) -> int:
    """``python -m lfhelpers predict --model PATH IMAGE...``: one JSON line per image.

    Prints ``{"path": ..., "top3": [{"label": ..., "prob": ...}, ...]}`` for each image, or
    ``{"path": ..., "error": ...}`` for one that cannot be read (the others go on).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (:mod:`lfhelpers.cli`).

    Returns
    -------
    int
        0 when every image was classified, 1 when some could not be read, 2 when the model
        could not be loaded.
    """
    try:
        model, labels, _ = load_model(args.model)
    except LFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for entry in predict_files(model, labels, args.images, k=max(1, args.top),
                               batch_size=max(1, args.batch_size)):
        failed += "error" in entry
        sys.stdout.write(json.dumps(entry, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return 1 if failed else 0
