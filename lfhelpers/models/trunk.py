"""The one store of Xception trunk activations, shared by the whole workbook.

Notebook 03 runs the frozen part of Xception (the *trunk*, up to the input of block 14) once per
photo; notebooks 06 and 07, the audit and ``embed``/``search`` get the fine-tuned model's
embedding of a photo from those activations through block 14 and the pooling (a tenth of the
network) instead of a second pass over the whole network, and ImageNet Xception at the same size
gets its embedding the same way.

The activations live in a :class:`lfhelpers.store.ContentStore` under ``<cache_dir>/trunk``,
one folder per backbone, input size, layer and **digest of the trunk's weights**: a classifier
fine-tuned on top of the frozen ImageNet trunk finds the activations that notebook 03 computed,
while one whose trunk was retrained (more blocks unfrozen, other weights) gets a folder of its
own and never a stale entry. Entries are float16, ``(size/32)**2 * 1024 * 2`` bytes per photo
(100 KB at 224 px). Notebook 03 may compute them on OpenVINO in bfloat16 and a later reader
on Keras in float32: both are kept as float16, and the classifier was trained on the former.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import sha256_file
from lfhelpers.images import load_rgb
from lfhelpers.store import ContentStore

log = logging.getLogger(__name__)

#: What can run a trunk: TensorFlow (Keras) or an OpenVINO copy of the same network.
TRUNK_ENGINES = ("keras", "openvino")
#: Arithmetic of the OpenVINO copy ("bfloat16" where the CPU has it: AMX, AVX-512 BF16).
TRUNK_PRECISIONS = ("float32", "bfloat16")

#: Version of the entries' layout; a change starts a new folder.
TRUNK_VERSION = 1
#: Sub-folder of a notebook's ``cache_dir`` that holds the trunk activations.
TRUNK_FOLDER = "trunk"


def check_engine(engine: str, precision: str) -> None:
    """Raise :class:`ConfigError` unless ``engine`` and ``precision`` are known values."""
    if engine not in TRUNK_ENGINES:
        raise ConfigError(f"engine must be one of {TRUNK_ENGINES}, not {engine!r}.")
    if precision not in TRUNK_PRECISIONS:
        raise ConfigError(f"precision must be one of {TRUNK_PRECISIONS}, not {precision!r}.")


def openvino_runner(model: Any, image_size: int, precision: str = "float32"
                    ) -> tuple[Callable[[np.ndarray], np.ndarray], str] | None:
    """An OpenVINO copy of a Keras model that takes square images (same weights, converted
    once), or ``None`` (with a logged note) when the ``openvino`` package is missing.

    Parameters
    ----------
    model : keras.Model
        Input ``(batch, image_size, image_size, 3)`` float32.
    image_size : int
        Input side in pixels.
    precision : {"float32", "bfloat16"}
        ``"bfloat16"`` lets OpenVINO compute in bfloat16 where the CPU has it (AMX, AVX-512
        BF16: several times faster than TensorFlow in float32 on 2 cores); elsewhere float32.

    Returns
    -------
    (run, precision) or None
        ``run`` maps a float32 batch to the first output as float32; ``precision`` is the one
        used.
    """
    import warnings

    try:
        import openvino as ov
    except ImportError:
        log.warning("engine='openvino' asked for, but the openvino package is not installed "
                    "(pip install openvino): using Keras.")
        return None
    core = ov.Core()
    if precision == "bfloat16" and "BF16" not in core.get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"):
        log.warning("This CPU has no bfloat16 support: the trunk runs in float32.")
        precision = "float32"
    shape = [-1, int(image_size), int(image_size), 3]
    with warnings.catch_warnings():  # Keras notes the input's name during tracing
        warnings.filterwarnings("ignore", "The structure of `inputs`", UserWarning)
        converted = ov.convert_model(model, input=[(shape, ov.Type.f32)])
        # THROUGHPUT: one stream per core or two, each batch split across them. Measured on
        # 2 cores: as fast as LATENCY (one stream over both cores) alone, and 1.5-2x faster
        # while another process (a notebook beside it, even at a lower priority) takes a core
        # now and then: LATENCY's threads wait for each other at every layer
        compiled = core.compile_model(converted, "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
            "PERFORMANCE_HINT": "THROUGHPUT"})
    streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    queue = ov.AsyncInferQueue(compiled, streams)
    results: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, index: results.__setitem__(
        index, np.array(request.get_output_tensor(0).data, np.float32)))
    lock = threading.Lock()

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        parts = [part for part in np.array_split(x, streams) if len(part)]
        with lock:  # one batch at a time (the compiled model's own request, or the queue)
            if len(parts) <= 1:
                return np.asarray(compiled(x)[0], np.float32)
            results.clear()
            for index, part in enumerate(parts):
                queue.start_async({0: part}, index)
            queue.wait_all()
            return np.concatenate([results[i] for i in range(len(parts))])

    return run, precision


def weights_digest(model: Any) -> str:
    """SHA-256 (16 hex characters) of a Keras model's weights, in order, with their shapes."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight), dtype=np.float32)
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def trunk_layer(model: Any) -> str:
    """The last Xception block in a trunk model (``"block13"``), nested models included."""
    def names(m: Any) -> list[str]:
        found: list[str] = []
        for lay in getattr(m, "layers", []):
            if getattr(lay, "layers", None):
                found += names(lay)
            elif lay.name.startswith("block"):
                found.append(lay.name.split("_")[0])
        return found

    found = names(model)
    return found[-1] if found else "unknown"


