"""The frozen part of Xception (the *trunk*), run once per image and kept: :class:`FeatureCache`.

Images reach the network through :func:`lfhelpers.images.load_rgb` (Pillow, EXIF orientation
applied), the same loader as ``predict``, the embeddings and the matcher, so a photo is the same
array everywhere. Files are decoded in a small thread pool while the network runs on the
previous batch.

The trunk can run on TensorFlow (``engine="keras"``) or on an OpenVINO copy of the same network
(``engine="openvino"``), which is faster on CPUs; ``precision="bfloat16"`` lets OpenVINO use
bfloat16 arithmetic where the CPU has it (AMX, AVX-512 BF16).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.images import load_rgb
from lfhelpers.models.backbones import build_backbone, quiet_tensorflow, resolve_weights
from lfhelpers.models.trunk import (
    check_engine,
    iter_pixel_batches,
    openvino_runner,
    stored_activations,
    trunk_store,
)

log = logging.getLogger(__name__)

#: Fixed, deterministic views of an image (used by the augmentation-leak demonstration).
FIXED_VIEWS = ("orig", "fliplr", "flipud", "rot90", "rot180", "rot270")
#: Xception blocks that may be unfrozen: 14 (exit flow) down to 5 (middle flow).
MAX_UNFREEZE_BLOCKS = 10

_VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "orig": lambda x: x,
    "fliplr": lambda x: x[:, ::-1],
    "flipud": lambda x: x[::-1],
    "rot90": lambda x: np.rot90(x, 1),
    "rot180": lambda x: np.rot90(x, 2),
    "rot270": lambda x: np.rot90(x, 3),
}


def view_image(pixels: np.ndarray, view: str) -> np.ndarray:
    """A fixed view (:data:`FIXED_VIEWS`) of an ``(h, w, 3)`` image (rotations anticlockwise)."""
    if view not in _VIEWS:
        raise ConfigError(f"Unknown image view {view!r}: use one of {FIXED_VIEWS} or 'aug<k>'.")
    return np.ascontiguousarray(_VIEWS[view](pixels))


def split_backbone(backbone: Any, unfreeze_blocks: int) -> tuple[Any, Any | None]:
    """Cut Xception into the frozen trunk and the top blocks that phase 2 trains.

    Parameters
    ----------
    backbone : keras.Model
        Xception without its top (no pooling).
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
    quiet_tensorflow()
    import keras

    k = int(unfreeze_blocks)
    if not 0 <= k <= MAX_UNFREEZE_BLOCKS:
        raise ConfigError(f"unfreeze_blocks must be between 0 and {MAX_UNFREEZE_BLOCKS}, "
                          f"not {unfreeze_blocks}.")
    if k == 0:
        return keras.Model(backbone.input, backbone.output, name="trunk"), None
    first = f"block{15 - k}_"
    layer = next(lay for lay in backbone.layers if lay.name.startswith(first))
    cut = layer.input
    return (keras.Model(backbone.input, cut, name="trunk"),
            keras.Model(cut, backbone.output, name="top_blocks"))


