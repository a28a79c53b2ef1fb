"""One content-addressed store for everything computed from a photo: :class:`ContentStore`.

Every extractor of the workbook keeps its per-photo results here: the Xception trunk's
activations (notebook 03, the audit, the fine-tuned model's embeddings in 06 and 07), the CNN
embeddings, the hand-made texture and colour features, the local keypoints. An entry is named
by the SHA-256 of the photo's bytes, inside a folder named by a digest of what else determines
the result (the *spec*: model weights, input size, layer, options, version), so

* a rerun, or another notebook with the same settings, reads instead of computing;
* a photo whose bytes changed, or a retrained model, is never served a stale entry;
* moving or renaming the photos keeps their entries.

Entries are written atomically (a killed run leaves no half-written file). A damaged entry is
set aside as ``<entry>.damaged`` with a logged reason and reported as missing, so it is
recomputed. Each folder keeps its spec as ``spec.json``, so a person can tell what it holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lfhelpers.fsutil import atomic_write

log = logging.getLogger(__name__)

#: What an entry holds: one array (``.npy``) or named arrays (``.npz``).
Entry = np.ndarray | dict[str, np.ndarray]


def spec_digest(spec: Mapping[str, Any]) -> str:
    """A short, stable digest of a JSON-able spec (16 hex characters)."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def bytes_digest(data: bytes) -> str:
    """SHA-256 (hex) of a photo's bytes: the name of its entries."""
    return hashlib.sha256(data).hexdigest()


class ContentStore:
    """Per-photo results on disk, named by the photo's content and the spec that made them.

    Parameters
    ----------
    folder : path-like
        Where the entries go (``<folder>/<ab>/<digest>.npy`` or ``.npz``).
    spec : mapping, optional
        What determines the entries besides the photo; written once as ``spec.json``.
    suffix : {".npy", ".npz"}
        One array per entry, or named arrays.

    Examples
    --------
    >>> store = ContentStore.under("data/cache/trunk", {"layer": "block13", "size": 224})
    ... # doctest: +SKIP
    >>> from lfhelpers.fsutil import sha256_file
    >>> store.put(sha256_file("photo.jpg"), activations)  # doctest: +SKIP
    """

    def __init__(self, folder: str | os.PathLike[str], spec: Mapping[str, Any] | None = None,
                 suffix: str = ".npy") -> None:
        if suffix not in (".npy", ".npz"):
            raise ValueError(f"suffix must be '.npy' or '.npz', not {suffix!r}.")
        self.folder = Path(folder)
        self.spec = dict(spec or {})
        self.suffix = suffix
        self._spec_written = False

    @classmethod
    def under(cls, root: str | os.PathLike[str], spec: Mapping[str, Any],
              suffix: str = ".npy") -> ContentStore:
        """The store of ``spec`` in a sub-folder of ``root`` named by :func:`spec_digest`."""
        return cls(Path(root) / spec_digest(spec), spec, suffix)

    @property
    def key(self) -> str:
        """The folder's name (the spec digest when made with :meth:`under`)."""
        return self.folder.name

    def path(self, digest: str) -> Path:
        """The file of the entry named ``digest``."""
        return self.folder / digest[:2] / f"{digest}{self.suffix}"

    def get(self, digest: str) -> Entry | None:
        """The entry, or ``None`` when it is missing or damaged (then set aside, logged)."""
        entry = self.path(digest)
        if not entry.is_file():
            return None
        try:
            if self.suffix == ".npy":
                return np.load(entry, allow_pickle=False)
            with np.load(entry, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            self.set_aside(digest, f"{type(exc).__name__}: {exc}")
            return None

    def set_aside(self, digest: str, reason: str) -> None:
        """Move a bad entry out of the way (``.damaged``), with a logged reason."""
        entry = self.path(digest)
        log.warning("Recomputing the damaged cache entry %s (%s); the file is kept as %s.damaged",
                    entry, reason, entry.name)
        try:
            os.replace(entry, entry.with_name(entry.name + ".damaged"))
        except OSError:
            pass

    def put(self, digest: str, value: Entry) -> None:
        """Write an entry atomically (and the folder's ``spec.json`` the first time)."""
        if not self._spec_written:
            spec_file = self.folder / "spec.json"
            if self.spec and not spec_file.is_file():
                with atomic_write(spec_file) as fh:
                    json.dump(self.spec, fh, indent=2, sort_keys=True, default=str)
            self._spec_written = True
        # not flushed to the disk one by one: an entry a power cut damaged is set aside and
        # recomputed by `get`
        with atomic_write(self.path(digest), "wb", durable=False) as fh:
            if self.suffix == ".npy":
                np.save(fh, np.asarray(value), allow_pickle=False)
            else:
                np.savez(fh, **dict(value))

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob(f"??/*{self.suffix}"))


def kept_results(cache_dir: str | os.PathLike[str] | None, folder: str,
                 *modules: Any) -> Any:
    """A :class:`joblib.Memory` that keeps a step's results under ``<cache_dir>/<folder>``.

    For steps whose result depends on their arguments and on code, not on the photos a rerun
    added (notebook 04's cross-validation of color models, the leak demo's training, 05's
    texture evaluation): ``joblib`` names a result by the function, its source and its
    arguments (arrays and frames hashed by content); the source files of ``modules`` name the
    sub-folder, so a change of the code they hold starts afresh.

    Parameters
    ----------
    cache_dir : path-like or None
        The cache root; ``None`` or ``""``: nothing is kept (``Memory(None)`` calls through).
    folder : str
        Sub-folder of ``cache_dir``.
    *modules : module
        Modules (or packages: every ``.py`` file of the package's folder) whose code the
        results depend on.

    Returns
    -------
    joblib.Memory
    """
    from joblib import Memory

    if not cache_dir:
        return Memory(None, verbose=0)
    return Memory(Path(cache_dir) / folder / code_digest(*modules), verbose=0)


def code_digest(*modules: Any) -> str:
    """A digest of the source files of ``modules``: kept results name their code by it.

    Parameters
    ----------
    *modules : module
        Modules, or packages (then every ``.py`` file of the package's folder, sorted).

    Returns
    -------
    str
        16 hex characters; it changes when any byte of those files does.
    """
    digest = hashlib.sha256()
    for module in modules:
        path = Path(module.__file__)
        files = sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]
        for file in files:
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
