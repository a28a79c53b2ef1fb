"""Search at scale: build and query a gallery index of N vectors vs the tutorial's full matrix.

For N = 1k, 10k and 100k unit vectors of 2048 numbers (the size of an Xception or Inception v3
embedding), each method is built once and queried with vectors from outside the gallery:

* ``pdist`` (the baseline, the tutorial's way): ``squareform(pdist(X, "cosine"))``, the full
  N × N distance matrix, then an ``argsort`` of the query's row. It needs N² float64 numbers
  (plus the condensed half while it is built), so it is run only while that fits in
  ``--pdist-max-gib``; beyond, its memory is reported and the row says where it stops fitting.
  Its query latency is the ``argsort`` of one row plus the ``cdist`` of a new photo against the
  gallery (a new photo is not in the precomputed matrix).
* ``exact``: :class:`lfhelpers.similarity.search.gallery.GalleryIndex` default, one float32
  matrix product per query block, exact cosine.
* ``sklearn``: ``GalleryIndex(backend="sklearn")``, i.e. the scikit-learn backend of
  :class:`lfhelpers.similarity.search.index.NeighbourIndex` (``NearestNeighbors``, cosine, brute).
* ``faiss-hnsw`` / ``faiss-ivf`` / ``hnswlib``: approximate indexes behind the same API, when
  installed
  (``pip install faiss-cpu`` / ``hnswlib``); their recall@10 against the exact answer is
  reported.

Query latency is measured one query at a time (a lost photo arrives alone), median over
``--queries`` queries, embedding time not included; ``batch_ms_per_query`` is the cost per
query when all are sent at once. Memory (``memory_mb``): for ``pdist`` the matrices it needs;
for an index the size of its structure (its copy of the vectors, graph links), with
``rss_growth_mb`` the growth of the process while building it (the input vectors are made
before and not counted; freed memory is reused, so this is a rough figure).

The vectors are synthetic but not uniform: ``N / 100`` cluster centres plus noise, so that
nearest neighbours are meaningful for the approximate indexes.

Usage::

    python benchmarks/bench_search.py [--sizes 1000,10000,100000] [--dim 2048] [--queries 100]
        [--backends exact,sklearn,faiss-hnsw,faiss-ivf,hnswlib] [--pdist-max-gib 4]
        [--out benchmarks/results/bench_search.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist, pdist, squareform

from lfhelpers.fsutil import write_json
from lfhelpers.similarity.search.backends import available_backends
from lfhelpers.similarity.search.gallery import GalleryIndex

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def total_memory_bytes() -> int:
    """Physical memory of the machine."""
    return os.sysconf("SC_PHYS_PAGES") * PAGE


def make_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` unit float32 vectors around ``max(n // 100, 10)`` centres (made in chunks)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(n // 100, 10), dim), dtype=np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        out[start:start + m] = centres[rng.integers(0, len(centres), m)]
        out[start:start + m] += 0.8 * rng.standard_normal((m, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def query_latency(search, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Median milliseconds of ``search(q[None], k)`` over the queries, and the answers."""
    search(queries[:1], k)  # warm-up
    times, answers = [], []
    for q in queries:
        t = time.perf_counter()
        _, idx = search(q[None], k)
        times.append(time.perf_counter() - t)
        answers.append(idx[0])
    return 1000 * float(np.median(times)), np.array(answers)


