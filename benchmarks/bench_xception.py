"""Notebook 03 (Xception classifier, ``cpu`` profile) in yardstick units, with its accuracy.

In one run, on one machine:

(a) the yardstick: plain Keras ``keras.applications.Xception(include_top=False, weights=FILE)``
    inference at 224 px, batch 32, images per second after a warm-up batch (measured before and
    after (b); the mean is used, since other work on the machine changes both);
(b) notebook 03 under the ``cpu`` profile from an empty cache (a fresh run folder), with
    papermill, on a clean LostNet set made by ``python -m lfhelpers clean`` from the mirror and
    notebook 02's augmented set (both made first, untimed, in a temporary folder, or reused with
    ``--work``).

The figure is (b)'s seconds times the yardstick's images per second: how many plain-Keras
Xception passes the notebook costs, so that machines of different speed compare.

Usage::

    LF_DATA_MIRROR=... LF_XCEPTION_WEIGHTS=... python benchmarks/bench_xception.py \\
        [--work DIR] [-p name=value ...] [--out benchmarks/results/xception.json]

Prints the figures and writes them as JSON with the CPU flags and the test top-1 / top-3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The issue's baseline: the old notebook 03 on an AVX2 machine.
BASELINE = {"seconds": 2318, "yardstick_images_per_second": 5.5, "units": 12700,
            "test_top1": 0.946, "test_top3": 0.994}
TARGET_UNITS = 4200


def yardstick(weights: str, seconds: float = 60.0, size: int = 224, batch: int = 32) -> float:
    """Images per second of plain Keras Xception inference (after one warm-up batch).

    One batch is predicted again and again for ``seconds`` (at least four times) and the rate
    is taken over all of them: on a shared virtual machine TensorFlow's speed switches from one
    call to the next (here between about 12 and 21 images/s, sometimes 6, for the same batch),
    so a few calls measure the state of the moment, not the machine. The spread of the calls is
    printed.
    """
    code = f"""
import os, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras
m = keras.applications.Xception(include_top=False, weights={weights!r},
                                input_shape=({size}, {size}, 3))
x = np.random.default_rng(0).uniform(-1, 1, ({batch}, {size}, {size}, 3)).astype("float32")
m.predict(x, batch_size={batch}, verbose=0)
calls = []
start = time.perf_counter()
while len(calls) < 4 or time.perf_counter() - start < {seconds}:
    t = time.perf_counter()
    m.predict(x, batch_size={batch}, verbose=0)
    calls.append({batch} / (time.perf_counter() - t))
rate = {batch} * len(calls) / (time.perf_counter() - start)
print(len(calls), min(calls), float(np.median(calls)), max(calls))
print(rate)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    *_, spread, rate = done.stdout.strip().splitlines()
    n, low, median, high = spread.split()
    print(f"yardstick: {float(rate):.2f} images/s over {n} calls of {batch} images "
          f"(per call: min {float(low):.1f}, median {float(median):.1f}, "
          f"max {float(high):.1f})", flush=True)
    return float(rate)


def write_results(result: dict, out: str | Path) -> None:
    """Write a benchmark's figures as JSON (folders made) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("written:", out)


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix extensions that matter for inference speed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))


def prepare(work: Path, mirror: Path) -> tuple[Path, Path]:
    """A clean LostNet set (``lfhelpers clean``) and notebook 02's augmented set, in ``work``."""
    from lfhelpers.pipeline import run_pipeline

    clean = work / "data" / "clean" / "lostnet"
    aug = work / "data" / "augmented" / "lostnet"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not (clean / "manifest.csv").is_file():
        subprocess.run([sys.executable, "-m", "lfhelpers", "clean", str(mirror / "lostnet"),
                        "--out", str(clean), "--jobs", "2"], check=True, env=env)
    if not (aug / "manifest.csv").is_file():
        run_pipeline("cpu", only="02", overrides={"data_dir": str(clean), "aug_dir": str(aug)},
                     out_dir=work / "run02", html=False)
    return clean, aug


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder for the data sets (default: a temporary one)")
    parser.add_argument("-p", dest="params", action="append", default=[],
                        help="extra notebook parameter name=value (e.g. engine=keras)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "xception.json"))
    args = parser.parse_args(argv)
    from lfhelpers.models.backbones import resolve_weights
    from lfhelpers.pipeline import parse_overrides, run_pipeline

    mirror = os.environ.get("LF_DATA_MIRROR", "").strip()
    weights = resolve_weights("xception", "auto")
    if not mirror or weights in (None, "imagenet"):
        sys.exit("Needs LF_DATA_MIRROR (with lostnet) and a local Xception weights file "
                 "(LF_XCEPTION_WEIGHTS).")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        clean, aug = prepare(work, Path(mirror))
        before = yardstick(weights)
        print(f"yardstick before: {before:.2f} images/s", flush=True)
        run_dir = work / f"run03-{time.strftime('%Y%m%d-%H%M%S')}"  # empty: nothing cached
        overrides = {"data_dir": str(clean), "aug_dir": str(aug),
                     "models_dir": str(run_dir / "models"), **parse_overrides(args.params)}
        start = time.perf_counter()
        run_pipeline("cpu", only="03", overrides=overrides, out_dir=run_dir, html=False)
        seconds = time.perf_counter() - start
        after = yardstick(weights)
        print(f"yardstick after: {after:.2f} images/s", flush=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())["03_xception_finetune"]
    ips = (before + after) / 2
    result = {
        "notebook": "03_xception_finetune", "profile": "cpu", "overrides": args.params,
        "seconds": round(seconds, 1), "yardstick_images_per_second": round(ips, 3),
        "yardstick_before": round(before, 3), "yardstick_after": round(after, 3),
        "units": round(seconds * ips), "target_units": TARGET_UNITS,
        "test_top1": metrics["test_top1"], "test_top3": metrics["test_top3"],
        "paper_protocol_top1": metrics.get("paper_protocol_top1"),
        "trunk_seconds": metrics.get("trunk_seconds"), "train_seconds": metrics["train_seconds"],
        "notebook_seconds": metrics.get("notebook_seconds"), "engine": metrics.get("engine"),
        "baseline": BASELINE, "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2), "machine": platform.machine(),
        "python": platform.python_version(),
    }
    print(f"notebook 03 (cpu profile, empty cache): {seconds:.0f} s x {ips:.2f} images/s = "
          f"{result['units']} units (target {TARGET_UNITS}, baseline {BASELINE['units']}); "
          f"test top-1 {result['test_top1']:.4f}, top-3 {result['test_top3']:.4f}")
    write_results(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
