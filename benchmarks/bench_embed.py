"""Embedding throughput: the in-process loop vs Dask with 1 and 2 worker processes.

The same photos (``--per-class`` of each class of ``--data``, a clean set or class folders,
default the lostnet mirror) are embedded by :func:`lfhelpers.similarity.batch.shards.embed_folder`
three ways, each into a fresh shard folder: in this process (no Dask), on a local Dask cluster
of 1 worker process and of 2 worker processes (``--scheduler local:N``). Reported: photos per
second (model building included, cluster start-up reported apart), the overhead of the Dask
path at 1 worker against the in-process loop (goal < 10 %), the speed-up at 2 workers, and
that the vectors agree. The backbone is ``--backbone`` (MobileNet alpha 0.25 by default, whose
weights file is small; with a cheap model the fixed costs of Dask weigh the most, so the
overhead measured is an upper bound for Xception).

Usage::

    python benchmarks/bench_embed.py [--data DIR] [--per-class 24] [--backbone mobilenet]
        [--image-size 224] [--out benchmarks/results/embed_dask.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lfhelpers.data import list_photos
from lfhelpers.fsutil import write_json
from lfhelpers.similarity.batch.distributed import dask_client
from lfhelpers.similarity.batch.shards import embed_folder, read_embeddings
from lfhelpers.similarity.search.recipe import embedding_spec


def subset(data: Path, per_class: int, dest: Path) -> int:
    """Link ``per_class`` photos of each class into ``dest/<class>/`` (the photos stay put)."""
    photos = list_photos(data)
    picked = photos.groupby("label", sort=True).head(per_class)
    for row in picked.itertuples():
        target = dest / row.label / Path(row.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(row.path, target)
    return len(picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mirror = os.environ.get("LF_DATA_MIRROR", "")
    parser.add_argument("--data", type=Path,
                        default=Path(mirror) / "lostnet" if mirror else Path("data/raw/lostnet"))
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--weights", default="auto")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--partition-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/embed_dask.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    try:
        n = subset(args.data, args.per_class, work / "photos")
        spec = embedding_spec(args.backbone, args.weights, args.image_size)
        rows, vectors = [], {}
        for scheduler in ("", "local:1", "local:2"):
            t0 = time.perf_counter()
            with dask_client(scheduler) as client:
                startup = time.perf_counter() - t0
                if client is not None:
                    client.wait_for_workers(int(scheduler.split(":")[1]))
                    startup = time.perf_counter() - t0
                out = work / f"emb-{scheduler.replace(':', '') or 'inprocess'}"
                report = embed_folder(work / "photos", out, spec, client,
                                      partition_size=args.partition_size, progress=False)
            table, x = read_embeddings(out)
            vectors[scheduler] = x[np.argsort(table["path"].to_numpy())]
            rows.append({"scheduler": scheduler or "in-process", "photos": report.n_embedded,
                         "seconds": round(report.seconds, 2),
                         "photos_per_s": round(report.n_embedded / report.seconds, 2),
                         "cluster_startup_s": round(startup, 2),
                         "load_1min": round(os.getloadavg()[0], 2)})
            print(rows[-1], flush=True)
        base = rows[0]["photos_per_s"]
        for row in rows:
            row["speed_vs_in_process"] = round(row["photos_per_s"] / base, 3)
        overhead = 1.0 - rows[1]["photos_per_s"] / base
        agree = max(float(np.abs(vectors[""] - v).max()) for v in vectors.values())
        result = {
            "benchmark": "bench_embed",
            "data": str(args.data.name), "photos": n, "backbone": args.backbone,
            "image_size": args.image_size, "partition_size": args.partition_size,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "cpu_flags": "avx512, amx" if "amx" in Path("/proc/cpuinfo").read_text()
                        else "see /proc/cpuinfo"},
            "yardstick": "the in-process loop on the same photos, same run",
            "rows": rows,
            "dask_overhead_at_1_worker": round(overhead, 3),
            "goal": "overhead < 0.10",
            "max_abs_difference_of_vectors": agree,
        }
        write_json(args.out, result)
        print(pd.DataFrame(rows).to_string(index=False))
        print(f"overhead at 1 worker: {overhead:.1%}; vectors agree within {agree:.2g}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
