"""The ``embed``, ``index`` and ``search`` commands (``python -m lfhelpers <verb>``).

``embed DATA_DIR --out EMB_DIR`` writes Parquet shards of embeddings (in-process, or on Dask
workers with ``--scheduler``); ``index EMB_DIR --out INDEX_DIR`` builds one nearest-neighbour
index (exact below ``--exact-below`` photos, else IVF; or the ``--kind`` asked for) of the
centred vectors (``--no-center``: as embedded) with its parameters, the gallery mean and the
embedding settings recorded; ``search INDEX_DIR IMAGE...`` embeds each photo
the same way and prints one JSON line per photo with its ``neighbours`` (path, label, score).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from lfhelpers.errors import ConfigError

log = logging.getLogger(__name__)

#: ``--kind`` of the ``index`` command -> index backend.
KINDS = {"auto": "auto", "exact": "exact", "ivf": "faiss-ivf", "hnsw": "faiss-hnsw"}


def embed_command(args: argparse.Namespace) -> int:
    """Handler of ``embed``; exit status 1 when some photos could not be read."""
    from lfhelpers.similarity.batch.distributed import dask_client
    from lfhelpers.similarity.batch.shards import embed_folder, embedding_spec

    spec = embedding_spec(args.backbone, args.weights, args.image_size, args.pooling,
                          args.flip, args.batch_size, args.seed)
    with dask_client(args.scheduler) as client:
        where = "in this process" if client is None else f"on {client.scheduler.address}"
        print(f"embedding with {spec['backbone']} ({spec.get('image_size', 'own')} px, "
              f"{spec['pooling']} pooling{', flip' if spec['flip'] else ''}) {where}",
              file=sys.stderr)
        report = embed_folder(args.data_dir, args.out, spec, client,
                              partition_size=args.partition_size, progress=not args.quiet)
    rate = report.n_embedded / report.seconds if report.seconds else 0.0
    print(f"photos: {report.n_photos}  already embedded: {report.n_done_before}  "
          f"embedded now: {report.n_embedded} ({rate:.1f}/s)  unreadable: "
          f"{len(report.errors)}  shards written: {len(report.shards)}  -> {report.out_dir}")
    return 1 if report.errors else 0


def index_command(args: argparse.Namespace) -> int:
    """Handler of ``index``."""
    from lfhelpers.similarity.batch.shards import SPEC_FILE, read_embeddings
    from lfhelpers.similarity.search.gallery import GalleryIndex

    emb_dir = Path(args.emb_dir)
    rows, vectors = read_embeddings(emb_dir)
    spec_file = emb_dir / SPEC_FILE
    spec = json.loads(spec_file.read_text(encoding="utf-8")) if spec_file.is_file() else {}
    params = {k: v for k, v in (("nlist", args.nlist), ("nprobe", args.nprobe),
                                ("encoding", args.encoding)) if v}
    gallery = GalleryIndex(backend=KINDS[args.kind], exact_below=args.exact_below,
                           center=args.center, **params).fit(vectors, rows["path"],
                                                             rows["label"])
    gallery.save(args.out, embedding=spec)
    idx = gallery.index_
    print(f"index of {idx.n_items_} vectors ({idx.dim_}-d): {idx.backend_} "
          f"{ {k: v for k, v in idx.params_.items() if k not in ('backend', 'metric')} }, "
          f"{'centred, ' if args.center else ''}"
          f"{idx.memory_bytes() / 2**20:.1f} MiB, built in {idx.build_seconds_:.1f} s "
          f"-> {args.out}")
    return 0


def search_command(args: argparse.Namespace) -> int:
    """Handler of ``search``: one JSON line per query photo; 1 when some could not be read."""
    from lfhelpers.similarity.batch.shards import embedder_from_spec
    from lfhelpers.similarity.search.gallery import GalleryIndex

    gallery = GalleryIndex.load(args.index_dir)
    if not gallery.embedding_:
        raise ConfigError(f"{args.index_dir} does not say how its vectors were made "
                          "(embedding.json); rebuild it with `python -m lfhelpers index`.")
    embedder = embedder_from_spec(gallery.embedding_)
    start = time.perf_counter()
    result = embedder.extract(args.images)
    k = min(args.k, gallery.n_items_)
    scores, idx = gallery.search(result.features, k) if len(result.features) else ([], [])
    row = 0
    for path, ok in zip(args.images, result.ok, strict=True):
        if not ok:
            print(json.dumps({"query": path, "error": result.errors.get(path, "unreadable")},
                             ensure_ascii=False))
            continue
        neighbours = [{"path": gallery.paths_[i], "label": str(gallery.labels_[i]),
                       "score": round(float(s), 6)}
                      for s, i in zip(scores[row], idx[row], strict=True) if i >= 0]
        print(json.dumps({"query": path, "neighbours": neighbours}, ensure_ascii=False))
        row += 1
    log.info("searched %d photos in %.2f s", len(args.images), time.perf_counter() - start)
    return 0 if result.ok.all() else 1
