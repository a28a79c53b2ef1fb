"""Augmentation throughput: lfhelpers.augment vs a sequential PIL loop vs ImageDataGenerator.

Each method reads the same originals and writes ``--copies`` randomly transformed JPEG copies of
each (rotation 40 degrees, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip: the tutorial's
settings), so the figure is output images per second including decoding and encoding:

* ``lfhelpers``: :func:`lfhelpers.augment.augment_sources` (OpenCV warp, joblib workers), with
  all cores and with one; it also hashes each file (SHA-256 and perceptual hash) for its
  manifest rows, which the other two do not;
* ``pil_sequential``: a plain loop that draws the same transforms and applies them with
  ``PIL.Image.transform`` (no edge replication in PIL: the border is filled with black);
* ``imagedatagenerator``: Keras's legacy ``ImageDataGenerator.flow(..., save_to_dir=...)``, one
  image at a time as in the tutorial, when a legacy import works (``tf.keras``/``keras``);
  otherwise reported as not available.

Usage::

    python benchmarks/bench_augment.py [--data CLASS_FOLDER_DIR] [--n-images 200] [--copies 3]
        [--repeat 3] [--out benchmarks/results/bench_augment.json]

Without ``--data`` a synthetic set of 300x300 images (the size of most LostNet photos) is drawn
into a temporary folder. Each method gets one small untimed warm-up run first; then the methods
are timed in turn ``--repeat`` times and the best run of each is kept (the machine's 1-minute
load average is recorded: other work on the machine slows every method).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lfhelpers.augment import AugmentParams, augment_sources, image_rng, random_transform
from lfhelpers.data.fixtures import make_synthetic_dataset
from lfhelpers.fsutil import write_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def list_images(root: Path, n_images: int, seed: int) -> pd.DataFrame:
    """Pick ``n_images`` images of a class-folder tree, spread over its classes (seeded)."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts))
    if not files:
        sys.exit(f"No images under {root}.")
    pick = np.random.default_rng(seed).permutation(len(files))[:n_images]
    rows = [{"path": files[i].relative_to(root).as_posix(), "label": files[i].parent.name,
             "file": str(files[i])} for i in sorted(pick)]
    return pd.DataFrame(rows)


def run_lfhelpers(images: pd.DataFrame, out: Path, copies: int, params: AugmentParams,
                  n_jobs: int) -> int:
    """The module under test; returns the number of files written."""
    rows, _ = augment_sources(images.assign(n_copies=copies), out, params, seed=0,
                              n_jobs=n_jobs, progress=False)
    return len(rows)


def run_pil(images: pd.DataFrame, out: Path, copies: int, params: AugmentParams) -> int:
    """A plain sequential PIL loop with the same random transforms."""
    written = 0
    for row in images.itertuples(index=False):
        with Image.open(row.file) as im:
            img = im.convert("RGB")
        folder = out / row.label
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            matrix, flip = random_transform((img.height, img.width), image_rng(0, row.path, k),
                                            params)
            new = img.transform(img.size, Image.Transform.AFFINE, data=tuple(matrix.ravel()),
                                resample=Image.Resampling.BILINEAR)
            if flip:
                new = new.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            new.save(folder / f"{Path(row.path).stem}_aug{k}.jpg", "JPEG", quality=95)
            written += 1
    return written


def legacy_generator() -> tuple[type | None, str]:
    """Import Keras's legacy ImageDataGenerator; return (class or None, where or why not)."""
    errors = []
    for where in ("tensorflow.keras.preprocessing.image", "keras.preprocessing.image",
                  "tf_keras.preprocessing.image"):
        try:
            module = __import__(where, fromlist=["ImageDataGenerator"])
            return module.ImageDataGenerator, where
        except (ImportError, AttributeError) as exc:
            errors.append(f"{where}: {type(exc).__name__}")
    return None, "not available (" + "; ".join(errors) + ")"


def run_idg(generator_class: type, images: pd.DataFrame, out: Path, copies: int,
            params: AugmentParams) -> int:
    """The tutorial's way: one image at a time through ImageDataGenerator.flow(save_to_dir)."""
    datagen = generator_class(**asdict(params))
    np.random.seed(0)
    written = 0
    for row in images.itertuples(index=False):
        with Image.open(row.file) as im:
            x = np.asarray(im.convert("RGB"), dtype="float32")[None]
        folder = out / row.label
        folder.mkdir(parents=True, exist_ok=True)
        flow = datagen.flow(x, batch_size=1, save_to_dir=str(folder),
                            save_prefix=Path(row.path).stem, save_format="jpeg")
        for _ in range(copies):
            next(flow)
            written += 1
    return written


