"""Keras application backbones: which weights, how to build one, how to seed a run.

Shared by the classifier (:mod:`lfhelpers.models.xception`) and the embeddings
(:mod:`lfhelpers.similarity.features.cnn`), so that ``weights`` means the same everywhere:

* ``"imagenet"``: the Keras download (cached in ``~/.keras/models``);
* a weights file path;
* ``"none"``: random initialisation (seeded by Keras' global seed; for tests);
* ``""`` / ``"auto"`` / ``None``: the backbone's environment variable (``LF_XCEPTION_WEIGHTS``,
  ``LF_MOBILENET_WEIGHTS``, ...), else a local file named like Keras' own download in
  ``models/weights/`` (working folder or project folder) or ``$LF_DATA_MIRROR/../weights/``,
  else ``"imagenet"``.

TensorFlow and Keras are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfhelpers.errors import ConfigError, NetworkUnavailableError

#: Folder (relative to the working folder or the project) where local weight files live.
WEIGHTS_DIR = Path("models/weights")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one Keras application.

    Attributes
    ----------
    keras_name : str
        Class name in :mod:`keras.applications`.
    default_size : int
        Input side the ImageNet weights were trained at.
    min_size : int
        Smallest input side the network accepts.
    kwargs : dict
        Extra constructor arguments (e.g. MobileNet's ``alpha``).
    weights_env : str
        Environment variable naming a weights file (or ``imagenet``/``none``).
    weights_file : str
        File name Keras itself uses for the no-top ImageNet weights, looked for locally.
    """

    keras_name: str
    default_size: int
    min_size: int = 32
    kwargs: dict = field(default_factory=dict)
    weights_env: str = ""
    weights_file: str = ""


