"""A Dask client from one ``--scheduler`` value, for embeddings and haralick features alike.

``scheduler`` values:

* ``""`` / ``None``: no Dask (the caller runs in-process);
* ``"local"``: a local cluster with one single-threaded worker process per core;
* ``"local:N"``: a local cluster of ``N`` single-threaded worker processes;
* ``"tcp://HOST:8786"`` (or any address Dask's ``Client`` takes): a running scheduler
  (``dask scheduler`` on one machine, ``dask worker tcp://HOST:8786`` on each worker).

Embeddings (:func:`lfhelpers.similarity.batch.shards.embed_folder`) submit one task per partition of
files; haralick features run on the same client through joblib's Dask backend::

    with dask_client("local:2") as client, joblib.parallel_config(backend="dask"):
        features = HaralickFeatures(n_jobs=-1).transform(files)

Dask is an optional extra: ``pip install -e '.[dask]'`` (``make setup`` installs it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from lfhelpers.errors import ConfigError


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError("--scheduler needs Dask: pip install -e '.[dask]' (or "
                          "pip install 'dask[distributed]' pyarrow).") from exc
    return distributed


def parse_scheduler(scheduler: str | None) -> tuple[str, int | str | None]:
    """``("none", None)``, ``("local", n_workers)`` or ``("remote", address)``."""
    value = (scheduler or "").strip()
    if not value or value.lower() == "none":
        return "none", None
    if value.lower() == "local":
        return "local", os.cpu_count() or 1
    if value.lower().startswith("local:"):
        try:
            n = int(value.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"--scheduler {value!r}: use local:N with N >= 1 workers.")
        return "local", n
    if "://" in value or ":" in value:
        return "remote", value
    raise ConfigError(f"--scheduler {value!r}: use local, local:N or tcp://HOST:8786.")


def client_from(scheduler: str | None, **cluster_kwargs: Any) -> Any:
    """A ``distributed.Client`` for ``scheduler`` (see module), or ``None`` for no Dask.

    A local cluster started here is closed with the client (``client.close()``). Extra
    keyword arguments go to ``LocalCluster`` (e.g. ``memory_limit``).
    """
    kind, value = parse_scheduler(scheduler)
    if kind == "none":
        return None
    distributed = _distributed()
    if kind == "remote":
        return distributed.Client(value)
    kwargs = {"n_workers": value, "threads_per_worker": 1, "processes": True,
              "dashboard_address": None, **cluster_kwargs}
    cluster = distributed.LocalCluster(**kwargs)
    client = distributed.Client(cluster)
    original_close = client.close

    def close(*args: Any, **kw: Any) -> Any:
        out = original_close(*args, **kw)
        cluster.close()
        return out

    client.close = close
    return client


@contextlib.contextmanager
def dask_client(scheduler: str | None, **cluster_kwargs: Any) -> Iterator[Any]:
    """:func:`client_from` as a context manager (closes what it started)."""
    client = client_from(scheduler, **cluster_kwargs)
    try:
        yield client
    finally:
        if client is not None:
            client.close()