class FeatureCache:
    """Trunk activations of images, computed once and shared by every model that needs them.

    The trunk is the frozen part of Xception below the ``unfreeze_blocks`` top blocks (the
    whole network plus global average pooling when ``unfreeze_blocks`` is 0). Several
    classifiers with the same ``image_size``, ``weights`` and ``unfreeze_blocks`` can share one
    cache, so each image goes through the trunk once per notebook.

    Parameters
    ----------
    image_size : int
        Input side in pixels.
    weights : str, optional
        See :func:`lfhelpers.models.backbones.resolve_weights`.
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
    engine : {"keras", "openvino"}
        What runs the trunk. ``"openvino"`` converts the same network (same weights) once;
        without the ``openvino`` package it falls back to Keras with a logged note.
    precision : {"float32", "bfloat16"}
        Arithmetic of the OpenVINO engine; bfloat16 is used only where the CPU supports it.
    cache_dir : path-like, optional
        The notebooks' cache root: the activations of the original photos (view ``"orig"``)
        are read from and written to its trunk store (:mod:`lfhelpers.models.trunk`), which
        the fine-tuned model's embeddings in notebooks 06 and 07 read. ``None``: memory only.

    Notes
    -----
    Activations are kept as float16 in memory: for one unfrozen block about
    ``(image_size/32)**2 * 1024 * 2`` bytes per image and view (100 KB at 224 px); 4 KB with
    ``unfreeze_blocks=0`` (pooled vectors).
    """

    def __init__(
        self,
        image_size: int = 299,
        weights: str | None = None,
        unfreeze_blocks: int = 1,
        batch_size: int = 32,
        seed: int = 0,
        augmentation: Any = None,
        progress: bool = True,
        engine: str = "keras",
        precision: str = "float32",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        quiet_tensorflow()
        import keras

        check_engine(engine, precision)
        self.image_size = int(image_size)
        self.weights = resolve_weights("xception", weights)
        self.unfreeze_blocks = int(unfreeze_blocks)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.progress = progress
        self.backbone, _, _ = build_backbone("xception", self.image_size, self.weights,
                                             pooling=None)
        trunk, _ = split_backbone(self.backbone, self.unfreeze_blocks)
        inp = keras.Input((self.image_size, self.image_size, 3), name="pixels")
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="xception_scale")(inp)
        x = trunk(x, training=False)
        if self.unfreeze_blocks == 0:
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        self.trunk = keras.Model(inp, x, name="pixels_to_trunk")
        self.pooled = self.unfreeze_blocks == 0
        self._augmentation = augmentation
        self._store: dict[tuple[str, str], np.ndarray] = {}
        self._pooled: dict[tuple[str, str], np.ndarray] = {}
        self._pool_model: Any = None
        self.unreadable: dict[str, str] = {}
        self.seconds = 0.0
        self.engine, self.precision = self._start_engine(engine, precision)
        self.trunk_store = (trunk_store(cache_dir, trunk, self.image_size)
                            if cache_dir and not self.pooled else None)

    def _start_engine(self, engine: str, precision: str) -> tuple[str, str]:
        if engine == "openvino":
            started = openvino_runner(self.trunk, self.image_size, precision)
            if started is not None:
                self._run_ov, precision = started
                return "openvino", precision
        import tensorflow as tf

        self._run_tf = tf.function(lambda x: self.trunk(x, training=False),
                                   reduce_retracing=True)
        return "keras", "float32"

    def run_trunk(self, pixels: np.ndarray) -> np.ndarray:
        """Trunk activations (float32) of a batch of pixels (0-255), on the cache's engine."""
        x = np.asarray(pixels, np.float32)
        if self.engine == "openvino":
            return self._run_ov(x)
        return np.asarray(self._run_tf(x), np.float32)

    @property
    def config(self) -> tuple[int, str | None, int]:
        """``(image_size, weights, unfreeze_blocks)``: what a classifier must match to share it."""
        return self.image_size, self.weights, self.unfreeze_blocks

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one image's cached activations."""
        return tuple(int(d) for d in self.trunk.output.shape[1:])

    def __len__(self) -> int:
        return len(self._store)

    def new_backbone(self) -> Any:
        """A fresh Xception backbone with exactly the cache's weights (also for ``"none"``)."""
        import keras

        model = keras.applications.Xception(include_top=False, weights=None,
                                            input_shape=(self.image_size, self.image_size, 3))
        for target, source in zip(model.weights, self.backbone.weights, strict=True):
            target.assign(source)
        return model

    def _view_fn(self, view: str) -> Callable[[np.ndarray], np.ndarray]:
        if view.startswith("aug") and view[3:].isdigit():
            from lfhelpers.augment import keras_augmentation

            k = int(view[3:])
            aug = self._augmentation or keras_augmentation(seed=self.seed * 1000 + k,
                                                           name=f"augmentation_{k}")
            return lambda batch: np.clip(np.asarray(
                aug(batch.astype(np.float32), training=True)), 0, 255)
        if view not in _VIEWS:
            raise ConfigError(f"Unknown image view {view!r}: use one of {FIXED_VIEWS} or "
                              "'aug<k>'.")
        return lambda batch: np.stack([view_image(x, view) for x in batch]) if len(batch) \
            else batch

    def _compute(self, files: list[str], view: str) -> None:
        todo = [f for f in dict.fromkeys(files) if f not in self.unreadable]
        if not todo:
            return
        transform = self._view_fn(view)
        start = time.perf_counter()
        with tqdm(total=len(todo), desc=f"Xception trunk ({view})", unit="img",
                  disable=not self.progress, mininterval=2.0) as bar:
            if view == "orig" and self.trunk_store is not None:  # kept on disk too
                values, errors, _ = stored_activations(
                    todo, self.trunk_store, self.run_trunk, self.image_size, self.batch_size,
                    on_done=bar.update)
                self._skip(errors)
                self._store.update({(f, view): x for f, x in zip(todo, values, strict=True)
                                    if x is not None})
            else:
                for ok, pixels, errors in iter_pixel_batches(todo, self.image_size,
                                                             self.batch_size):
                    self._skip(errors)
                    if ok:
                        feats = self.run_trunk(transform(pixels)).astype(np.float16)
                        for f, x in zip(ok, feats, strict=True):
                            self._store[(f, view)] = x
                    bar.update(len(ok) + len(errors))
        self.seconds += time.perf_counter() - start

    def _skip(self, errors: dict[str, str]) -> None:
        """Remember (and log) the files that could not be decoded."""
        for f, reason in errors.items():
            log.warning("Skipping unreadable image %s", reason)
            self.unreadable[f] = reason

    @staticmethod
    def _pairs(files: Sequence[str], views: Sequence[str] | str) -> list[tuple[str, str]]:
        files = [os.fspath(f) for f in files]
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
            self._compute(todo, view)

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
            ``(len(files), *feature_shape)`` float16.

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
            return np.zeros((0, *self.feature_shape), np.float16)
        return np.stack([self._store[p] for p in pairs])

    def pooled_features(self, files: Sequence[str],
                        views: Sequence[str] | str = "orig") -> np.ndarray:
        """The backbone's own top blocks and average pooling over the trunk activations.

        Phase 1 of every classifier trained on this cache starts from these vectors (the top
        blocks still have the cache's weights then), so they are computed once per image and
        view and kept in memory: notebook 03's runs without and with augmentation, the winner's
        fine-tuning and the paper's protocol share them.

        Parameters
        ----------
        files : sequence of str
        views : str or sequence of str
            As in :meth:`compute`.

        Returns
        -------
        numpy.ndarray
            ``(len(files), channels)`` float32.
        """
        import keras

        pairs = self._pairs(files, views)
        if self.pooled:
            return self.features(files, views).astype(np.float32)
        missing = [p for p in dict.fromkeys(pairs) if p not in self._pooled]
        if missing and self._pool_model is None:
            _, top = split_backbone(self.backbone, self.unfreeze_blocks)
            acts = keras.Input(self.feature_shape, name="trunk_features")
            pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(top(acts,
                                                                              training=False))
            self._pool_model = keras.Model(acts, pooled, name="trunk_to_pooled")
        for start in range(0, len(missing), 512):  # float32 copies of 512 at most
            chunk = missing[start:start + 512]
            x = self.features([f for f, _ in chunk], [v for _, v in chunk]).astype(np.float32)
            out = self._pool_model.predict(x, batch_size=128, verbose=0)
            self._pooled.update(zip(chunk, np.asarray(out, np.float32), strict=True))
        if not pairs:
            return np.zeros((0, int(self.backbone.output.shape[-1])), np.float32)
        return np.stack([self._pooled[p] for p in pairs])

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


