"""Xception fine-tuning for item categories: top-1 and top-3 recommendations.

The model is ImageNet Xception without its top, then global average pooling, dropout and a
softmax layer (the tutorial's head). Training has two phases, as in the Keras "Transfer learning
& fine-tuning" guide:

1. the backbone is frozen and only the head is trained (Adam, ``learning_rate``);
2. the top ``unfreeze_blocks`` Xception blocks are unfrozen and trained together with the head at
   a low learning rate (``fine_tune_learning_rate``); BatchNorm layers stay frozen and in
   inference mode.

The part of the backbone below the unfrozen blocks (the *trunk*) never changes, so its output
for an image is computed once and kept in a :class:`~lfhelpers.models.features.FeatureCache`.
Phase 1 then trains on pooled features and costs next to nothing, and phase 2 trains the top
blocks on the cached trunk activations (``cache_trunk=True``, the CPU setting) instead of running
every image through the whole network each epoch. ``cache_trunk=False`` (a GPU setting) runs
phase 2 on the images themselves, with fresh online augmentation every epoch.

Models are built and trained under a ``tf.distribute`` strategy (``distribute``): several GPUs
are used together with ``"mirrored"`` (or ``"auto"`` when more than one is visible).

The saved model (``.keras``) takes raw RGB pixels (0-255) at ``image_size`` and outputs class
probabilities; its label list is saved next to it as ``<stem>.labels.json``
(:mod:`lfhelpers.models.predict`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight
from tqdm import tqdm

from lfhelpers.errors import ConfigError, DataError, LFError
from lfhelpers.fsutil import write_json
from lfhelpers.models.backbones import (
    array_batches,
    distribution_strategy,
    quiet_tensorflow,
    resolve_weights,
    set_seed,
)

quiet_tensorflow()  # before Keras loads it: no C++ start-up lines in the reports
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from lfhelpers.models.evaluation import evaluate_predictions, label_indices  # noqa: E402
from lfhelpers.models.features import FeatureCache, make_dataset, split_backbone  # noqa: E402


class EpochProgress(keras.callbacks.Callback):
    """One compact progress bar per training run: an epoch per step, the last scores shown."""

    def __init__(self, desc: str, total: int) -> None:
        super().__init__()
        self.desc, self.total, self.bar = desc, int(total), None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.bar = tqdm(total=self.total, desc=self.desc, unit="epoch", leave=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        shown = {k: f"{v:.3f}" for k, v in (logs or {}).items()
                 if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()


def _as_float32(x: Any, y: Any) -> tuple[Any, Any]:
    return tf.cast(x, tf.float32), y


def _one_hot(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    y = label_indices(labels, classes)
    out = np.zeros((len(y), len(classes)), np.float32)
    out[np.arange(len(y)), y] = 1.0
    return out


def _as_frame(data: pd.DataFrame | Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        if "file" not in data.columns:
            raise DataError("Expected a manifest frame with a 'file' column "
                            "(lfhelpers.data.read_manifest(..., absolute=True)).")
        return data
    return pd.DataFrame({"file": [os.fspath(p) for p in data]})


class XceptionClassifier:
    """Xception fine-tuned on a manifest: scikit-learn style ``fit`` / ``predict_proba``.

    Parameters
    ----------
    image_size : int
        Input side in pixels (at least 71; the tutorial used 299).
    weights : str, optional
        ``"imagenet"``, ``"none"``, a weights file or ``"auto"``; see
        :func:`lfhelpers.models.backbones.resolve_weights`.
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
        Weight classes inversely to their training counts (scikit-learn's
        ``compute_class_weight``).
    patience : int
        Early stopping: epochs without a better validation loss before stopping; the best
        epoch's weights are restored at the end of each phase. Needs validation data.
    fine_tune_patience : int, optional
        The same for phase 2 alone (``None``: ``patience``). An epoch of phase 2 costs a pass of
        the top blocks over the training set, so a CPU run stops at the first epoch that does
        not improve.
    augment_views : int
        Random augmented copies per training image (Keras preprocessing layers). With
        ``cache_trunk=True`` they are fixed copies computed once; with ``False`` phase 2
        augments online every epoch.
    cache_trunk : bool
        Phase 2 trains on cached trunk activations (fast on CPU) instead of the images.
    flip_tta : bool
        Test-time augmentation: predict the average of the image and its left-right mirror
        (the saved model does the same); costs one more trunk pass per predicted image.
    feature_cache : FeatureCache, optional
        A cache to share with other classifiers (same ``image_size``, ``weights`` and
        ``unfreeze_blocks``); a private one is made when omitted.
    distribute : {"auto", "mirrored", "default"}
        The ``tf.distribute`` strategy (:func:`lfhelpers.models.backbones.distribution_strategy`).
    log_dir : str, optional
        TensorBoard log folder (``phase1`` and ``phase2`` runs inside).
    seed : int
        Seeds Python, NumPy and Keras at the start of :meth:`fit`.
    progress : bool
        One progress bar per training phase (an epoch per step).

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
        fine_tune_patience: int | None = None,
        augment_views: int = 0,
        cache_trunk: bool = True,
        flip_tta: bool = False,
        feature_cache: FeatureCache | None = None,
        distribute: str = "auto",
        log_dir: str | None = None,
        seed: int = 0,
        progress: bool = True,
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
        self.fine_tune_patience = fine_tune_patience
        self.augment_views = augment_views
        self.cache_trunk = cache_trunk
        self.flip_tta = flip_tta
        self.feature_cache = feature_cache
        self.distribute = distribute
        self.log_dir = log_dir
        self.seed = seed
        self.progress = progress

    def _cache(self) -> FeatureCache:
        wanted = (int(self.image_size), resolve_weights("xception", self.weights),
                  int(self.unfreeze_blocks))
        cache = self.feature_cache
        if cache is None:
            return FeatureCache(self.image_size, self.weights, self.unfreeze_blocks,
                                batch_size=self.batch_size, seed=self.seed,
                                progress=self.progress)
        if cache.config != wanted:
            raise ConfigError(f"feature_cache was made for (image_size, weights, "
                              f"unfreeze_blocks) = {cache.config}, this classifier wants "
                              f"{wanted}. Make the cache with the classifier's settings.")
        return cache

    def _callbacks(self, phase: str, has_val: bool, epochs: int) -> list:
        callbacks: list = []
        patience = self.patience
        if phase == "phase2" and self.fine_tune_patience is not None:
            patience = self.fine_tune_patience
        if has_val and patience is not None and patience > 0:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(patience), restore_best_weights=True))
        if self.log_dir:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is not None:
                callbacks.append(keras.callbacks.TensorBoard(
                    log_dir=str(Path(self.log_dir) / phase), histogram_freq=0,
                    write_graph=False))
        if self.progress:
            callbacks.append(EpochProgress(f"training {phase}", epochs))
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
        seen = np.unique(y.argmax(axis=1))
        weights = compute_class_weight("balanced", classes=seen, y=y.argmax(axis=1))
        table = dict.fromkeys(range(y.shape[1]), 0.0)
        table.update({int(c): float(w) for c, w in zip(seen, weights, strict=True)})
        return table

    def _train_views(self, train: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
        views = list(train["view"]) if "view" in train.columns else ["orig"] * len(train)
        files, labels = list(train["file"]), list(train["label"])
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

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> XceptionClassifier:
        """Train on the ``train`` rows; early-stop and restore the best epoch on ``val``.

        Parameters
        ----------
        train : pandas.DataFrame
            Columns ``file`` (absolute path) and ``label``; optional ``view`` (a fixed view
            per row, used by :func:`lfhelpers.models.leak.augmentation_leak_demo`).
        val : pandas.DataFrame, optional
            Same columns; without it, every epoch is trained and the last one is kept.

        Returns
        -------
        XceptionClassifier
            ``self``.
        """
        start_time = time.perf_counter()
        set_seed(self.seed, deterministic=True)
        if len(train) == 0:
            raise DataError("The training set is empty. Check the manifest's train split.")
        cache = self._cache()
        train = cache.readable(_as_frame(train))
        val = cache.readable(_as_frame(val)) if val is not None and len(val) else None
        self.feature_cache_ = cache
        self.classes_ = sorted({str(c) for c in train["label"]})
        if len(self.classes_) < 2:
            raise DataError(f"Need at least two classes to train, found {self.classes_}.")
        files, views, labels = self._train_views(train)
        y_train = _one_hot(labels, self.classes_)
        x_train = cache.features(files, views)
        x_val = y_val = None
        if val is not None:
            y_val = _one_hot(list(val["label"]), self.classes_)
            x_val = cache.features(list(val["file"]),
                                   list(val["view"]) if "view" in val else "orig")
        self.n_train_ = len(files)
        self.history_ = pd.DataFrame()
        self.strategy_ = distribution_strategy(self.distribute)
        with self.strategy_.scope():
            self._fit_in_scope(cache, train, (files, views), val, x_train, y_train, x_val,
                               y_val)
        self.train_seconds_ = time.perf_counter() - start_time
        return self

    def _fit_in_scope(self, cache, train, train_views, val, x_train, y_train, x_val,
                      y_val) -> None:
        backbone = cache.new_backbone()
        backbone.trainable = False
        _, top = split_backbone(backbone, int(self.unfreeze_blocks))
        cut_in = keras.Input(x_train.shape[1:], name="trunk_features")
        if cache.pooled:
            features = cut_in
        else:
            pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")
            features = pooled(top(cut_in, training=False) if top is not None else cut_in)
        head = keras.Sequential([keras.Input((features.shape[-1],)),
                                 keras.layers.Dropout(float(self.dropout), seed=self.seed),
                                 keras.layers.Dense(len(self.classes_), activation="softmax",
                                                    name="predictions")], name="head")

        # Phase 1: the head alone, on pooled features computed once (kept by the cache).
        p_train = cache.pooled_features(*train_views)
        p_val = (cache.pooled_features(list(val["file"]),
                                       list(val["view"]) if "view" in val else "orig")
                 if x_val is not None else None)
        self._compile(head, self.learning_rate)
        weights = self._class_weights(y_train)
        hist = head.fit(p_train, y_train, batch_size=int(self.batch_size),
                        epochs=int(self.epochs), shuffle=True,
                        validation_data=(p_val, y_val) if p_val is not None else None,
                        class_weight=weights, verbose=0,
                        callbacks=self._callbacks("phase1", x_val is not None, self.epochs))
        done = self._record(hist, "1 head", 0)

        # Phase 2: the top blocks and the head, BatchNorm frozen and in inference mode.
        cut_model = keras.Model(cut_in, head(features), name="trunk_to_probabilities")
        self.head_, self.top_tuned_ = head, False
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
            self.top_tuned_ = True
        self.cut_model_ = cut_model
        self.model_ = self._assemble(backbone, top, head, tta=bool(self.flip_tta))

    def _fine_tune_cached(self, cut_model, x_train, y_train, x_val, y_val, weights, done):
        def dataset(x, y, shuffle):
            return array_batches(x, y, self.batch_size, self.seed if shuffle else None,
                                 _as_float32)

        self._compile(cut_model, self.fine_tune_learning_rate)
        hist = cut_model.fit(
            dataset(x_train, y_train, True), epochs=int(self.fine_tune_epochs), shuffle=False,
            validation_data=dataset(x_val, y_val, False) if x_val is not None else None,
            class_weight=weights, verbose=0,
            callbacks=self._callbacks("phase2", x_val is not None, self.fine_tune_epochs))
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
                         shuffle=False, class_weight=weights, verbose=0,
                         callbacks=self._callbacks("phase2", ds_val is not None,
                                                   self.fine_tune_epochs))
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
        pixels = keras.Input((size, size, 3), name="photo")
        mirrored = keras.ops.flip(pixels, axis=2)  # left-right
        both = keras.layers.Average(name="flip_average")([model(pixels), model(mirrored)])
        return keras.Model(pixels, both, name="xception_classifier_flip_tta")

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
            if not self.top_tuned_ and not self.flip_tta:
                # the top blocks kept the cache's weights: the head over the kept vectors
                return self.head_.predict(cache.pooled_features(files, views), batch_size=256,
                                          verbose=0)
            x = cache.features(files, views).astype(np.float32)
            proba = self.cut_model_.predict(x, batch_size=64, verbose=0)
            if self.flip_tta:
                if set(views) != {"orig"}:
                    raise ConfigError("flip_tta works on original images only (no 'view').")
                x = cache.features(files, "fliplr").astype(np.float32)
                proba = (proba + self.cut_model_.predict(x, batch_size=64, verbose=0)) / 2
            return proba
        from lfhelpers.models.predict import predict_pixels

        return predict_pixels(self.model_, list(frame["file"]), int(self.batch_size))

    def predict(self, data: pd.DataFrame | Sequence[str | os.PathLike[str]]) -> np.ndarray:
        """Most probable label per image (array of str)."""
        proba = self.predict_proba(data)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(axis=1)]

    def evaluate(self, df: pd.DataFrame) -> dict[str, Any]:
        """Loss, top-1, top-3, macro-F1, per-class table and confusion matrix on ``df``.

        Returns
        -------
        dict
            See :func:`lfhelpers.models.evaluation.evaluate_predictions`; plus ``proba``.
        """
        self._check_fitted()
        cache = getattr(self, "feature_cache_", None)
        if cache is not None:
            df = cache.readable(df)
        proba = self.predict_proba(df)
        result = evaluate_predictions(list(df["label"]), proba, self.classes_)
        result["proba"] = proba
        return result

    def save(self, path: str | os.PathLike[str]) -> list[Path]:
        """Save the model (``.keras``) and its labels (``<stem>.labels.json``) atomically.

        Returns
        -------
        list of pathlib.Path
            The two files written.
        """
        from lfhelpers.models.predict import labels_path

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
    def load(cls, path: str | os.PathLike[str],
             feature_cache: FeatureCache | None = None) -> XceptionClassifier:
        """Load a model saved by :meth:`save`.

        Parameters
        ----------
        path : path-like
            The ``.keras`` file.
        feature_cache : FeatureCache, optional
            The trunk activations the model was trained on (same size, weights and
            ``unfreeze_blocks``): it then predicts from them through its top blocks and head
            (a tenth of the network) instead of through the whole network.

        Returns
        -------
        XceptionClassifier
        """
        from lfhelpers.models.predict import load_model

        model, labels, meta = load_model(path)
        clf = cls(image_size=int(meta.get("image_size", model.input_shape[1])),
                  unfreeze_blocks=int(meta.get("unfreeze_blocks", 0)),
                  flip_tta=bool(meta.get("flip_tta", False)))
        clf.model_, clf.classes_, clf.feature_cache_ = model, labels, None
        clf.top_tuned_ = True  # unknown: predict through the saved top blocks
        if feature_cache is not None:
            clf.cut_model_ = _cut_model(model, feature_cache, clf)
            clf.feature_cache_ = feature_cache
        return clf


def _cut_model(model: keras.Model, cache: FeatureCache,
               clf: XceptionClassifier) -> keras.Model:
    """The saved classifier from the cache's trunk activations to its probabilities."""
    if (cache.image_size, cache.unfreeze_blocks) != (clf.image_size, clf.unfreeze_blocks) or \
            cache.pooled:
        raise ConfigError(f"The feature cache ({cache.image_size} px, unfreeze_blocks="
                          f"{cache.unfreeze_blocks}) does not match the saved model "
                          f"({clf.image_size} px, unfreeze_blocks={clf.unfreeze_blocks}).")
    acts = keras.Input(tuple(cache.feature_shape), name="trunk_features")
    x = model.get_layer("avg_pool")(model.get_layer("top_blocks")(acts))
    return keras.Model(acts, model.get_layer("head")(x), name="trunk_to_probabilities")
