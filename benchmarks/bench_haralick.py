"""Haralick features: the tutorial's loop vs the project's texture defaults, on the same photos.

The tutorial read each full-size photo (about 2592×1944), turned it grey and took
``mahotas.features.haralick(gray).ravel()`` in a plain loop (44.6 s for 90 photos). This script
times that loop, exactly as written, against
:class:`lfhelpers.similarity.features.texture.HaralickFeatures` with its default options, in
one run on the same images, and compares the leave-one-out accuracy of the same classifier
(``StandardScaler`` + ``LogisticRegression``) on both feature sets.

Large photos like the tutorial's are made by upscaling data-set images to about 5 megapixels
(saved as JPEG, quality 90, into a scratch folder that is removed afterwards). The data sets
are read from ``$LF_DATA_MIRROR/<name>``; without a mirror the synthetic fixture set is used.

It also scores, on the same photos, the color histogram (:class:`ColorHistogram` defaults)
and texture + color side by side, as the book does (its ``chist`` beside the haralick
features), and the book's own combination (tutorial haralick + ``chist`` at full size).

``--data NAME=FOLDER`` adds a local set of full-size photos used as they are (no upscaling),
e.g. the book's ``SimpleImageDataset`` (buildings, scenes, text: a flat folder of
``building00.jpg`` ... or class folders). Results are merged into ``--out`` per data set, so
data sets can be measured in separate runs.

Usage::

    python benchmarks/bench_haralick.py --out benchmarks/results/haralick.json
    python benchmarks/bench_haralick.py --datasets --data simple=path/to/SimpleImageDataset \
        --out benchmarks/results/haralick.json
    python benchmarks/bench_haralick.py --datasets lostnet --per-class 10 --n-jobs 2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import mahotas as mh
import numpy as np
from PIL import Image
from scipy.stats import binomtest

from lfhelpers.data.fixtures import make_synthetic_dataset
from lfhelpers.fsutil import write_json
from lfhelpers.similarity.evaluation.texture import evaluate, labelled_files
from lfhelpers.similarity.features.color import BOOK_SETTINGS, ColorHistogram
from lfhelpers.similarity.features.texture import HaralickFeatures

log = logging.getLogger("bench_haralick")

#: The tutorial's photo size (pixels); upscaled copies get about this many pixels.
TUTORIAL_PIXELS = 2592 * 1944
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def source_folder(name: str, scratch: Path, per_class: int, seed: int) -> tuple[str, Path]:
    """Folder of class sub-folders for ``name``: the mirror's copy, or the synthetic fixture."""
    mirror = os.environ.get("LF_DATA_MIRROR")
    if mirror and (Path(mirror) / name).is_dir():
        return name, Path(mirror) / name
    log.warning("LF_DATA_MIRROR/%s not found: using the synthetic fixture set instead.", name)
    folder = scratch / "synthetic-source"
    if not folder.exists():
        make_synthetic_dataset(folder, n_per_class=per_class, size=300, seed=seed)
    return "synthetic", folder


def large_photos(src: Path, dest: Path, per_class: int, seed: int,
                 pixels: int = TUTORIAL_PIXELS) -> tuple[list[str], list[str]]:
    """Upscale ``per_class`` images of each class (seeded pick) to about ``pixels`` pixels."""
    rng = np.random.default_rng(seed)
    files, labels = [], []
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(names) < 2:
            continue
        picked = sorted(rng.choice(len(names), min(per_class, len(names)), replace=False))
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        for i in picked:
            target = dest / folder.name / (Path(names[i]).stem + ".jpg")
            with Image.open(folder / names[i]) as im:
                im = im.convert("RGB")  # the tutorial's rgb2gray needs 3 channels
                scale = math.sqrt(pixels / (im.width * im.height))
                size = (round(im.width * scale), round(im.height * scale))
                im.resize(size, Image.Resampling.BICUBIC).save(target, quality=90)
            files.append(str(target))
            labels.append(folder.name)
    return files, labels


def tutorial_loop(images: list[str]) -> np.ndarray:
    """The tutorial's feature extraction, as written (plain loop, full size, 256 levels)."""
    features = []
    for im in images:
        im = mh.imread(im)
        im = mh.colors.rgb2gray(im, dtype=np.uint8)
        features.append(mh.features.haralick(im).ravel())
    return np.array(features)


def measure(name: str, extract, files: list[str], labels: list[str], seed: int,
            n_jobs: int) -> tuple[dict, np.ndarray]:
    """Time ``extract(files)`` once and score its features by LOOCV and 5-fold CV.

    Returns the figures and, per photo, whether its leave-one-out prediction was right.
    """
    start = time.perf_counter()
    features = extract(files)
    seconds = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate(features, labels, seed=seed, n_jobs=n_jobs)
    row = {"seconds": round(seconds, 3), "images_per_second": round(len(files) / seconds, 3),
           "seconds_per_image": round(seconds / len(files), 4),
           "n_features": int(features.shape[1]),
           "loocv_accuracy": round(result.loocv_accuracy, 4),
           "cv5_accuracy": round(result.cv_accuracy, 4)}
    print(f"  {name:<24} {row['seconds']:>9.1f} {row['images_per_second']:>9.2f} "
          f"{row['seconds_per_image']:>9.3f} {row['loocv_accuracy']:>7.3f} "
          f"{row['cv5_accuracy']:>7.3f}", flush=True)
    return row, result.loocv_predictions == np.asarray(labels)