def make_dataset(
    files: Sequence[str],
    labels: np.ndarray | None = None,
    image_size: int = 299,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    augment: Any = None,
    cache: bool | str = True,
) -> Any:
    """A ``tf.data`` pipeline over image files, decoded by :func:`lfhelpers.images.load_rgb`.

    Parameters
    ----------
    files : sequence of str
        Image paths (all readable: :meth:`FeatureCache.readable` filters a frame).
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
        Random preprocessing layers applied to each batch.
    cache : bool or str
        Cache decoded images in memory (``True``) or in a file prefix (``str``).

    Returns
    -------
    tf.data.Dataset
        Batches of float32 pixels in [0, 255] (and labels).
    """
    quiet_tensorflow()
    import tensorflow as tf

    size = int(image_size)

    def load(path: bytes) -> np.ndarray:
        return load_rgb(path.decode("utf-8"), size).astype(np.float32)

    def decode(path: Any) -> Any:
        img = tf.numpy_function(load, [path], tf.float32, stateful=False)
        return tf.ensure_shape(img, (size, size, 3))

    ds = tf.data.Dataset.from_tensor_slices([os.fspath(f) for f in files])
    ds = ds.map(decode, num_parallel_calls=2, deterministic=True)
    if labels is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(
            np.asarray(labels, np.float32)))
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if shuffle:
        ds = ds.shuffle(max(len(files), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        def augment_batch(x: Any, *y: Any) -> Any:
            return (augment(x, training=True), *y) if y else augment(x, training=True)

        ds = ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