def bench_pdist(x: np.ndarray, queries: np.ndarray, k: int, max_gib: float) -> dict:
    """The tutorial's full distance matrix, when it fits."""
    n = len(x)
    need = n * n * 8 + n * (n - 1) // 2 * 8  # square matrix + condensed half while building
    row = {"method": "pdist", "n": n, "memory_mb": need / 2**20,
           "fits_in_memory": need < total_memory_bytes()}
    if need > max_gib * 2**30:
        why = "over --pdist-max-gib" if row["fits_in_memory"] else "more than this machine has"
        row["note"] = f"not run: needs {need / 2**30:.1f} GiB ({why})"
        return row
    t = time.perf_counter()
    dist = squareform(pdist(x.astype(np.float64), "cosine"))
    row["build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(min(len(queries), 20)):
        np.argsort(dist[i], kind="stable")[1:k + 1]
    row["row_argsort_ms"] = 1000 * (time.perf_counter() - t) / min(len(queries), 20)

    def search(q, k):
        d = cdist(q.astype(np.float64), x, "cosine")
        idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        return None, idx

    row["query_ms"], _ = query_latency(search, queries[:20], k)
    del dist
    return row


def index_bytes(index: GalleryIndex) -> int:
    """Bytes held by the index structure itself (its copy of the vectors included)."""
    return index.index_.memory_bytes()


def bench_index(backend: str, x: np.ndarray, queries: np.ndarray, k: int,
                truth: np.ndarray | None) -> dict:
    """Build a GalleryIndex and time single and batched queries."""
    before = rss_bytes()
    t = time.perf_counter()
    index = GalleryIndex(backend=backend).fit(x)
    build = time.perf_counter() - t
    grown = max(rss_bytes() - before, 0)
    n_q = len(queries) if backend != "sklearn" else min(len(queries), 10)
    latency, answers = query_latency(index.search, queries[:n_q], k)
    t = time.perf_counter()
    index.search(queries, k)
    batch = 1000 * (time.perf_counter() - t) / len(queries)
    row = {"method": backend, "n": len(x), "build_s": build,
           "memory_mb": index_bytes(index) / 2**20, "rss_growth_mb": grown / 2**20,
           "query_ms": latency, "batch_ms_per_query": batch}
    if truth is not None:
        hits = [len(set(a) & set(b)) / k for a, b in zip(answers, truth[:n_q], strict=True)]
        row["recall_at_10"] = float(np.mean(hits))
    del index
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backends", default="exact,sklearn,faiss-hnsw,faiss-ivf,hnswlib")
    parser.add_argument("--pdist-max-gib", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/bench_search.json")
    args = parser.parse_args(argv)

    installed = available_backends()
    backends = [b for b in args.backends.split(",") if b]
    skipped = [b for b in backends if b not in installed]
    backends = [b for b in backends if b in installed]
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        x = make_vectors(n, args.dim, args.seed)
        q = make_vectors(args.queries, args.dim, args.seed + 1)
        # queries near gallery items, as a second photo of a found item would be
        q = x[np.random.default_rng(args.seed).integers(0, n, len(q))] + 0.5 * q
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        print(f"N = {n}: {x.nbytes / 2**20:.0f} MiB of float32 vectors", flush=True)
        rows.append(bench_pdist(x, q, args.k, args.pdist_max_gib))
        print("  ", {k: v for k, v in rows[-1].items() if k != "n"}, flush=True)
        truth = None
        for backend in backends:
            rows.append(bench_index(backend, x, q, args.k, truth))
            if backend == "exact":
                truth = GalleryIndex().fit(x).search(q, args.k)[1]
                rows[-1]["recall_at_10"] = 1.0
            print("  ", {k: v for k, v in rows[-1].items() if k != "n"}, flush=True)
        del x
    table = pd.DataFrame(rows)
    base = table[table["method"] == "pdist"].set_index("n")
    table["memory_vs_pdist"] = [base.loc[n, "memory_mb"] / m if m else None
                                for n, m in zip(table["n"], table["memory_mb"], strict=True)]
    if "query_ms" in base:
        table["speedup_vs_pdist"] = [
            base.loc[n, "query_ms"] / ms if pd.notna(base.loc[n].get("query_ms")) else None
            for n, ms in zip(table["n"], table["query_ms"], strict=True)]
    print(table.round(3).to_string(index=False))
    result = {
        "benchmark": "bench_search",
        "machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0],
                    "memory_gib": round(total_memory_bytes() / 2**30, 1),
                    "python": platform.python_version(), "numpy": np.__version__},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "backends_not_installed": skipped,
        "baseline": "pdist: the tutorial's squareform(pdist(X, 'cosine')) full matrix",
        "target": "query_ms < 50 at n = 100000 on 2 cores",
        "rows": table.replace({np.nan: None}).to_dict(orient="records"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