def time_once(fn: Callable[[Path], int]) -> tuple[int, float]:
    """Run ``fn`` in a fresh temporary folder; return (files written, seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        n = fn(Path(tmp))
        return n, time.perf_counter() - start


def run_all(methods: dict[str, tuple[Callable, Callable]], repeat: int) -> dict[str, dict]:
    """Warm each method up once, then time them in turn ``repeat`` times; keep the best run.

    Interleaving the methods gives each the same share of a busy machine's noise.
    """
    for _, warmup in methods.values():
        time_once(warmup)
    best: dict[str, tuple[int, float]] = {}
    for _ in range(repeat):
        for name, (fn, _) in methods.items():
            n, seconds = time_once(fn)
            if name not in best or seconds < best[name][1]:
                best[name] = (n, seconds)
    results = {}
    for name, (n, seconds) in best.items():
        results[name] = {"images": n, "seconds": round(seconds, 3),
                         "images_per_s": round(n / seconds, 1)}
        print(f"{name:28s} {n:6d} images  {seconds:8.2f} s  {n / seconds:9.1f} images/s")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run every method on the same images and print/write the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder of class sub-folders (default: synthetic 300 px)")
    parser.add_argument("--n-images", type=int, default=200, help="originals to augment")
    parser.add_argument("--copies", type=int, default=3, help="augmented copies per original")
    parser.add_argument("--n-jobs", type=int, default=-1, help="workers of lfhelpers")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method (best kept)")
    parser.add_argument("--out", default="benchmarks/results/bench_augment.json")
    args = parser.parse_args(argv)

    params = AugmentParams()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            root, data_name = Path(args.data), Path(args.data).name
        else:
            root, data_name = Path(tmp) / "synthetic", "synthetic 300x300"
            make_synthetic_dataset(root, n_per_class=-(-args.n_images // 4), size=300, seed=0)
        images = list_images(root, args.n_images, seed=0)
        small = images.head(4)
        print(f"{len(images)} originals from {data_name}, {args.copies} copies each, "
              f"{os.cpu_count()} CPUs")
        ours = f"lfhelpers n_jobs={args.n_jobs}"
        todo: dict[str, tuple[Callable, Callable]] = {
            ours: (lambda d: run_lfhelpers(images, d, args.copies, params, args.n_jobs),
                   lambda d: run_lfhelpers(small, d, 1, params, args.n_jobs)),
            "lfhelpers n_jobs=1": (lambda d: run_lfhelpers(images, d, args.copies, params, 1),
                                   lambda d: run_lfhelpers(small, d, 1, params, 1)),
            "pil_sequential": (lambda d: run_pil(images, d, args.copies, params),
                               lambda d: run_pil(small, d, 1, params)),
        }
        generator_class, where = legacy_generator()
        if generator_class is not None:
            todo["imagedatagenerator"] = (
                lambda d: run_idg(generator_class, images, d, args.copies, params),
                lambda d: run_idg(generator_class, small, d, 1, params))
        methods: dict[str, dict | str] = dict(run_all(todo, args.repeat))
        if generator_class is None:
            methods["imagedatagenerator"] = where
            print(f"{'imagedatagenerator':28s} {where}")
        else:
            methods["imagedatagenerator"] = {"import": where, **methods["imagedatagenerator"]}

    rates = {k: v["images_per_s"] for k, v in methods.items() if isinstance(v, dict)}
    ratios = {}
    for ours in (f"lfhelpers n_jobs={args.n_jobs}", "lfhelpers n_jobs=1"):
        for base in ("pil_sequential", "imagedatagenerator"):
            if base in rates:
                ratios[f"{ours} / {base}"] = round(rates[ours] / rates[base], 2)
    print("\nspeed-up (images/s ratio):")
    for name, value in ratios.items():
        print(f"  {name:45s} {value:6.2f}x")
    write_json(args.out, {
        "benchmark": "augmentation throughput (output JPEG images per second)",
        "data": data_name, "originals": len(images), "copies": args.copies,
        "transforms": asdict(params), "repeat": args.repeat, "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2), "python": platform.python_version(),
        "methods": methods, "ratios": ratios})
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
