"""Embeddings of a whole photo set as Parquet shards, in-process or on Dask workers; resumable.

``embed_folder(DATA_DIR, EMB_DIR)`` embeds every photo of a clean set (``manifest.csv``) or a
folder of class sub-folders and writes ``EMB_DIR/part-<time>-<n>.parquet`` shards with the
columns ``path, label, sha256, size, mtime_ns, embedding`` (a fixed-size list of float32, L2-
normalised) and ``EMB_DIR/embedding.json``: what made the vectors (backbone, weights and their
SHA-256, image size, pooling, flip, post-processing). A rerun embeds only the photos without a
shard row, or whose size or modification time changed; :func:`read_embeddings` keeps the
newest row of each path. An ``EMB_DIR`` made with other settings is refused, never mixed.

The files are split into partitions of ``partition_size``; with a Dask client each partition
is one task. A worker process builds its embedder once (:func:`worker_embedder` caches it per
process and settings) and reuses it for every later task; only paths go out and vectors come
back, and the driver writes the shards. The photos must be readable on every worker under the
same paths (a shared file system). The vectors are the same whatever the scheduler: each
batch is padded to the same size, so every photo meets the same compiled network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfhelpers.data.manifest import list_photos
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write, sha256_file
from lfhelpers.similarity.search.recipe import embedder_from_spec, embedding_spec

log = logging.getLogger(__name__)

SPEC_FILE = "embedding.json"
_EMBEDDERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def worker_embedder(spec: dict[str, Any]) -> Any:
    """The embedder of this process for ``spec``, built on first use and then reused."""
    key = _key(spec)
    with _LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = embedder_from_spec(spec)
        return _EMBEDDERS[key]


def embed_partition(spec: dict[str, Any], rows: list[dict[str, Any]]
                    ) -> tuple[pd.DataFrame, np.ndarray, dict[str, str]]:
    """Embed one partition of ``{path, label, size, mtime_ns}`` rows (runs on a worker).

    Returns the kept rows (with ``sha256``), their vectors and ``{path: reason}`` of the
    photos that could not be read.
    """
    embedder = worker_embedder(spec)
    paths = [r["path"] for r in rows]
    result = embedder.extract(paths)
    kept = pd.DataFrame([r for r, ok in zip(rows, result.ok, strict=True) if ok],
                        columns=["path", "label", "size", "mtime_ns"])
    kept.insert(2, "sha256", [sha256_file(p) for p in kept["path"]])
    return kept, result.features.astype(np.float32), dict(result.errors)


@dataclass
class EmbedReport:
    """What :func:`embed_folder` did."""

    out_dir: Path
    n_photos: int
    n_done_before: int
    n_embedded: int
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    shards: list[Path] = field(default_factory=list)


def _write_shard(out_dir: Path, kept: pd.DataFrame, vectors: np.ndarray, n: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    table = pa.Table.from_pandas(kept.reset_index(drop=True), preserve_index=False)
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
    table = table.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, dim))
    # nanoseconds: two runs within one second must not overwrite each other's shards, and the
    # names sort in the order written (read_embeddings keeps the newest row of a path)
    path = out_dir / f"part-{time.time_ns():020d}-{os.getpid()}-{n:06d}.parquet"
    with atomic_write(path, "wb") as fh:
        pq.write_table(table, fh)
    return path


def read_embeddings(emb_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """All shard rows (newest per path) and their vectors, rows aligned.

    Raises
    ------
    DataError
        When ``emb_dir`` holds no shards.
    """
    emb_dir = Path(emb_dir)
    shards = sorted(emb_dir.glob("part-*.parquet"))
    if not shards:
        raise DataError(f"No embedding shards in {emb_dir}; make them with "
                        "`python -m lfhelpers embed DATA_DIR --out EMB_DIR`.")
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames, vectors = [], []
    for shard in shards:
        try:
            table = pq.read_table(shard)
        except (pa.ArrowException, OSError) as exc:
            # a damaged shard (truncated, not Parquet) is set aside, never deleted, and its
            # photos count as not embedded, so the next `embed` embeds them again
            kept = shard.with_name(shard.name + ".damaged")
            shard.rename(kept)
            log.warning("Damaged embedding shard %s set aside as %s (%s); its photos will be "
                        "embedded again", shard.name, kept.name, exc)
            continue
        col = table.column("embedding").combine_chunks()
        dim = col.type.list_size
        vectors.append(col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim))
        frames.append(table.drop_columns(["embedding"]).to_pandas())
    if not frames:
        raise DataError(f"No readable embedding shards in {emb_dir}; make them again with "
                        "`python -m lfhelpers embed DATA_DIR --out EMB_DIR`.")
    rows = pd.concat(frames, ignore_index=True)
    x = np.vstack(vectors).astype(np.float32)
    keep = ~rows["path"].duplicated(keep="last")
    return rows[keep].reset_index(drop=True), x[keep.to_numpy()]


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


def embed_folder(data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                 spec: dict[str, Any] | None = None, client: Any = None,
                 partition_size: int = 256, progress: bool = True) -> EmbedReport:
    """Embed the photos of ``data_dir`` that have no up-to-date row in ``out_dir``.

    Parameters
    ----------
    data_dir : path-like
        Clean set (``manifest.csv``) or folder of class sub-folders.
    out_dir : path-like
        Shard folder (created); reruns resume.
    spec : dict, optional
        From :func:`~lfhelpers.similarity.search.recipe.embedding_spec` (default: the
        recipe's defaults).
    client : distributed.Client, optional
        Run one task per partition on this client; ``None``: in this process.
    partition_size : int
        Photos per partition (task and shard).
    progress : bool

    Returns
    -------
    EmbedReport
    """
    from tqdm import tqdm

    start = time.perf_counter()
    spec = spec or embedding_spec()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_file = out_dir / SPEC_FILE
    if spec_file.is_file():
        old = json.loads(spec_file.read_text(encoding="utf-8"))
        if old != spec:
            changed = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
            raise ConfigError(f"{out_dir} holds embeddings made with other settings "
                              f"({', '.join(changed)} differ); use another --out folder.")
    else:
        with atomic_write(spec_file) as fh:
            json.dump(spec, fh, indent=2)
    photos = list_photos(data_dir)  # the one photo lister (a foreign manifest is ignored)
    stats = [_stat(p) for p in photos["path"]]
    photos["size"] = [s for s, _ in stats]
    photos["mtime_ns"] = [m for _, m in stats]
    done = 0
    old_rows = None
    if any(out_dir.glob("part-*.parquet")):
        try:
            old_rows, _ = read_embeddings(out_dir)
        except DataError:  # every shard was damaged and set aside: embed everything again
            old_rows = None
    if old_rows is not None:
        known = set(zip(old_rows["path"], old_rows["size"], old_rows["mtime_ns"], strict=True))
        fresh = [(p, s, m) in known for p, s, m in zip(photos["path"], photos["size"],
                                                        photos["mtime_ns"], strict=True)]
        done = int(np.sum(fresh))
        photos = photos[~np.asarray(fresh, bool)]
    records = photos.to_dict("records")
    parts = [records[i:i + partition_size] for i in range(0, len(records), partition_size)]
    report = EmbedReport(out_dir, len(records) + done, done, 0)
    bar = tqdm(total=len(records), desc="embed", unit="img", disable=not progress or not parts)

    def collect(result: tuple[pd.DataFrame, np.ndarray, dict[str, str]], n: int) -> None:
        kept, vectors, errors = result
        if len(kept):
            report.shards.append(_write_shard(out_dir, kept, vectors, n))
        report.n_embedded += len(kept)
        report.errors.update(errors)
        bar.update(len(kept) + len(errors))

    if client is None:
        for n, part in enumerate(parts):
            collect(embed_partition(spec, part), n)
    else:
        from distributed import as_completed

        futures = {client.submit(embed_partition, spec, part, pure=False): n
                   for n, part in enumerate(parts)}
        for future in as_completed(futures):
            collect(future.result(), futures[future])
    bar.close()
    for path, reason in report.errors.items():
        log.warning("Skipped %s: %s", path, reason)
    report.seconds = time.perf_counter() - start
    return report


def shard_paths(emb_dir: str | os.PathLike[str]) -> Sequence[Path]:
    """The shard files of ``emb_dir``, oldest first."""
    return sorted(Path(emb_dir).glob("part-*.parquet"))