#: Backbones known by short name; any other ``keras.applications`` class name works too.
BACKBONES: dict[str, BackboneSpec] = {
    "xception": BackboneSpec("Xception", 299, 71, {}, "LF_XCEPTION_WEIGHTS",
                             "xception_imagenet_notop.weights.h5"),
    "mobilenet": BackboneSpec("MobileNet", 224, 32, {"alpha": 0.25}, "LF_MOBILENET_WEIGHTS",
                              "mobilenet_2_5_224_tf_no_top.h5"),
    "mobilenet_v2": BackboneSpec("MobileNetV2", 224, 32, {}, "LF_MOBILENET_V2_WEIGHTS",
                                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
    "inception_v3": BackboneSpec("InceptionV3", 299, 75, {}, "LF_INCEPTION_V3_WEIGHTS",
                                 "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inception_resnet_v2": BackboneSpec(
        "InceptionResNetV2", 299, 75, {}, "LF_INCEPTION_RESNET_V2_WEIGHTS",
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50": BackboneSpec("ResNet50", 224, 32, {}, "LF_RESNET50_WEIGHTS",
                             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet152_v2": BackboneSpec("ResNet152V2", 224, 32, {}, "LF_RESNET152_V2_WEIGHTS",
                                 "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "efficientnet_b0": BackboneSpec("EfficientNetB0", 224, 32, {}, "LF_EFFICIENTNET_B0_WEIGHTS",
                                    "efficientnetb0_notop.h5"),
}

#: ``backbone`` value that means "the fine-tuned classifier of notebook 03".
CLASSIFIER = "classifier"


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up lines (CUDA probing, oneDNN notices) discarded.

    The one place that does so: the notebooks' stages and the command line both call it.

    Those lines go straight to the process's standard error, past ``TF_CPP_MIN_LOG_LEVEL`` in
    recent TensorFlow builds; they would clutter every notebook report. Errors still raise.
    TensorFlow's own Python warnings (e.g. about retracing) are lowered to errors only.
    """
    if "tensorflow" not in sys.modules:
        # the C++ logging level, unless the user chose one; read when TensorFlow starts
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            import tensorflow as tf

            tf.config.list_physical_devices()  # the device probe prints too
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def backbone_spec(backbone: str) -> BackboneSpec:
    """Return the :class:`BackboneSpec` of a short name or a ``keras.applications`` class name.

    Raises
    ------
    ConfigError
        When the name is neither.
    """
    key = str(backbone).strip()
    if key.lower() in BACKBONES:
        return BACKBONES[key.lower()]
    import keras

    if key and key[0].isupper() and callable(getattr(keras.applications, key, None)):
        return BackboneSpec(key, 224)
    raise ConfigError(f"Unknown backbone {backbone!r}. Use one of {sorted(BACKBONES)}, "
                      f"'{CLASSIFIER}' (with model_path), or a keras.applications class name "
                      "such as 'DenseNet121'.")


def local_weight_files(name: str) -> list[Path]:
    """Where a local copy of the weights file ``name`` is looked for, in order."""
    roots = [Path.cwd() / WEIGHTS_DIR, Path(__file__).resolve().parents[2] / WEIGHTS_DIR]
    mirror = os.environ.get("LF_DATA_MIRROR", "").strip()
    if mirror:
        roots.append(Path(mirror).expanduser() / ".." / "weights")
    return [root / name for root in roots]


def resolve_weights(backbone: str = "xception",
                    weights: str | os.PathLike[str] | None = "auto") -> str | None:
    """Turn the ``weights`` parameter into what the Keras application takes.

    Parameters
    ----------
    backbone : str
        Backbone name (see :data:`BACKBONES`).
    weights : str or path-like, optional
        ``"imagenet"``, ``"none"``, a weights file, or ``""``/``"auto"``/``None``: the
        backbone's environment variable (e.g. ``LF_XCEPTION_WEIGHTS``), else a local file named
        like Keras' download in ``models/weights/`` or ``$LF_DATA_MIRROR/../weights/``, else
        ``"imagenet"``.

    Returns
    -------
    str or None
        ``"imagenet"``, an absolute file path, or ``None`` (random initialisation).

    Raises
    ------
    ConfigError
        When a named weights file does not exist.
    """
    spec = backbone_spec(backbone)
    value = "" if weights is None else os.fspath(weights).strip()
    if value.lower() == "auto":
        value = ""
    source = "weights"
    if not value and spec.weights_env:
        value = os.environ.get(spec.weights_env, "").strip()
        source = spec.weights_env
    if not value:
        for candidate in local_weight_files(spec.weights_file) if spec.weights_file else []:
            if candidate.is_file():
                return str(candidate.resolve())
        return "imagenet"
    if value.lower() == "none":
        return None
    if value.lower() == "imagenet":
        return "imagenet"
    path = Path(value).expanduser()
    if not path.is_file():
        known = spec.weights_file or "the no-top ImageNet file"
        raise ConfigError(
            f"{backbone} weights file {path} (from {source}) does not exist. Use 'imagenet', "
            f"'none', or an existing weights file (Keras calls it {known}; put it in "
            "models/weights/ to have it found).")
    return str(path.resolve())


def build_backbone(backbone: str, image_size: int | None = None,
                   weights: str | None = "imagenet",
                   pooling: str | None = "avg") -> tuple[Any, Callable, int]:
    """Build a Keras application without its top.

    Parameters
    ----------
    backbone : str
        Short name or ``keras.applications`` class name.
    image_size : int, optional
        Input side in pixels; default: the backbone's ImageNet size.
    weights : str or None
        As returned by :func:`resolve_weights`.
    pooling : {"avg", "max", None}
        Global pooling of the last feature map; ``None`` keeps the map itself.

    Returns
    -------
    model : keras.Model
        Input: preprocessed images; output: pooled features (or the last feature map).
    preprocess : callable
        The application's ``preprocess_input`` (pixels 0-255 to what the network expects).
    image_size : int
        The input side used.

    Raises
    ------
    ConfigError
        When ``image_size`` is below what the network accepts.
    NetworkUnavailableError
        When the ImageNet weights cannot be downloaded.
    """
    quiet_tensorflow()
    import keras

    spec = backbone_spec(backbone)
    size = int(image_size or spec.default_size)
    if size < spec.min_size:
        raise ConfigError(f"image_size {size} is too small for {backbone}: it needs at least "
                          f"{spec.min_size} px.")
    ctor = getattr(keras.applications, spec.keras_name)
    module = getattr(keras.applications, ctor.__module__.rsplit(".", 1)[-1], None)
    preprocess = getattr(module, "preprocess_input", None) or (lambda x: x)
    kwargs = {"include_top": False, "input_shape": (size, size, 3), "pooling": pooling,
              **spec.kwargs}
    if weights == "imagenet":
        try:
            model = ctor(weights="imagenet", **kwargs)
        except Exception as exc:  # noqa: BLE001 - any download failure gets the same advice
            raise NetworkUnavailableError(
                f"Could not get the ImageNet weights of {backbone} ({exc}). Connect once "
                f"(Keras caches the file), set {spec.weights_env or 'weights'} to a local "
                "weights file, or use 'none'.") from exc
    else:
        model = ctor(weights=None, **kwargs)
        if weights is not None:
            model.load_weights(weights)
    return model, preprocess, size


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and Keras (random initialisations, shuffles, t-SNE, K-means).

    Parameters
    ----------
    seed : int
        The run's seed.
    deterministic : bool
        Also make TensorFlow ops deterministic (same seed, same numbers on one machine; some
        ops get slower).
    """
    import keras

    keras.utils.set_random_seed(int(seed))
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def array_batches(x: Any, y: Any, batch_size: int, seed: int | None = None,
                  transform: Callable[..., Any] | None = None) -> Any:
    """Batches of in-memory arrays for ``fit``: a ``tf.data`` pipeline with fixed buffers.

    Reshuffled each epoch with ``seed`` (``None``: in order), ``transform`` mapped over each
    batch, two batches prefetched, and tf.data's autotuning thread off: at the end of each
    epoch Keras drops the epoch's iterator, and dropping it waits for that thread, which sleeps
    between two optimisations for longer and longer (up to about the length of an epoch); while
    other processes ran beside it, notebook 03's fine-tuning stood still for up to 20 s at an
    epoch's end, every thread of the kernel asleep. With fixed buffers there is nothing to tune.

    Parameters
    ----------
    x, y : array-like
        Inputs and targets, one row per example.
    batch_size : int
    seed : int, optional
        Shuffle seed.
    transform : callable, optional
        ``(x_batch, y_batch) -> (x_batch, y_batch)``.

    Returns
    -------
    tf.data.Dataset
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size))
    if transform is not None:
        ds = ds.map(transform)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def distribution_strategy(distribute: str = "auto") -> Any:
    """The ``tf.distribute`` strategy that builds and trains a model.

    Parameters
    ----------
    distribute : {"auto", "mirrored", "default"}
        ``"mirrored"``: :class:`tf.distribute.MirroredStrategy` over every visible GPU (or,
        without GPUs, every logical CPU device); ``"default"``: the default (single-device)
        strategy; ``"auto"``: mirrored when several GPUs are visible, else default.

    Returns
    -------
    tf.distribute.Strategy

    Raises
    ------
    ConfigError
        For another value.
    """
    import tensorflow as tf

    value = str(distribute or "auto").strip().lower()
    if value not in ("auto", "mirrored", "default"):
        raise ConfigError(f"distribute must be 'auto', 'mirrored' or 'default', not "
                          f"{distribute!r}.")
    gpus = tf.config.list_logical_devices("GPU")
    if value == "mirrored" or (value == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()