def run_dataset(name: str, scratch: Path, args: argparse.Namespace,
                folder: Path | None = None) -> dict:
    """Benchmark one data set (upscaled copies, or ``folder`` as it is); return its figures."""
    if folder is None:
        used, src = source_folder(name, scratch, args.per_class, args.seed)
        files, labels = large_photos(src, scratch / f"large-{name}", args.per_class, args.seed)
    else:
        used, src = name, folder
        table = labelled_files(folder)
        files, labels = table["file"].tolist(), table["label"].tolist()
    with Image.open(files[0]) as im:
        size = f"{im.width}x{im.height}"
    print(f"\n{used}: {len(files)} photos, {len(set(labels))} classes, {size} pixels "
          f"from {src.name}/")
    print(f"  {'method':<24} {'seconds':>9} {'images/s':>9} {'s/image':>9} {'LOOCV':>7} "
          f"{'5-fold':>7}")
    defaults = HaralickFeatures(n_jobs=args.n_jobs, progress=False)
    single = HaralickFeatures(n_jobs=1, progress=False)
    rows, right = {}, {}
    rows["tutorial"], right["tutorial"] = measure("tutorial loop", tutorial_loop, files, labels,
                                                  args.seed, args.n_jobs)
    rows["defaults"], right["defaults"] = measure(f"defaults, {args.n_jobs} workers",
                                                  defaults.transform, files, labels, args.seed,
                                                  args.n_jobs)
    rows["defaults_1_worker"], _ = measure("defaults, 1 worker", single.transform, files,
                                           labels, args.seed, args.n_jobs)
    color = ColorHistogram(n_jobs=args.n_jobs, progress=False)
    rows["color"], _ = measure("color histogram", color.transform, files, labels, args.seed,
                               args.n_jobs)
    rows["texture_color"], _ = measure(
        "defaults + color", lambda f: np.hstack([defaults.transform(f), color.transform(f)]),
        files, labels, args.seed, args.n_jobs)
    book = ColorHistogram(**BOOK_SETTINGS, n_jobs=args.n_jobs, progress=False)
    rows["book_tutorial_chist"], _ = measure(
        "book: tutorial + chist", lambda f: np.hstack([tutorial_loop(f), book.transform(f)]),
        files, labels, args.seed, args.n_jobs)
    speedup = rows["tutorial"]["seconds"] / rows["defaults"]["seconds"]
    delta = rows["defaults"]["loocv_accuracy"] - rows["tutorial"]["loocv_accuracy"]
    # paired comparison of the two LOOCV runs on the same photos (exact McNemar test)
    only_defaults = int(np.sum(right["defaults"] & ~right["tutorial"]))
    only_tutorial = int(np.sum(right["tutorial"] & ~right["defaults"]))
    discordant = only_defaults + only_tutorial
    p_value = binomtest(only_defaults, discordant).pvalue if discordant else 1.0
    print(f"  speed-up (tutorial s / defaults s): {speedup:.1f}x "
          f"(1 worker: {rows['tutorial']['seconds'] / rows['defaults_1_worker']['seconds']:.1f}x)"
          f"; LOOCV accuracy defaults - tutorial: {delta:+.3f}")
    print(f"  photos right only with the defaults: {only_defaults}, only with the tutorial's: "
          f"{only_tutorial} (McNemar exact p = {p_value:.3f})")
    return {"source": used, "images": len(files), "classes": len(set(labels)),
            "photo_size": size, **rows,
            "loocv_right_only_defaults": only_defaults,
            "loocv_right_only_tutorial": only_tutorial,
            "mcnemar_p": round(float(p_value), 4),
            "speedup": round(speedup, 2),
            "speedup_1_worker": round(rows["tutorial"]["seconds"]
                                      / rows["defaults_1_worker"]["seconds"], 2),
            "loocv_delta": round(delta, 4),
            "targets_met": {"speedup_at_least_10x": speedup >= 10, "loocv_not_lower": delta >= 0,
                            "texture_color_at_least_0.95":
                                rows["texture_color"]["loocv_accuracy"] >= 0.95}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=["lostnet", "caltech101_5"],
                        help="mirror data sets, upscaled to the tutorial's photo size")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=FOLDER",
                        help="a local set of full-size photos, used as it is (repeatable)")
    parser.add_argument("--per-class", type=int, default=60, help="photos per class")
    parser.add_argument("--n-jobs", type=int, default=2, help="workers for the defaults")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the upscaled photos here (default: a removed temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    scratch = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_haralick-"))
    scratch.mkdir(parents=True, exist_ok=True)
    defaults = HaralickFeatures().get_params()
    print(f"tutorial: mahotas {mh.__version__} haralick(gray).ravel(), full size, plain loop")
    print(f"defaults: {({k: v for k, v in defaults.items() if k not in ('progress',)})}, "
          f"n_jobs={args.n_jobs}; {os.cpu_count()} CPUs")
    try:
        results = {name: run_dataset(name, scratch, args) for name in args.datasets}
        for spec in args.data:
            name, _, folder = spec.partition("=")
            results[name] = run_dataset(name, scratch, args, Path(folder))
    finally:
        if args.work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    report = {
        "benchmark": "haralick: tutorial loop vs lfhelpers texture defaults, color, both",
        "baseline": "tutorial: mahotas.imread -> rgb2gray(uint8) -> haralick(gray).ravel(), "
                    "full size, one process",
        "classifier": "StandardScaler + LogisticRegression "
                      "(lfhelpers.similarity.evaluation.texture.make_classifier)",
        "defaults": {k: v for k, v in defaults.items() if k not in ("progress", "cache_dir")},
        "n_jobs": args.n_jobs, "per_class": args.per_class, "seed": args.seed,
        "cpus": os.cpu_count(), "python": sys.version.split()[0], "mahotas": mh.__version__,
        "datasets": results,
    }
    if args.out:
        if args.out.exists():  # keep the other data sets' figures
            report["datasets"] = {**json.loads(args.out.read_text()).get("datasets", {}),
                                  **results}
        write_json(args.out, report)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
