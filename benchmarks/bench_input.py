"""Training-input throughput: the ``tf.data`` pipeline vs an ``ImageDataGenerator`` loader.

Both read the same image files and produce the same batches (float32 RGB, ``image_size`` square,
``batch_size`` images): the baseline is Keras's legacy ``ImageDataGenerator.flow_from_dataframe``
(the tutorial's loader; Keras 3 keeps it under ``keras.src.legacy``), the contender is
:func:`lfhelpers.models.features.make_dataset` (parallel decode and resize, in-memory cache,
prefetch). Each loader is run for ``--epochs`` passes over the files, without and with random
augmentation (the tutorial's ranges: Keras preprocessing layers for ``tf.data``, the generator's
own transforms for the baseline). No model is trained: this measures the input side only.

Usage::

    python benchmarks/bench_input.py --data data/clean/lostnet --n 512 \\
        --out benchmarks/results/bench_input.json

Prints one line per loader and scenario and the speed-up ratios; writes the same figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


def list_images(data: Path, n: int, seed: int) -> pd.DataFrame:
    """Up to ``n`` images of a class-folder set (or a clean folder), spread over the classes."""
    rows = [{"file": str(p), "label": p.parent.name} for p in sorted(data.glob("*/*"))
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.parent.name.startswith(("_", "."))]
    if not rows:
        sys.exit(f"No images in class sub-folders of {data}.")
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed)
    df = df.groupby("label", group_keys=False).head(int(np.ceil(n / df["label"].nunique())))
    return df.head(n).reset_index(drop=True)


def time_tfdata(files: list[str], size: int, batch: int, epochs: int, augment: bool,
                seed: int) -> list[float]:
    """Seconds per epoch of :func:`lfhelpers.models.features.make_dataset`."""
    from lfhelpers.augment import keras_augmentation
    from lfhelpers.models.xception import make_dataset

    labels = np.eye(2, dtype=np.float32)[np.arange(len(files)) % 2]
    ds = make_dataset(files, labels, image_size=size, batch_size=batch, shuffle=True, seed=seed,
                      augment=keras_augmentation(seed=seed) if augment else None, cache=True)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, _y in ds:
            x.numpy()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_generator(frame: pd.DataFrame, size: int, batch: int, epochs: int, augment: bool,
                   seed: int) -> list[float]:
    """Seconds per epoch of the legacy ``ImageDataGenerator.flow_from_dataframe``."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    kwargs = dict(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                  shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
                  fill_mode="nearest") if augment else {}
    flow = ImageDataGenerator(**kwargs).flow_from_dataframe(
        frame, x_col="file", y_col="label", target_size=(size, size), batch_size=batch,
        class_mode="categorical", shuffle=True, seed=seed, interpolation="bilinear")
    steps = len(flow)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(steps):
            flow[i]
        flow.on_epoch_end()
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mirror = os.environ.get("LF_DATA_MIRROR")
    parser.add_argument("--data", default=str(Path(mirror) / "lostnet") if mirror else None,
                        help="class-folder image set (default: $LF_DATA_MIRROR/lostnet)")
    parser.add_argument("--n", type=int, default=512, help="images to read (default 512)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="passes over the files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/bench_input.json")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("give --data (or set LF_DATA_MIRROR)")

    frame = list_images(Path(args.data), args.n, args.seed)
    files = list(frame["file"])
    n = len(files)
    print(f"{n} images from {args.data}, {args.image_size} px, batch {args.batch_size}, "
          f"{args.epochs} epochs, {os.cpu_count()} CPUs")
    results: dict[str, dict] = {}
    for scenario, augment in (("plain", False), ("augmented", True)):
        for loader, fn, data in (("ImageDataGenerator", time_generator, frame),
                                 ("tf.data", time_tfdata, files)):
            seconds = fn(data, args.image_size, args.batch_size, args.epochs, augment, args.seed)
            entry = {"seconds_per_epoch": [round(s, 3) for s in seconds],
                     "images_per_second_first_epoch": round(n / seconds[0], 1),
                     "images_per_second_later_epochs": round(
                         n * max(len(seconds) - 1, 1) / max(sum(seconds[1:]), 1e-9), 1)
                     if len(seconds) > 1 else None,
                     "images_per_second_overall": round(n * len(seconds) / sum(seconds), 1)}
            results[f"{scenario}/{loader}"] = entry
            print(f"{scenario:9s} {loader:18s} overall {entry['images_per_second_overall']:8.1f} "
                  f"img/s  (first epoch {entry['images_per_second_first_epoch']:.1f}, later "
                  f"{entry['images_per_second_later_epochs']})")
    ratios = {scenario: round(results[f"{scenario}/tf.data"]["images_per_second_overall"]
                              / results[f"{scenario}/ImageDataGenerator"][
                                  "images_per_second_overall"], 2)
              for scenario in ("plain", "augmented")}
    for scenario, ratio in ratios.items():
        print(f"speed-up of tf.data over ImageDataGenerator ({scenario}): {ratio}x")
    report = {"benchmark": "bench_input", "images": n, "image_size": args.image_size,
              "batch_size": args.batch_size, "epochs": args.epochs, "cpus": os.cpu_count(),
              "python": platform.python_version(), "baseline": "ImageDataGenerator",
              "results": results, "speedup_tfdata_over_baseline": ratios}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
