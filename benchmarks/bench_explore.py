"""How fast the explorer (notebook 07) answers: a new query, a slider, an upload.

What is timed is the widget callback itself (:class:`lfhelpers.explore.app.MatchPanel`, no
browser): for a query change, the query card plus the matcher plus the result cards with their
thumbnails; for a slider or toggle change, the matcher plus the result cards; for an upload, the
checks, one forward pass, the palette, the matcher and the cards. Loading (embeddings from the
cache, predictions, palettes, index) is timed once.

Data: the real lostnet outputs when they exist (``data/clean/lostnet``,
``models/xception_lostnet.keras``, ``models/color_names.joblib``); else a finished smoke run
(``--smoke-run`` or ``LF_SMOKE_RUN``). ``--gallery-size`` pads a smaller gallery with noisy
copies of its own vectors (pointing at its own photos) up to that many found items, so that the
matcher works at the lostnet gallery's size (3,159 train+val photos of 3,949); the output says
whether it did.

Yardstick: one float32 matrix product (1024 x 2048 by 2048 x 1024), timed in the same run;
latencies are also given as multiples of it.

Usage::

    python benchmarks/bench_explore.py [--smoke-run DIR] [--gallery-size 3159] [--repeats 30]
        [--out benchmarks/results/bench_explore.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lfhelpers import explore
from lfhelpers.explore import sources
from lfhelpers.explore.app import MatchPanel
from lfhelpers.explore.inputs import check_upload
from lfhelpers.fsutil import write_json
from lfhelpers.paths import project_path

REAL = {"data_dir": "data/clean/lostnet", "classifier_model": "models/xception_lostnet.keras",
        "color_model": "models/color_names.joblib", "cache_dir": "data/cache"}


def yardstick(repeats: int = 20) -> float:
    """Median seconds of one 1024x2048 @ 2048x1024 float32 matrix product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 2048), dtype=np.float32)
    b = rng.standard_normal((2048, 1024), dtype=np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def choose_inputs(smoke_run: str) -> tuple[str, dict]:
    """``("lostnet", params)`` when the real outputs exist, else the smoke run's."""
    if all(project_path(REAL[k]).exists() for k in ("data_dir", "classifier_model")):
        return "lostnet", dict(REAL)
    if not smoke_run:
        sys.exit("No lostnet outputs (run `make demo`) and no smoke run: pass --smoke-run DIR "
                 "(python -m lfhelpers run --profile smoke --out DIR).")
    run = Path(smoke_run)
    return f"smoke fixture ({run.name})", {
        "data_dir": str(run / "data" / "clean"),
        "classifier_model": str(run / "models" / "xception_smoke.keras"),
        "color_model": str(run / "models" / "color_names.joblib"),
        "cache_dir": str(run / "cache")}


def pad_gallery(ex: explore.Explorer, size: int, seed: int = 0) -> int:
    """Grow the found-items index to ``size`` with noisy copies; returns the real size."""
    real = len(ex.gallery)
    if size <= real:
        return real
    rng = np.random.default_rng(seed)
    paths = list(ex.gallery["file"])
    labels = list(ex.gallery["label"])
    base = np.stack([ex.vectors[f] for f in paths])
    pick = rng.integers(0, real, size - real)
    noisy = base[pick] + rng.normal(0, 0.05, (len(pick), base.shape[1])).astype(np.float32)
    vectors = np.vstack([base, sources.l2_normalize(noisy)])
    ex.index = sources.gallery_index(vectors, paths + [paths[i] for i in pick],
                                     labels + [labels[i] for i in pick])
    return real


def timed(fn, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def summary(times: list[float], unit: float) -> dict:
    ordered = sorted(times)
    return {"median_s": round(statistics.median(ordered), 4),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4),
            "max_s": round(ordered[-1], 4), "n": len(ordered),
            "median_in_yardsticks": round(statistics.median(ordered) / unit, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke-run", default=os.environ.get("LF_SMOKE_RUN", ""))
    parser.add_argument("--gallery-size", type=int, default=3159)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results/bench_explore.json")
    args = parser.parse_args(argv)

    unit = yardstick()
    data, params = choose_inputs(args.smoke_run)
    view = explore.open_explorer(params["data_dir"], classifier_model=params["classifier_model"],
                                 color_model=params["color_model"],
                                 cache_dir=params["cache_dir"])
    if view.explorer is None or not view.explorer.ready:
        sys.exit(f"The explorer did not load: {view.problem or view.explorer.missing}")
    ex = view.explorer
    real = pad_gallery(ex, args.gallery_size)
    panel = MatchPanel(ex, explore.MatchSettings())
    options = [value for _, value in panel.picker.options]

    cold = timed(lambda i: setattr(panel.picker, "value", options[(i + 1) % len(options)]),
                 min(args.repeats, len(options)))
    query = timed(lambda i: setattr(panel.picker, "value", options[i % len(options)]),
                  args.repeats)
    weights = [0.0, 0.25, 0.5, 1.0, 1.5]
    slider = timed(lambda i: setattr(panel.w_category, "value", weights[i % len(weights)]),
                   args.repeats)
    k_values = [3, 6, 10, 20]
    k = timed(lambda i: setattr(panel.k, "value", k_values[i % len(k_values)]), args.repeats)
    modes = ["filter", "rerank"]
    mode = timed(lambda i: setattr(panel.category_mode, "value", modes[i % 2]), args.repeats)
    photo = Path(options[0]).read_bytes()

    def upload(i: int) -> None:
        panel.upload = check_upload(photo, f"upload-{i}.jpg")
        panel.current = ex.upload_query(panel.upload)
        panel.refresh()

    uploads = timed(upload, max(3, args.repeats // 5))
    errors = panel.status.value
    result = {
        "data": data, "gallery_real": real, "gallery_indexed": len(ex.index.paths_),
        "queries": len(ex.queries), "vector_dim": int(ex.index.vectors_.shape[1]),
        "load_seconds": round(view.load_seconds, 2), "load_timings": ex.timings,
        "yardstick_matmul_s": round(unit, 5),
        "query_change_first_time": summary(cold, unit),
        "query_change": summary(query, unit), "slider_change": summary(slider, unit),
        "k_change": summary(k, unit), "mode_toggle": summary(mode, unit),
        "upload": summary(uploads, unit),
        "callback_errors": errors,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
    }
    padded = (f", padded to {len(ex.index.paths_)} found items with noisy copies"
              if len(ex.index.paths_) > real else "")
    print(f"data: {data}; gallery {real}{padded}; {len(ex.queries)} queries; "
          f"{result['vector_dim']}-d vectors; load {view.load_seconds:.1f} s")
    print(f"yardstick (1024x2048 @ 2048x1024 float32): {unit * 1000:.2f} ms")
    for name in ("query_change_first_time", "query_change", "slider_change", "k_change",
                 "mode_toggle", "upload"):
        s = result[name]
        print(f"{name:24s} median {s['median_s'] * 1000:7.1f} ms  p95 {s['p95_s'] * 1000:7.1f} "
              f"ms  max {s['max_s'] * 1000:7.1f} ms  ({s['median_in_yardsticks']} yardsticks)")
    write_json(project_path(args.out), result)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
