"""The ``embed``, ``index`` and ``search`` commands (``python -m lfhelpers <verb>``).

``embed DATA_DIR --out EMB_DIR`` writes Parquet shards of embeddings (in-process, or on Dask
workers with ``--scheduler``); ``index EMB_DIR --out INDEX_DIR`` builds the search engine
(:class:`~lfhelpers.similarity.search.engine.SearchEngine`) of the shards: one nearest-neighbour
index (exact below ``--exact-below`` photos, else IVF; or the ``--kind`` asked for) with the
recipe's post-processing fitted on the gallery, and the local features and visual words of every
photo for same-item verification, the recipe saved beside them; ``search INDEX_DIR IMAGE...``
embeds each photo by that recipe and prints one JSON line per photo with its ``neighbours``
(path, label, score, inliers, same_item), verified same items first (``--no-verify``: the
global ranking alone).
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
    from lfhelpers.similarity.batch.shards import embed_folder
    from lfhelpers.similarity.search.recipe import embedding_spec

    backbone = args.backbone
    kind, _, model = backbone.partition(":")
    if model and kind.lower() in ("finetuned", "classifier"):  # on the command line a relative
        backbone = f"{kind}:{Path(model).expanduser().resolve()}"  # path means this folder
    spec = embedding_spec(backbone, args.weights, args.image_size, args.pooling,
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


def recipe_from_spec(spec: dict, **changes: object) -> object:
    """The :class:`~lfhelpers.similarity.search.recipe.Recipe` of vectors made with ``spec``."""
    from lfhelpers.similarity.search.recipe import Recipe

    if spec.get("backbone") == "classifier":
        base = {"backbone": f"finetuned:{spec['model_path']}", "pooling": "avg"}
    else:
        base = {"backbone": spec["backbone"], "weights": spec.get("weights") or "none",
                "image_size": int(spec.get("image_size") or 0), "pooling": spec["pooling"]}
    base.update(flip=bool(spec.get("flip", False)), batch_size=int(spec.get("batch_size", 32)),
                seed=int(spec.get("seed", 0)))
    return Recipe.from_dict(base).replace(**changes)


def index_command(args: argparse.Namespace) -> int:
    """Handler of ``index``."""
    from lfhelpers.similarity.batch.shards import SPEC_FILE, read_embeddings
    from lfhelpers.similarity.search.engine import SearchEngine
    from lfhelpers.similarity.search.postprocess import parse_steps

    emb_dir = Path(args.emb_dir)
    rows, vectors = read_embeddings(emb_dir)
    spec_file = emb_dir / SPEC_FILE
    if not spec_file.is_file():
        raise ConfigError(f"{emb_dir} does not say how its vectors were made ({SPEC_FILE}); "
                          "make it with `python -m lfhelpers embed`.")
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    steps = [s for s in parse_steps(args.postprocess) if args.center or s != "center"]
    recipe = recipe_from_spec(spec, postprocess="+".join(steps) or "none",
                              backend=KINDS[args.kind], same_item=args.same_item)
    params = {k: v for k, v in (("nlist", args.nlist), ("nprobe", args.nprobe),
                                ("encoding", args.encoding)) if v}
    start = time.perf_counter()
    engine = SearchEngine(recipe, cache_dir=args.cache_dir, exact_below=args.exact_below,
                          **params).fit(vectors, rows["path"], rows["label"])
    engine.save(args.out, embedding=spec)
    idx = engine.gallery_.index_
    local = (f", local features of {len(engine.store_)} photos "
             f"({engine.store_.nbytes / max(len(engine.store_), 1) / 1024:.0f} KiB each), "
             f"{engine.words_.n_words_} visual words" if engine.store_ is not None else "")
    print(f"index of {idx.n_items_} vectors ({idx.dim_}-d): {idx.backend_} "
          f"{ {k: v for k, v in idx.params_.items() if k not in ('backend', 'metric')} }, "
          f"post-processing {recipe.postprocess}{local}, "
          f"{idx.memory_bytes() / 2**20:.1f} MiB, built in {time.perf_counter() - start:.1f} s "
          f"-> {args.out}")
    return 0


def search_command(args: argparse.Namespace) -> int:
    """Handler of ``search``: one JSON line per query photo; 1 when some could not be read."""
    from lfhelpers.similarity.search.engine import SearchEngine

    engine = SearchEngine.load(args.index_dir, cache_dir=args.cache_dir)
    start = time.perf_counter()
    result = engine.embedder().extract(args.images)
    ok = [p for p, good in zip(args.images, result.ok, strict=True) if good]
    found = (engine.search(ok, args.k, verify=not args.no_verify, vectors=result.features)
             if ok else [])
    row = 0
    for path, good in zip(args.images, result.ok, strict=True):
        if not good:
            print(json.dumps({"query": path, "error": result.errors.get(path, "unreadable")},
                             ensure_ascii=False))
            continue
        print(json.dumps({"query": path, "neighbours": found[row]}, ensure_ascii=False))
        row += 1
    log.info("searched %d photos in %.2f s", len(args.images), time.perf_counter() - start)
    return 0 if result.ok.all() else 1