def trunk_store(cache_dir: str | os.PathLike[str] | None, trunk: Any, image_size: int,
                backbone: str = "xception") -> ContentStore | None:
    """The store of ``trunk``'s activations under ``cache_dir`` (``None`` without a cache).

    Parameters
    ----------
    cache_dir : path-like or None
        The notebooks' cache root (``data/cache``); the store is its ``trunk/`` sub-folder.
    trunk : keras.Model
        Pixels after the backbone's scaling to the trunk's output (its weights name the store).
    image_size : int
        Input side in pixels.
    backbone : str
        Backbone family (part of the spec).

    Returns
    -------
    ContentStore or None
    """
    if not cache_dir:
        return None
    spec = {"what": "trunk activations (float16)", "backbone": backbone,
            "image_size": int(image_size), "layer": trunk_layer(trunk),
            "output_shape": [int(d) for d in trunk.output.shape[1:]],
            "weights": weights_digest(trunk), "version": TRUNK_VERSION}
    return ContentStore.under(Path(cache_dir) / TRUNK_FOLDER, spec)


def iter_pixel_batches(
    files: Sequence[str], image_size: int, batch_size: int, workers: int = 2,
) -> Iterator[tuple[list[str], np.ndarray, dict[str, str]]]:
    """Decode files with :func:`lfhelpers.images.load_rgb` in a thread pool, in batches.

    Yields
    ------
    files : list of str
        The readable files of the batch, in order.
    pixels : numpy.ndarray
        Their ``(n, image_size, image_size, 3)`` ``uint8`` pixels.
    errors : dict
        ``{file: reason}`` for the batch's unreadable files.
    """
    def load(path: str) -> np.ndarray | str:
        try:
            return load_rgb(path, image_size)
        except DataError as exc:
            return str(exc)

    chunks = [list(files[i:i + batch_size]) for i in range(0, len(files), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = [[pool.submit(load, f) for f in chunk] for chunk in chunks[:2]]
        for index, chunk in enumerate(chunks):
            if index + 2 < len(chunks):
                pending.append([pool.submit(load, f) for f in chunks[index + 2]])
            results = [fut.result() for fut in pending.pop(0)]
            ok = [(f, r) for f, r in zip(chunk, results, strict=True) if not isinstance(r, str)]
            errors = {f: r for f, r in zip(chunk, results, strict=True) if isinstance(r, str)}
            pixels = (np.stack([r for _, r in ok]) if ok
                      else np.zeros((0, image_size, image_size, 3), np.uint8))
            yield [f for f, _ in ok], pixels, errors


def stored_activations(
    files: Sequence[str], store: ContentStore, run: Callable[[np.ndarray], np.ndarray],
    image_size: int, batch_size: int, digests: Sequence[str | None] | None = None,
    on_done: Callable[[int], None] | None = None,
) -> tuple[list[np.ndarray | None], dict[str, str], int]:
    """Trunk activations of ``files``: read from ``store``, the missing ones computed and kept.

    Parameters
    ----------
    files : sequence of str
        Photo paths.
    store : ContentStore
        From :func:`trunk_store`.
    run : callable
        ``(n, size, size, 3)`` pixels 0-255 to ``(n, ...)`` activations.
    image_size, batch_size : int
        Decoding size and the trunk's batch.
    digests : sequence, optional
        The files' SHA-256 when the caller has them already.
    on_done : callable, optional
        Called with the number of photos finished (a progress bar's ``update``).

    Returns
    -------
    activations : list
        float16 arrays in input order, ``None`` for an unreadable photo.
    errors : dict
        ``{file: reason}`` of the unreadable photos.
    n_stored : int
        Photos read from the store.
    """
    out: list[np.ndarray | None] = [None] * len(files)
    errors: dict[str, str] = {}
    todo: list[int] = []
    keys: list[str | None] = list(digests) if digests is not None else [None] * len(files)
    for i, path in enumerate(files):
        try:
            keys[i] = keys[i] or sha256_file(path)
        except OSError as exc:
            errors[path] = f"{type(exc).__name__}: {exc}"
            continue
        value = store.get(keys[i])
        if value is not None:
            out[i] = value
        else:
            todo.append(i)
    n_stored = len(files) - len(todo) - len(errors)
    if on_done is not None and len(files) - len(todo):
        on_done(len(files) - len(todo))
    where: dict[str, list[int]] = {}
    for i in todo:
        where.setdefault(files[i], []).append(i)
    for ok, pixels, bad in iter_pixel_batches(list(where), image_size, batch_size):
        errors.update(bad)
        if ok:
            batch = np.asarray(run(pixels), np.float32).astype(np.float16)
            for path, value in zip(ok, batch, strict=True):
                store.put(keys[where[path][0]], value)
                for i in where[path]:
                    out[i] = value
        if on_done is not None:
            on_done(sum(len(where[p]) for p in [*ok, *bad]))
    return out, errors, n_stored
